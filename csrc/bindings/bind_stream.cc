// Streams binding: rnninfer._core.StreamCore (one sequence's carried state,
// the base of rnninfer.serving.Stream) and _core.feed_many (several streams
// in one engine call). The state stays in C++, so a feed is one call: read
// the new steps, allocate the output, run the engine without the GIL, adopt
// the new state.
//
// A stream holds two state buffers: the engine reads the current one and
// writes the other, which becomes current only when the call succeeded, so a
// refused or failed feed leaves the stream as it was.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bindings/py_engine.h"

namespace py = pybind11;

namespace rnninfer {

// Types of this file live in rnninfer proper (not an anonymous namespace)
// because FeedScratch, which the engine binding holds, refers to them.

// One sequence's new steps, read from a Python object.
struct FeedInput {
  int32_t steps = 0;
  const int64_t* tokens = nullptr;  // token ids (or ids_at into a scratch of ids)
  int64_t ids_at = -1;
  const float* features = nullptr;  // steps x F
  py::object keep;                  // a converted array, alive for the call
};

static std::string out_of_range(const std::string& id, int seq, py::ssize_t step, int64_t vocab) {
  return "token id " + id + " at sequence " + std::to_string(seq) + ", step " + std::to_string(step) +
         " is out of range for the vocabulary [0, " + std::to_string(vocab) + ")";
}

// Reads the forms a feed takes on its fast path: a list of Python ints or a
// 1-D integer array (token models), a (steps, F) float32/float64 array
// (feature models). Token ids out of range and non-finite features raise
// ValueError naming sequence `seq` and the step. Returns false, having raised
// nothing, for any other form (and for empty input): the Python side then
// normalises it with the same rules as predict's input and calls again.
static bool read_input(const Engine& e, py::handle x, int seq, std::vector<int64_t>* ids, FeedInput* in) {
  const ModelDesc& d = e.desc();
  if (d.tokens) {
    if (PyList_CheckExact(x.ptr())) {
      const py::ssize_t n = PyList_GET_SIZE(x.ptr());
      if (n == 0 || n > INT32_MAX) return false;
      for (py::ssize_t t = 0; t < n; ++t) {
        PyObject* o = PyList_GET_ITEM(x.ptr(), t);
        if (!PyLong_Check(o) || PyBool_Check(o)) return false;
      }
      in->ids_at = static_cast<int64_t>(ids->size());
      for (py::ssize_t t = 0; t < n; ++t) {
        PyObject* o = PyList_GET_ITEM(x.ptr(), t);
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow != 0 || v < 0 || v >= d.vocab_size) {
          ids->resize(static_cast<size_t>(in->ids_at));
          throw std::invalid_argument(out_of_range(py::str(o).cast<std::string>(), seq, t, d.vocab_size));
        }
        ids->push_back(v);
      }
      in->steps = static_cast<int32_t>(n);
      return true;
    }
    if (!py::isinstance<py::array>(x)) return false;
    const py::array a = py::reinterpret_borrow<py::array>(x);
    const char kind = a.dtype().kind();
    // uint64 ids past 2**63 do not fit int64: the Python side reports them.
    if (a.ndim() != 1 || a.size() == 0 || a.size() > INT32_MAX || (kind != 'i' && kind != 'u') ||
        (kind == 'u' && a.itemsize() == 8))
      return false;
    TokenArray t = TokenArray::ensure(a);
    if (!t) return false;
    // Ids are range-checked by the engine as it reads them.
    in->tokens = t.data();
    in->steps = static_cast<int32_t>(t.shape(0));
    in->keep = std::move(t);
    return true;
  }
  if (!py::isinstance<py::array>(x)) return false;
  const py::array a = py::reinterpret_borrow<py::array>(x);
  const bool f32 = a.dtype().is(py::dtype::of<float>()), f64 = a.dtype().is(py::dtype::of<double>());
  if (a.ndim() != 2 || a.shape(0) == 0 || a.shape(0) > INT32_MAX || a.shape(1) != d.input_width ||
      !(f32 || f64))
    return false;
  FloatArray f = FloatArray::ensure(a);  // float64 beyond float32's range becomes inf: refused below
  if (!f) return false;
  const float* p = f.data();
  const py::ssize_t n = f.shape(0), F = f.shape(1);
  for (py::ssize_t i = 0; i < n * F; ++i)
    if (!std::isfinite(p[i]))
      throw std::invalid_argument(
          "features contain NaN or infinity (or values beyond float32 range) at sequence " +
          std::to_string(seq) + ", step " + std::to_string(i / F) + ", feature " + std::to_string(i % F));
  in->features = p;
  in->steps = static_cast<int32_t>(n);
  in->keep = std::move(f);
  return true;
}

static py::array_t<float> alloc_feed_out(const Engine& e, int32_t steps) {
  const int ow = e.desc().output_width();
  if (e.desc().readout == Readout::kSequence) return py::array_t<float>({steps, ow});
  return py::array_t<float>(ow);
}

class PyStream {
 public:
  explicit PyStream(const py::object& engine)
      : engine_obj_(engine), engine_(&engine.cast<const PyEngine&>().engine()) {
    engine_->check_streams();
    const std::size_t n = static_cast<std::size_t>(engine_->state_size());
    state_[0].assign(n, 0.0f);
    state_[1].assign(n, 0.0f);
  }

  const Engine& engine() const { return *engine_; }
  const py::object& engine_object() const { return engine_obj_; }

  // The outputs of the new steps x, or None when x is in none of the forms
  // read_input takes (the Python side normalises it and calls again).
  py::object feed(const py::handle& x) {
    Busy busy(this);
    ids_.clear();
    FeedInput in;
    if (!read_input(*engine_, x, 0, &ids_, &in)) return py::none();
    if (in.ids_at >= 0) in.tokens = ids_.data() + in.ids_at;
    py::array_t<float> out = alloc_feed_out(*engine_, in.steps);
    float* op = out.mutable_data();
    const float* s_in = state_[cur_].data();
    float* s_out = state_[1 - cur_].data();
    {
      // Pure C++ from here: no Python object is touched until the guard ends.
      py::gil_scoped_release nogil;
      if (in.tokens != nullptr)
        engine_->feed_tokens(1, &in.tokens, &in.steps, &s_in, &s_out, &op);
      else
        engine_->feed_features(1, &in.features, &in.steps, &s_in, &s_out, &op);
    }
    advance(in.steps);
    return std::move(out);
  }

  py::array_t<float> state() const {
    py::array_t<float> a(static_cast<py::ssize_t>(state_[cur_].size()));
    std::memcpy(a.mutable_data(), state_[cur_].data(), state_[cur_].size() * sizeof(float));
    return a;
  }

  // A flat state of state_size() floats (checked for its names, shapes and
  // values by the Python side, rnninfer.serving.stream).
  void set_state(const FloatArray& flat, int64_t steps) {
    Busy busy(this);
    if (flat.ndim() != 1 || flat.shape(0) != engine_->state_size())
      throw std::invalid_argument("a flat state needs " + std::to_string(engine_->state_size()) + " floats");
    if (steps < 0) throw std::invalid_argument("steps must be >= 0");
    const float* p = flat.data();
    // A max readout's pool may hold -inf (every value it saw was -inf).
    const int64_t pool0 = engine_->pool_max(), pool1 = pool0 + engine_->desc().top_width();
    for (py::ssize_t i = 0; i < flat.shape(0); ++i)
      if (!std::isfinite(p[i]) && !(i >= pool0 && i < pool1 && pool0 >= 0 && p[i] < 0 && std::isinf(p[i])))
        throw std::invalid_argument("a state value is NaN or infinite");
    std::memcpy(state_[cur_].data(), p, state_[cur_].size() * sizeof(float));
    steps_ = steps;
  }

  void reset() {
    Busy busy(this);
    std::fill(state_[cur_].begin(), state_[cur_].end(), 0.0f);
    steps_ = 0;
  }

  int64_t steps() const { return steps_; }

  // Marks the stream in use by one call; a second call at the same time
  // (another thread, or the same stream twice in one feed_many) is refused
  // instead of racing on the buffers.
  bool try_acquire() { return !busy_.exchange(true, std::memory_order_acquire); }
  void release() { busy_.store(false, std::memory_order_release); }
  const float* current() const { return state_[cur_].data(); }
  float* spare() { return state_[1 - cur_].data(); }
  void advance(int32_t steps) {
    cur_ = 1 - cur_;
    steps_ += steps;
  }

 private:
  struct Busy {
    explicit Busy(PyStream* s) : s_(s) {
      if (!s->try_acquire())
        throw std::runtime_error("this stream is being fed by another thread (a stream is not thread-safe)");
    }
    ~Busy() { s_->release(); }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;
    PyStream* s_;
  };

  py::object engine_obj_;  // keeps the engine alive as long as the stream
  const Engine* engine_;
  std::vector<float> state_[2];
  int cur_ = 0;
  int64_t steps_ = 0;
  std::atomic<bool> busy_{false};
  std::vector<int64_t> ids_;  // the ids of a list input (reused: no allocation per feed)
};

// Spare feed_many scratch kept per engine: enough for a few concurrent callers.
constexpr size_t kMaxSpareScratch = 4;

struct FeedScratch {
  std::vector<PyStream*> streams;
  std::vector<FeedInput> in;
  std::vector<int64_t> ids;
  std::vector<const int64_t*> tokens;
  std::vector<const float*> features, s_in;
  std::vector<float*> s_out, out;
  std::vector<int32_t> lengths;
};

void FeedScratchDelete::operator()(FeedScratch* s) const { delete s; }

namespace {

// Several streams, each advanced by its own input, in one engine call (a
// ragged batch starting from each stream's state). None when an input is in a
// form read_input does not take; nothing is advanced then, or on any error.
py::object feed_many(const PyEngine& owner, const py::list& streams, const py::list& xs) {
  const Engine& e = owner.engine();
  e.check_streams();
  const py::ssize_t n = static_cast<py::ssize_t>(py::len(streams));
  if (static_cast<py::ssize_t>(py::len(xs)) != n)
    throw std::invalid_argument("feed_many needs one input per stream: got " + std::to_string(n) +
                                " streams and " + std::to_string(py::len(xs)) + " inputs");
  if (n == 0) throw std::invalid_argument("feed_many got no streams");
  if (n > INT32_MAX) throw std::invalid_argument("too many streams for one call");
  // Scratch from the engine's spares; given back (emptied of Python
  // references, streams released) however the call ends.
  struct Take {
    const PyEngine& owner;
    FeedScratchPtr s;
    explicit Take(const PyEngine& o) : owner(o) {
      if (!o.feed_scratch().empty()) {
        s = std::move(o.feed_scratch().back());
        o.feed_scratch().pop_back();
      } else {
        s = FeedScratchPtr(new FeedScratch);
      }
    }
    ~Take() {
      for (PyStream* st : s->streams) st->release();
      s->streams.clear();
      for (FeedInput& in : s->in) in.keep = py::object();
      if (owner.feed_scratch().size() < kMaxSpareScratch) owner.feed_scratch().push_back(std::move(s));
    }
    Take(const Take&) = delete;
    Take& operator=(const Take&) = delete;
  } take(owner);
  FeedScratch& sc = *take.s;
  const size_t N = static_cast<size_t>(n);
  for (size_t i = 0; i < N; ++i) {
    PyStream* s = nullptr;
    try {
      s = &streams[i].cast<PyStream&>();
    } catch (const py::cast_error&) {
      throw py::type_error("streams[" + std::to_string(i) + "] is a " +
                           std::string(Py_TYPE(streams[i].ptr())->tp_name) + ", not a Stream");
    }
    if (&s->engine() != &e)
      throw std::invalid_argument("streams[" + std::to_string(i) + "] belongs to another model");
    if (!s->try_acquire()) {
      for (size_t j = 0; j < i; ++j)
        if (sc.streams[j] == s)
          throw std::invalid_argument("streams[" + std::to_string(j) + "] and streams[" + std::to_string(i) +
                                      "] are the same stream: a stream advances once per call");
      throw std::runtime_error("streams[" + std::to_string(i) +
                               "] is being fed by another thread (a stream is not thread-safe)");
    }
    sc.streams.push_back(s);
  }
  sc.in.resize(N);
  sc.ids.clear();
  for (size_t i = 0; i < N; ++i) {
    sc.in[i] = FeedInput();
    if (!read_input(e, xs[i], static_cast<int>(i), &sc.ids, &sc.in[i])) return py::none();
  }
  sc.tokens.resize(N);
  sc.features.resize(N);
  sc.s_in.resize(N);
  sc.s_out.resize(N);
  sc.out.resize(N);
  sc.lengths.resize(N);
  py::list outs(n);
  for (size_t i = 0; i < N; ++i) {
    const FeedInput& in = sc.in[i];
    sc.tokens[i] = in.ids_at >= 0 ? sc.ids.data() + in.ids_at : in.tokens;
    sc.features[i] = in.features;
    sc.lengths[i] = in.steps;
    sc.s_in[i] = sc.streams[i]->current();
    sc.s_out[i] = sc.streams[i]->spare();
    py::array_t<float> out = alloc_feed_out(e, in.steps);
    sc.out[i] = out.mutable_data();
    outs[i] = std::move(out);
  }
  {
    // Pure C++ from here: no Python object is touched until the guard ends.
    py::gil_scoped_release nogil;
    if (e.desc().tokens)
      e.feed_tokens(static_cast<int>(n), sc.tokens.data(), sc.lengths.data(), sc.s_in.data(), sc.s_out.data(),
                    sc.out.data());
    else
      e.feed_features(static_cast<int>(n), sc.features.data(), sc.lengths.data(), sc.s_in.data(),
                      sc.s_out.data(), sc.out.data());
  }
  for (size_t i = 0; i < N; ++i) sc.streams[i]->advance(sc.lengths[i]);
  return std::move(outs);
}

}  // namespace

void register_stream(py::module_& m) {
  py::class_<PyStream>(m, "StreamCore", "One sequence's carried state (base of rnninfer.serving.Stream).")
      .def(py::init<const py::object&>(), py::arg("engine"))
      // feed is bound here, not wrapped in Python: a Python frame around it
      // was a sixth of a tiny model's feed. Inputs that need normalising go
      // to the subclass's _feed_slow (rnninfer.serving.Stream).
      .def(
          "feed",
          [](PyStream& s, const py::handle& x) -> py::object {
            py::object out = s.feed(x);
            if (!out.is_none()) return out;
            return py::cast(&s, py::return_value_policy::reference).attr("_feed_slow")(x);
          },
          py::arg("x"), R"doc(Advance the stream by the new steps ``x``.

Args:
    x: token ids (a list or 1-D integer array) for token models,
        ``(n, F)`` float32/float64 features for feature models.

Returns:
    ``(n, out)`` float32 outputs of the new steps when the model
    returns sequences, else ``(out,)``: the head on the state after
    the last step, what ``predict`` gives on everything fed so far.

Raises:
    TypeError, ValueError: bad input, as ``predict`` names it; the
        stream is left unchanged.)doc")
      .def("_feed", &PyStream::feed, py::arg("x"),
           "Outputs of the new steps, or None when x needs normalising first.")
      .def("_state", &PyStream::state, "A copy of the state, flat (Engine.state_entries gives the layout).")
      .def("_set_state", &PyStream::set_state, py::arg("flat"), py::arg("steps"))
      .def("reset", &PyStream::reset, "Back to the initial (zero) state.")
      .def_property_readonly("steps", &PyStream::steps, "Steps fed so far.")
      .def_property_readonly("_engine", &PyStream::engine_object);
  m.def("feed_many", &feed_many, py::arg("engine"), py::arg("streams"), py::arg("xs"),
        "Advance several streams in one engine call; None when an input needs normalising first.");
}

}  // namespace rnninfer
