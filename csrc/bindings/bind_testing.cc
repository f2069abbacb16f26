// rnninfer._core._testing: direct access to kernels per ISA for tests and
// kernel benchmarks. Not part of the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/py_engine.h"
#include "cpu/cpu_features.h"
#include "cpu/dispatch.h"
#include "engine/model_desc.h"
#include "engine/scheduler.h"

namespace py = pybind11;

namespace rnninfer {
namespace {

// Runs a token batch and returns (output, units, records) describing what
// each unit did and when: for scheduler tests and the scaling benchmark.
py::tuple trace_tokens(const PyEngine& e, const TokenArray& tokens, const IntArray& lengths,
                       bool allow_split, int min_alone_units) {
  if (tokens.ndim() != 2) throw std::invalid_argument("tokens must be a 2-D (batch, steps) array");
  const int B = static_cast<int>(tokens.shape(0)), T = static_cast<int>(tokens.shape(1));
  PyEngine::check_lengths(lengths, B);
  py::array_t<float> out = e.alloc_out(B, T);
  CallTrace trace;
  trace.allow_split = allow_split;
  trace.min_alone_units = min_alone_units;
  const int64_t* tp = tokens.data();
  const int32_t* lp = lengths.data();
  float* op = out.mutable_data();
  {
    // Pure C++ from here: no Python object is touched until the guard ends.
    py::gil_scoped_release nogil;
    e.engine().predict_tokens(tp, B, T, lp, op, &trace);
  }
  py::list units, records;
  for (const Unit& u : trace.plan.units) {
    py::dict d;
    d["kind"] = u.kind == Unit::Kind::kFinish ? "finish"
                : u.kind == Unit::Kind::kProject ? "project"
                                                 : "direction";
    d["layer"] = u.layer;
    d["dir"] = u.dir;
    d["block"] = u.block;
    d["shard"] = u.shard;
    d["thread"] = u.thread;
    d["deps"] = u.deps;
    units.append(d);
  }
  for (const auto& r : trace.records) records.append(py::make_tuple(r.unit, r.thread, r.start_ns, r.end_ns));
  py::dict plan;
  plan["threads"] = trace.plan.threads;
  plan["block_steps"] = trace.plan.block_steps;
  plan["block_begin"] = trace.plan.block_begin;
  plan["blocks"] = trace.plan.blocks;
  plan["shards"] = trace.plan.shards();
  plan["wavefront"] = trace.plan.wavefront;
  plan["split"] = trace.plan.split;
  return py::make_tuple(out, plan, units, records);
}

}  // namespace

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
  // Hooks on one model's engine (the scheduling hints and counts never change
  // a result; the public Engine does not carry them).
  t.def("trace_tokens", &trace_tokens, py::arg("engine"), py::arg("tokens"), py::arg("lengths"),
        py::arg("allow_split") = true, py::arg("min_alone_units") = 0,
        "Run a token batch; (output, plan, units, records): what each unit did and when.");
  t.def(
      "shard_speeds", [](const PyEngine& e) { return e.engine().executor().shard_speeds(); },
      py::arg("engine"), "The batch-shard speed estimates of the engine's threads (a scheduling hint).");
  t.def(
      "set_shard_speeds",
      [](const PyEngine& e, const std::vector<double>& speeds) { e.engine().executor().set_shard_speeds(speeds); },
      py::arg("engine"), py::arg("speeds"), "Set the batch-shard speed estimates (tests force uneven shards).");
  t.def(
      "schedule_stats",
      [](const PyEngine& e) {
        const ScheduleStats stats = e.engine().executor().schedule_stats();
        py::dict out;
        for (int f = 0; f < ScheduleStats::kFields; ++f) out[ScheduleStats::name(f)] = stats.counts[static_cast<size_t>(f)];
        return out;
      },
      py::arg("engine"), "How the engine's calls ran since load (plan kinds, split back-offs): counts.");
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
