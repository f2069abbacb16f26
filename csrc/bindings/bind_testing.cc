// rnninfer._core._testing: direct access to kernels per ISA for tests and
// kernel benchmarks. Not part of the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "cpu/cpu_features.h"
#include "cpu/dispatch.h"
#include "engine/model_desc.h"
#include "engine/scheduler.h"

namespace py = pybind11;

namespace rnninfer {

void register_testing(py::module_& m) {
  py::module_ t = m.def_submodule("_testing", "kernel-level hooks for tests and benchmarks");
  t.def("available_isas", &available_isas,
        "ISAs compiled into this build that this CPU can run, best last.");
  t.def("cpu_features", []() {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["avx2_fma"] = f.avx2_fma;
    d["avx512"] = f.avx512;
    d["avx512_bf16"] = f.avx512_bf16;
    d["avx512_vnni"] = f.avx512_vnni;
    d["neon"] = f.neon;
    d["brand"] = f.brand;
    return d;
  });
  t.def("desc_names", []() {
    // The names the engine parses, per enum in enum order (see model_desc.h).
    auto names = [](const auto& arr) { return std::vector<std::string>(arr.begin(), arr.end()); };
    py::dict d;
    d["cell"] = names(kCellNames);
    d["direction"] = names(kDirectionNames);
    d["merge"] = names(kMergeNames);
    d["readout"] = names(kReadoutNames);
    d["activation"] = names(kActNames);
    return d;
  });
  t.def(
      "activate",
      [](const std::string& isa, const std::string& act,
         py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        const KernelTable& k = kernels_for(isa);
        const Act a = parse_act(act);
        if (a == Act::kSoftmax || a == Act::kLogSoftmax)
          throw std::invalid_argument("softmax is a row activation, not element-wise");
        py::array_t<float> out(x.request().shape);
        std::copy(x.data(), x.data() + x.size(), out.mutable_data());
        k.activate(a, out.mutable_data(), static_cast<int>(out.size()));
        return out;
      },
      py::arg("isa"), py::arg("activation"), py::arg("x"),
      "Apply an element-wise activation with the given ISA's kernel.");
  t.def(
      "split_batch_weighted",
      [](const std::vector<int>& lengths, const std::vector<double>& speeds, int min_rows) {
        if (speeds.empty()) throw std::invalid_argument("speeds must not be empty");
        for (double v : speeds)
          if (!(v > 0) || !std::isfinite(v)) throw std::invalid_argument("speeds must be finite and > 0");
        for (int v : lengths)
          if (v < 1) throw std::invalid_argument("lengths must be >= 1");
        return split_batch_weighted(lengths, speeds, min_rows);
      },
      py::arg("lengths"), py::arg("speeds"), py::arg("min_rows"),
      "Batch shard boundaries for sequence lengths (longest first) and per-shard speeds.");
  // The split back-off policy on a caller-supplied clock.
  py::class_<SplitBackoff>(t, "SplitBackoff")
      .def(py::init<>())
      .def("held_off", &SplitBackoff::held_off, py::arg("now_ns"))
      .def("judge", &SplitBackoff::judge, py::arg("long_wait_ns"), py::arg("call_ns"), py::arg("end_ns"))
      .def_property_readonly("until_ns", &SplitBackoff::until_ns)
      .def_readonly_static("strikes", &SplitBackoff::kStrikes)
      .def_readonly_static("backoff_calls", &SplitBackoff::kBackoffCalls)
      .def_readonly_static("max_backoff_ns", &SplitBackoff::kMaxBackoffNs);
}

}  // namespace rnninfer
