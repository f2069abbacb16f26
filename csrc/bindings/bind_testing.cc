// rnninfer._core._testing: direct access to kernels per ISA for tests and
// kernel benchmarks. Not part of the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <numeric>
#include <string>
#include <vector>

#include "bindings/py_engine.h"
#include "cpu/cpu_features.h"
#include "cpu/dispatch.h"
#include "engine/model_desc.h"
#include "engine/packing.h"
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

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

void check_shape(const FArray& a, std::vector<py::ssize_t> shape, const char* name) {
  std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
  if (got != shape) throw std::invalid_argument(std::string(name) + " has the wrong shape");
}

// One recurrent step of `cell` through the table of `isa`: the weights packed
// as the engine packs them, every row of h_prev/xp (and c_prev) one sequence.
// Returns (h_next, c_next or None, seconds per step over `reps` repetitions).
py::tuple recurrent_step(const std::string& isa, const std::string& cell, FArray w_hh, py::object xp_obj,
                         FArray h_prev, py::object c_prev_obj, py::object b_hn_obj, bool reset_after,
                         const std::string& act, const std::string& ract, int reps,
                         bool tiles_backward, py::object w_ih_obj, py::object x_obj,
                         py::object bias_obj, bool fused) {
  const KernelTable& k = kernels_for(isa);
  const bool lstm = cell == "lstm", gru = cell == "gru";
  if (!lstm && !gru && cell != "rnn") throw std::invalid_argument("cell must be lstm, gru or rnn");
  if (reps < 1) throw std::invalid_argument("reps must be >= 1");
  const int G = lstm ? 4 : (gru ? 3 : 1);
  if (w_hh.ndim() != 2 || w_hh.shape(0) % G != 0 || w_hh.shape(0) == 0)
    throw std::invalid_argument("w_hh must be (G*H, H)");
  const int H = static_cast<int>(w_hh.shape(0) / G);
  std::vector<int> all_gates(static_cast<std::size_t>(G));
  std::iota(all_gates.begin(), all_gates.end(), 0);
  check_shape(w_hh, {G * H, H}, "w_hh");
  if (h_prev.ndim() != 2 || h_prev.shape(0) < 1) throw std::invalid_argument("h_prev must be (n, H)");
  const int n = static_cast<int>(h_prev.shape(0));
  check_shape(h_prev, {n, H}, "h_prev");
  // The input projections: given (xp), or from layer inputs x and W_x (+ bias)
  // through the table's gemm as the engine's blocks do, or (fused) computed
  // by the step kernel itself (StepArgs::wx).
  FArray xp, w_ih, x, bias;
  std::vector<float> xp_gemm;
  GemmWeights gx;
  RecWeights rx;
  AlignedBuffer bx;
  const bool from_x = !w_ih_obj.is_none();
  if (from_x) {
    if (!xp_obj.is_none()) throw std::invalid_argument("give xp or w_ih and x, not both");
    w_ih = w_ih_obj.cast<FArray>();
    x = x_obj.cast<FArray>();
    if (w_ih.ndim() != 2 || w_ih.shape(1) < 1) throw std::invalid_argument("w_ih must be (G*H, In)");
    const int in = static_cast<int>(w_ih.shape(1));
    check_shape(w_ih, {G * H, in}, "w_ih");
    check_shape(x, {n, in}, "x");
    const bool has_bias = !bias_obj.is_none();
    if (has_bias) {
      bias = bias_obj.cast<FArray>();
      check_shape(bias, {G * H}, "bias");
    }
    if (fused) {
      if (gru && !reset_after) throw std::invalid_argument("fused: GRU reset_after=False reads xp twice");
      pack_rec(w_ih.data(), H, in, all_gates, k.rec_tile, &rx);
      pack_tile_values(has_bias ? bias.data() : nullptr, H, all_gates, k.rec_tile, &bx);
    } else {
      pack_gemm(w_ih.data(), G * H, in, has_bias ? bias.data() : nullptr, k.gemm_nr, &gx);
      xp_gemm.resize(static_cast<std::size_t>(n) * G * H);
      k.gemm(gx.view, x.data(), static_cast<std::size_t>(in), n, xp_gemm.data(),
             static_cast<std::size_t>(G) * H);
    }
  } else {
    if (fused) throw std::invalid_argument("fused needs w_ih and x");
    xp = xp_obj.cast<FArray>();
    check_shape(xp, {n, G * H}, "xp");
  }
  FArray c_prev;
  if (lstm) {
    c_prev = c_prev_obj.cast<FArray>();
    check_shape(c_prev, {n, H}, "c_prev");
  }
  FArray b_hn;
  const bool has_b_hn = gru && reset_after && !b_hn_obj.is_none();
  if (has_b_hn) {
    b_hn = b_hn_obj.cast<FArray>();
    check_shape(b_hn, {H}, "b_hn");
  }
  RecWeights wh, wh_n;
  if (gru && !reset_after) {
    pack_rec(w_hh.data(), H, H, {0, 1}, k.rec_tile, &wh);
    pack_rec(w_hh.data(), H, H, {2}, k.rec_tile, &wh_n);
  } else {
    pack_rec(w_hh.data(), H, H, all_gates, k.rec_tile, &wh);
  }
  const std::size_t nh = static_cast<std::size_t>(n) * H;
  std::vector<float> c_next(nh), gru_scratch(2 * nh), partial(static_cast<std::size_t>(n) * 4 * 16),
      hq(static_cast<std::size_t>(n) * hq_floats_per_row(static_cast<std::size_t>(H)));
  py::array_t<float> h_next({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(H)});
  StepArgs a;
  a.w = &wh.view;
  a.w2 = &wh_n.view;
  a.n = n;
  a.h_prev = h_prev.data();
  a.ld_h = static_cast<std::size_t>(H);
  a.xp = from_x ? (fused ? nullptr : xp_gemm.data()) : xp.data();
  a.ld_xp = static_cast<std::size_t>(G) * H;
  if (fused) {
    a.wx = &rx.view;
    a.bx = bx.data();
    a.x = x.data();
    a.ld_x = static_cast<std::size_t>(w_ih.shape(1));
  }
  a.b_hn = has_b_hn ? b_hn.data() : nullptr;
  a.c_prev = lstm ? c_prev.data() : nullptr;
  a.c_next = c_next.data();
  a.ld_c = static_cast<std::size_t>(H);
  a.h_next = h_next.mutable_data();
  a.ld_hn = static_cast<std::size_t>(H);
  a.scratch = gru_scratch.data();
  a.partial = partial.data();
  a.hq = hq.data();
  a.act = parse_act(act);
  a.ract = parse_act(ract);
  a.tiles_backward = tiles_backward;
  const StepFn fn = lstm ? k.lstm_step : (gru ? (reset_after ? k.gru_step : k.gru_reset_before_step) : k.rnn_step);
  double seconds;
  {
    py::gil_scoped_release release;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) fn(a);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  }
  py::object c_out = py::none();
  if (lstm) {
    py::array_t<float> c({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(H)});
    std::copy(c_next.begin(), c_next.end(), c.mutable_data());
    c_out = c;
  }
  return py::make_tuple(h_next, c_out, seconds);
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
      "fma_chain_seconds",
      [](const std::string& isa, long n) {
        if (n < 1) throw std::invalid_argument("n must be >= 1");
        const KernelTable& k = kernels_for(isa);
        py::gil_scoped_release release;
        const auto t0 = std::chrono::steady_clock::now();
        volatile float sink = k.fma_chain(1.5f, n);
        (void)sink;
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n;
      },
      py::arg("isa"), py::arg("n"),
      "Seconds per dependent vector FMA of the ISA (n in a chain): the latency behind the "
      "batch-1 latency-chain limit of the small-models benchmark.");
  t.def("recurrent_step", &recurrent_step, py::arg("isa"), py::arg("cell"), py::arg("w_hh"),
        py::arg("xp"), py::arg("h_prev"), py::arg("c_prev") = py::none(), py::arg("b_hn") = py::none(),
        py::arg("reset_after") = true, py::arg("activation") = "tanh",
        py::arg("recurrent_activation") = "sigmoid", py::arg("reps") = 1,
        py::arg("tiles_backward") = false, py::arg("w_ih") = py::none(), py::arg("x") = py::none(),
        py::arg("bias") = py::none(), py::arg("fused") = false,
        "One fp32 recurrent step (rows = sequences) through the ISA's step kernel: "
        "(h_next, c_next or None, seconds per step over reps repetitions); tiles_backward "
        "visits the unit tiles last to first (StepArgs::tiles_backward). With xp=None, "
        "w_ih (G*H, In), x (n, In) and bias (G*H or None) give the projections: through the "
        "table's gemm, or with fused=True computed by the step kernel (StepArgs::wx).");
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
