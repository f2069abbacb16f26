// Engine binding: numpy in, numpy out, GIL released around pure C++ work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bindings/py_engine.h"
#include "cpu/cpu_features.h"
#include "cpu/dispatch.h"

namespace py = pybind11;

namespace rnninfer {
namespace {

template <typename T>
T get(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw std::invalid_argument(std::string("model description lacks '") + key + "'");
  return d[key].cast<T>();
}

// The manifest's "model" section as ModelSpec.to_json_dict() writes it: the
// same keys and names as the file (rnninfer/format/manifest.py), no renaming.
ModelDesc parse_desc(const py::dict& d) {
  ModelDesc m;
  const py::dict in = get<py::dict>(d, "input");
  m.tokens = get<std::string>(in, "kind") == "tokens";
  m.vocab_size = m.tokens ? get<int>(in, "vocab_size") : 0;
  m.input_width = get<int>(in, m.tokens ? "embedding_dim" : "features");
  m.mask_zero = get<bool>(in, "mask_zero");
  const py::object mask_value = get<py::object>(in, "mask_value");
  m.has_mask_value = !mask_value.is_none();
  m.mask_value = m.has_mask_value ? mask_value.cast<float>() : 0.0f;
  for (const auto& item : get<py::list>(d, "layers")) {
    const py::dict l = item.cast<py::dict>();
    LayerDesc L;
    L.cell = parse_cell(get<std::string>(l, "cell"));
    L.units = get<int>(l, "units");
    L.direction = parse_direction(get<std::string>(l, "direction"));
    L.merge = parse_merge(get<std::string>(l, "merge"));
    L.act = parse_act(get<std::string>(l, "activation"));
    L.ract = parse_act(get<std::string>(l, "recurrent_activation"));
    L.reset_after = get<bool>(l, "reset_after");
    L.proj_size = get<int>(l, "proj_size");
    L.bias = get<bool>(l, "bias");
    const py::object residual = get<py::object>(l, "residual_from");
    L.residual_from = residual.is_none() ? kNoResidual : residual.cast<int>();
    m.layers.push_back(L);
  }
  m.readout = parse_readout(get<std::string>(d, "readout"));
  for (const auto& item : get<py::list>(d, "head")) {
    const py::dict h = item.cast<py::dict>();
    DenseDesc D;
    D.units = get<int>(h, "units");
    D.act = parse_act(get<std::string>(h, "activation"));
    D.bias = get<bool>(h, "bias");
    m.head.push_back(D);
  }
  return m;
}

}  // namespace

PyEngine::PyEngine(const py::dict& desc, const py::dict& tensors, int threads, const std::string& isa) {
  ModelDesc d = parse_desc(desc);
  // Keep the converted arrays alive until packing is done. uint16 arrays
  // are bf16 bit patterns and int8 arrays quantised weights (the Python
  // side, rnninfer.format.precision, made them); anything else is float32.
  std::vector<py::array> keep;
  TensorMap map;
  for (const auto& kv : tensors) {
    const std::string name = kv.first.cast<std::string>();
    py::array a;
    TensorView v;
    if (py::isinstance<py::array_t<uint16_t>>(kv.second)) {
      a = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>::ensure(kv.second);
      v.dtype = WType::kBf16;
    } else if (py::isinstance<py::array_t<int8_t>>(kv.second)) {
      a = py::array_t<int8_t, py::array::c_style | py::array::forcecast>::ensure(kv.second);
      v.dtype = WType::kI8;
    } else {
      a = FloatArray::ensure(kv.second);
    }
    if (!a) throw std::invalid_argument("tensor '" + name + "' is not a float, bf16 or int8 array");
    // Packing runs without the GIL, so another Python thread could write to
    // a writeable array meanwhile: those are copied first. Read-only arrays
    // (Model makes its tensors read-only) are read in place.
    if (a.writeable() && a.ptr() == kv.second.ptr())
      a = py::array(a.dtype(), std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()), a.data());
    v.data = a.data();
    for (py::ssize_t i = 0; i < a.ndim(); ++i) v.shape.push_back(a.shape(i));
    map.emplace(name, std::move(v));
    keep.push_back(std::move(a));
  }
  const KernelTable* table = isa.empty() ? nullptr : &kernels_for(isa);
  {
    // Packing and the token projection table take long (143 ms for the
    // headline model): other Python threads run meanwhile. Only `d`, `map`
    // and the arrays `keep` holds (alive until after the guard) are read.
    py::gil_scoped_release nogil;
    engine_ = std::make_unique<Engine>(std::move(d), map, threads, table);
  }
}

// One sequence as a plain list of Python ints, the commonest call: read here
// without building a numpy array. Any other form (other element types, ids
// beyond int64, an empty list) returns None and the Python side
// (rnninfer/inputs.py), which owns every input message, takes the call. Ids
// are range-checked by the engine as it reads them.
py::object PyEngine::predict_list(const py::list& seq) const {
  const py::ssize_t T = py::len(seq);
  if (T == 0 || T > std::numeric_limits<int32_t>::max()) return py::none();
  std::vector<int64_t> ids(static_cast<size_t>(T));
  for (py::ssize_t t = 0; t < T; ++t) {
    PyObject* o = PyList_GET_ITEM(seq.ptr(), t);
    if (!PyLong_CheckExact(o)) return py::none();  // bool, numpy ints, floats, ...
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0) return py::none();
    ids[static_cast<size_t>(t)] = v;
  }
  const int32_t len = static_cast<int32_t>(T);
  py::array_t<float> out = alloc_out(1, len, /*single=*/true);
  float* op = out.mutable_data();
  {
    // Pure C++ from here: no Python object is touched until the guard ends.
    py::gil_scoped_release nogil;
    engine_->predict_tokens(ids.data(), 1, len, &len, op);
  }
  return std::move(out);
}

// The one entry for everything else, in the form rnninfer/inputs.py makes:
// token ids (B, T) as int64 or features (B, T, F) as float32, valid steps
// first, and int32 lengths (B,) or None for full rows. What is checked here
// is the engine's contract (shapes; lengths and token ids are checked where
// they are read), for callers that bypass the Python side.
py::array_t<float> PyEngine::predict(const py::array& x, const py::object& lengths_obj) const {
  const ModelDesc& d = engine_->desc();
  TokenArray tokens;
  FloatArray features;
  py::array a;
  if (d.tokens) {
    a = tokens = TokenArray::ensure(x);
    if (!tokens || tokens.ndim() != 2)
      throw std::invalid_argument("tokens must be a 2-D (batch, steps) integer array");
  } else {
    a = features = FloatArray::ensure(x);
    if (!features || features.ndim() != 3 || features.shape(2) != d.input_width)
      throw std::invalid_argument("features must be a (batch, steps, " + std::to_string(d.input_width) +
                                  ") float array");
  }
  if (a.shape(0) > std::numeric_limits<int>::max() || a.shape(1) > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("input too large");
  const int B = static_cast<int>(a.shape(0)), T = static_cast<int>(a.shape(1));
  std::vector<int32_t> full;
  IntArray lengths;
  const int32_t* lp;
  if (lengths_obj.is_none()) {
    full.assign(static_cast<size_t>(B), T);
    lp = full.data();
  } else {
    lengths = IntArray::ensure(lengths_obj);
    if (!lengths) throw std::invalid_argument("lengths must be an integer array");
    check_lengths(lengths, B);
    lp = lengths.data();
  }
  py::array_t<float> out = alloc_out(B, T);
  float* op = out.mutable_data();
  {
    // Pure C++ from here: no Python object is touched until the guard ends.
    py::gil_scoped_release nogil;
    if (d.tokens)
      engine_->predict_tokens(tokens.data(), B, T, lp, op);
    else
      engine_->predict_features(features.data(), B, T, lp, op);
  }
  return out;
}

void PyEngine::check_lengths(const IntArray& lengths, int batch) {
  if (lengths.ndim() != 1 || lengths.shape(0) != batch)
    throw std::invalid_argument("lengths must have shape (" + std::to_string(batch) + ",)");
}

py::array_t<float> PyEngine::alloc_out(int B, int T, bool single) const {
  const int ow = engine_->desc().output_width();
  if (engine_->desc().readout == Readout::kSequence)
    return single ? py::array_t<float>({T, ow}) : py::array_t<float>({B, T, ow});
  return single ? py::array_t<float>(ow) : py::array_t<float>({B, ow});
}

void register_engine(py::module_& m) {
  py::class_<PyEngine>(m, "Engine")
      .def(py::init<const py::dict&, const py::dict&, int, const std::string&>(), py::arg("desc"),
           py::arg("tensors"), py::arg("threads") = 1, py::arg("isa") = "")
      .def("predict", &PyEngine::predict, py::arg("x"), py::arg("lengths") = py::none())
      .def("predict_list", &PyEngine::predict_list, py::arg("tokens"))
      .def_property_readonly("isa", [](const PyEngine& e) { return std::string(e.engine().kernels().name); })
      .def_property_readonly("recurrent_activations",
                             [](const PyEngine& e) { return std::string(e.engine().recurrent_activations()); })
      .def_property_readonly("threads", [](const PyEngine& e) { return e.engine().threads(); })
      .def_property_readonly(
          "state_entries",
          [](const PyEngine& e) {
            py::list out;
            for (const StateEntry& s : e.engine().state_entries()) out.append(py::make_tuple(s.name, s.offset, s.size));
            return out;
          },
          "A stream's state, flat: (name, offset, size) per entry (empty when the model cannot stream).");
  m.def("active_isa", []() { return std::string(default_kernels().name); },
        "The ISA of the kernels chosen for this process (RNNINFER_ISA or the best available).");
  m.def("cpu_brand", []() { return cpu_features().brand; });
}

}  // namespace rnninfer
