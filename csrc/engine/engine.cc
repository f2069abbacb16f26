#include "engine/engine.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <atomic>
#include <exception>
#include <thread>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "cpu/dispatch.h"
#include "engine/errors.h"
#include "engine/scheduler.h"
#include "engine/thread_pool.h"
#include "engine/workspace.h"

namespace rnninfer {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

void copy_rows(const float* src, std::size_t lds, float* dst, std::size_t ldd, int rows,
               int cols) {
  for (int r = 0; r < rows; ++r)
    std::memcpy(dst + r * ldd, src + r * lds, static_cast<std::size_t>(cols) * sizeof(float));
}

inline float merge_one(Merge m, float a, float b) {
  switch (m) {
    case Merge::kSum:
      return a + b;
    case Merge::kMul:
      return a * b;
    case Merge::kAve:
      return (a + b) * 0.5f;
    case Merge::kConcat:
      break;
  }
  return a;
}

// Softmax / log-softmax over one row. Head rows are short, so this stays
// scalar; max subtraction keeps exp from overflowing.
void row_softmax(float* x, int n, bool log_space) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  if (log_space) {
    const float lse = static_cast<float>(std::log(sum));
    for (int i = 0; i < n; ++i) x[i] = x[i] - mx - lse;
  } else {
    for (int i = 0; i < n; ++i)
      x[i] = static_cast<float>(std::exp(static_cast<double>(x[i] - mx)) / sum);
  }
}

}  // namespace

Engine::Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels)
    : desc_(std::move(desc)),
      kernels_(kernels != nullptr ? kernels : &default_kernels()),
      threads_(threads) {
  check_arg(threads >= 1, "threads must be >= 1, got ", threads);
  validate_desc(desc_);
  auto find = [&](const std::string& name, const std::vector<int64_t>& shape) -> const TensorView& {
    auto it = tensors.find(name);
    check_arg(it != tensors.end(), "missing tensor '", name, "'");
    check_arg(it->second.shape == shape, "tensor '", name, "' has shape ",
              shape_str(it->second.shape), ", expected ", shape_str(shape));
    check_arg(it->second.data != nullptr, "tensor '", name, "' has no data");
    return it->second;
  };
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> const float* {
    const TensorView& v = find(name, shape);
    check_arg(v.dtype == WType::kF32, "tensor '", name, "' must be float32");
    return static_cast<const float*>(v.data);
  };
  // w_ih / w_hh: fp32, bf16 or int8 (+ "<name>_scale", one per row). The
  // packed operand keeps the element type; the kernels follow it.
  auto get_w = [&](const std::string& name, std::vector<int64_t> shape) -> WeightSrc {
    const TensorView& v = find(name, shape);
    WeightSrc w{v.dtype, v.data, nullptr};
    if (v.dtype == WType::kI8) w.scale = get(name + "_scale", {shape[0]});
    return w;
  };
  const int nr = kernels_->gemm_nr;
  const int tile = kernels_->rec_tile;
  if (desc_.tokens) {
    const float* e = get("embedding.weight", {desc_.vocab_size, desc_.input_width});
    embedding_ = AlignedBuffer(static_cast<std::size_t>(desc_.vocab_size) * desc_.input_width);
    std::memcpy(embedding_.data(), e, embedding_.size() * sizeof(float));
  }
  int in = desc_.input_width;
  for (size_t i = 0; i < desc_.layers.size(); ++i) {
    const LayerDesc& L = desc_.layers[i];
    const int H = L.units, G = L.gates(), P = L.dir_width(), GH = G * H;
    LayerWeights lw;
    lw.dirs.resize(static_cast<size_t>(L.dirs()));
    for (int d = 0; d < L.dirs(); ++d) {
      const std::string pre = "layers." + std::to_string(i) + (d == 0 ? ".fwd." : ".bwd.");
      DirWeights& dw = lw.dirs[static_cast<size_t>(d)];
      const WeightSrc w_ih = get_w(pre + "w_ih", {GH, in});
      const WeightSrc w_hh = get_w(pre + "w_hh", {GH, P});
      std::vector<float> folded;
      if (L.bias) {
        const float* b_ih = get(pre + "b_ih", {GH});
        const float* b_hh = get(pre + "b_hh", {GH});
        folded.assign(b_ih, b_ih + GH);
        // b_hh joins the projection bias wherever it is not multiplied by the
        // reset gate: everywhere except GRU(reset_after)'s candidate block.
        const bool keep_hn = L.cell == Cell::kGru && L.reset_after;
        for (int j = 0; j < GH; ++j)
          if (!(keep_hn && j >= 2 * H)) folded[static_cast<size_t>(j)] += b_hh[j];
        if (keep_hn) {
          dw.b_hn = AlignedBuffer(static_cast<std::size_t>(H));
          std::memcpy(dw.b_hn.data(), b_hh + 2 * H, static_cast<std::size_t>(H) * sizeof(float));
        }
      }
      pack_gemm(w_ih, GH, in, L.bias ? folded.data() : nullptr, nr, &dw.wx,
                w_ih.type == WType::kBf16  ? kernels_->bf16_gemm_layout
                : w_ih.type == WType::kI8 ? kernels_->i8_gemm_layout
                                          : RecLayout::kPlain);
      // The table says which K layout its step kernels read for reduced weights.
      const RecLayout layout = w_hh.type == WType::kBf16  ? kernels_->bf16_rec_layout
                               : w_hh.type == WType::kI8 ? kernels_->i8_rec_layout
                                                         : RecLayout::kPlain;
      if (L.cell == Cell::kGru && !L.reset_after) {
        pack_rec(w_hh, H, P, {0, 1}, tile, &dw.wh, layout);
        pack_rec(w_hh, H, P, {2}, tile, &dw.wh_n, layout);
      } else {
        std::vector<int> gates(static_cast<size_t>(G));
        std::iota(gates.begin(), gates.end(), 0);
        pack_rec(w_hh, H, P, gates, tile, &dw.wh, layout);
      }
      if (L.proj_size > 0) pack_gemm(get(pre + "w_hr", {P, H}), P, H, nullptr, nr, &dw.wr);
      if (i == 0 && desc_.tokens &&
          static_cast<std::size_t>(desc_.vocab_size) * GH * L.dirs() * sizeof(float) <=
              kMaxTokenProjectionBytes) {
        dw.token_proj = AlignedBuffer(static_cast<std::size_t>(desc_.vocab_size) * GH);
        kernels_->gemm(dw.wx.view, embedding_.data(), static_cast<std::size_t>(in),
                       desc_.vocab_size, dw.token_proj.data(), static_cast<std::size_t>(GH));
      }
    }
    layers_.push_back(std::move(lw));
    in = L.out_width();
  }
  max_head_width_ = in;
  for (const LayerDesc& L : desc_.layers) max_width_p_ = std::max(max_width_p_, L.dir_width());
  if (threads_ > 1) {
    pool_ = std::make_unique<ThreadPool>(threads_);
    shard_speed_.assign(static_cast<size_t>(threads_), 1.0);
  }
  for (size_t j = 0; j < desc_.head.size(); ++j) {
    const DenseDesc& D = desc_.head[j];
    const std::string pre = "head." + std::to_string(j) + ".";
    GemmWeights gw;
    pack_gemm(get(pre + "weight", {D.units, in}), D.units, in,
              D.bias ? get(pre + "bias", {D.units}) : nullptr, nr, &gw);
    head_.push_back(std::move(gw));
    in = D.units;
    max_head_width_ = std::max(max_head_width_, in);
  }
}

const char* Engine::recurrent_activations() const {
  for (const LayerWeights& lw : layers_)
    for (const DirWeights& dw : lw.dirs) {
      if (dw.wh.view.layout == RecLayout::kPairs) return "bf16";
      if (dw.wh.view.layout == RecLayout::kQuads) return "int8";
    }
  return "fp32";
}

int64_t Engine::output_size(int steps) const {
  const int64_t w = desc_.output_width();
  return desc_.readout == Readout::kSequence ? w * steps : w;
}

void Engine::check_call(int batch, int steps, const int32_t* lengths) const {
  check_arg(batch > 0, "empty batch: no sequences to run");
  check_arg(steps > 0, "zero-length input: no steps to run");
  for (int b = 0; b < batch; ++b)
    check_arg(lengths[b] >= 1 && lengths[b] <= steps, "lengths[", b, "] = ", lengths[b],
              " is outside [1, ", steps, "]");
}

namespace {

// Sorts the batch by length (longest first, stable) and lays out packed rows.
void plan_rows(Workspace& ws, const int* subset, int batch, int steps, const int32_t* lengths) {
  ws.batch = batch;
  ws.order.resize(static_cast<size_t>(batch));
  if (subset != nullptr)
    std::copy(subset, subset + batch, ws.order.begin());
  else
    std::iota(ws.order.begin(), ws.order.end(), 0);
  std::stable_sort(ws.order.begin(), ws.order.end(),
                   [&](int a, int b) { return lengths[a] > lengths[b]; });
  ws.lengths.resize(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) ws.lengths[static_cast<size_t>(i)] = lengths[ws.order[static_cast<size_t>(i)]];
  ws.steps = ws.lengths[0];
  ws.width = steps;
  ws.active.assign(static_cast<size_t>(ws.steps) + 1, 0);
  ws.offset.assign(static_cast<size_t>(ws.steps) + 1, 0);
  int n = batch;
  for (int t = 0; t < ws.steps; ++t) {
    while (n > 0 && ws.lengths[static_cast<size_t>(n) - 1] <= t) --n;
    ws.active[static_cast<size_t>(t)] = n;
    ws.offset[static_cast<size_t>(t) + 1] = ws.offset[static_cast<size_t>(t)] + n;
  }
  ws.rows = ws.offset[static_cast<size_t>(ws.steps)];
  ws.skip.assign(static_cast<size_t>(ws.rows), 0);
  ws.any_skip = false;
}

}  // namespace

void Engine::assign_slots(Workspace& ws, bool reuse) const {
  const int nl = static_cast<int>(desc_.layers.size());
  ws.last_use.assign(static_cast<size_t>(nl) + 1, -1);
  for (int l = 0; l < nl; ++l) {
    ws.last_use[static_cast<size_t>(l)] = std::max(ws.last_use[static_cast<size_t>(l)], l);
    const int r = desc_.layers[static_cast<size_t>(l)].residual_from;
    if (r != kNoResidual) ws.last_use[static_cast<size_t>(r) + 1] = l;
  }
  ws.last_use[static_cast<size_t>(nl)] = nl;  // the top stream lives to the readout
  // Stream s is written by layer s - 1 and read up to layer last_use[s]; with
  // layers run one after another, two streams may share a slot when those
  // intervals do not meet.
  ws.stream_slot.assign(static_cast<size_t>(nl) + 1, -1);
  std::vector<int> slot_free_after;  // per slot: last layer using it
  for (int st = 0; st <= nl; ++st) {
    const int writer = st - 1;
    int slot = -1;
    if (reuse)
      for (size_t k = 0; k < slot_free_after.size(); ++k)
        if (slot_free_after[k] < writer) {
          slot = static_cast<int>(k);
          break;
        }
    if (slot < 0) {
      slot = static_cast<int>(slot_free_after.size());
      slot_free_after.push_back(0);
      if (ws.slots.size() < slot_free_after.size()) ws.slots.emplace_back();
    }
    slot_free_after[static_cast<size_t>(slot)] = ws.last_use[static_cast<size_t>(st)];
    ws.stream_slot[static_cast<size_t>(st)] = slot;
    ws.slots[static_cast<size_t>(slot)].ensure(static_cast<std::size_t>(ws.rows) * desc_.stream_width(st - 1));
  }
}

Engine::Lease::Lease(const Engine& e) : engine_(e) {
  {
    std::lock_guard<std::mutex> lock(e.spare_mu_);
    if (!e.spare_.empty()) {
      ws_ = std::move(e.spare_.back());
      e.spare_.pop_back();
    }
  }
  if (!ws_) ws_ = std::make_unique<Workspace>();
}

Engine::Lease::~Lease() {
  std::lock_guard<std::mutex> lock(engine_.spare_mu_);
  // Keep a few workspaces for reuse; more than that were only needed by a
  // burst of concurrent calls and are released.
  if (engine_.spare_.size() < kMaxPooledWorkspaces) engine_.spare_.push_back(std::move(ws_));
}

void Engine::predict_tokens(const int64_t* tokens, int batch, int steps, const int32_t* lengths,
                            float* out, CallTrace* trace) const {
  const int E = desc_.input_width;
  execute(batch, steps, lengths, out, trace, [&](Workspace& ws, float* in) {
    ws.token.resize(static_cast<size_t>(ws.rows));
    for (int t = 0; t < ws.steps; ++t) {
      for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
        const int b = ws.order[static_cast<size_t>(i)];
        const int64_t tok = tokens[static_cast<std::size_t>(b) * steps + t];
        if (tok < 0 || tok >= desc_.vocab_size)
          throw std::invalid_argument(concat("token id ", tok, " at sequence ", b, ", step ", t,
                                             " is out of range for the vocabulary [0, ",
                                             desc_.vocab_size, ")"));
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        std::memcpy(in + row * E, embedding_.data() + static_cast<std::size_t>(tok) * E,
                    static_cast<std::size_t>(E) * sizeof(float));
        ws.token[static_cast<size_t>(row)] = static_cast<int32_t>(tok);
        if (desc_.mask_zero && tok == 0) {
          ws.skip[static_cast<size_t>(row)] = 1;
          ws.any_skip = true;
        }
      }
    }
  });
}

void Engine::predict_features(const float* x, int batch, int steps, const int32_t* lengths,
                              float* out, CallTrace* trace) const {
  const int F = desc_.input_width;
  execute(batch, steps, lengths, out, trace, [&](Workspace& ws, float* in) {
    for (int t = 0; t < ws.steps; ++t) {
      for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
        const int b = ws.order[static_cast<size_t>(i)];
        const float* src = x + (static_cast<std::size_t>(b) * steps + t) * F;
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        std::memcpy(in + row * F, src, static_cast<std::size_t>(F) * sizeof(float));
        if (desc_.has_mask_value) {
          bool all = true;
          for (int f = 0; f < F && all; ++f) all = src[f] == desc_.mask_value;
          if (all) {
            ws.skip[static_cast<size_t>(row)] = 1;
            ws.any_skip = true;
          }
        }
      }
    }
  });
}

void Engine::execute(int batch, int steps, const int32_t* lengths, float* out, CallTrace* trace,
                     const std::function<void(Workspace&, float*)>& fill) const {
  check_call(batch, steps, lengths);
  count(ScheduleStats::kCalls);
  std::unique_lock<std::mutex> pool_lock;
  int threads = 1;
  if (pool_) {
    pool_lock = pool_->try_lock();
    if (pool_lock.owns_lock()) threads = pool_->size();
  }
  // Returns how the rows ran (a shard's sub-call is not counted as a call).
  auto run_subset = [&](const int* subset, int n, CallTrace* tr, std::unique_lock<std::mutex> lock) {
    Lease lease(*this);
    Workspace& ws = lease.ws();
    plan_rows(ws, subset, n, steps, lengths);
    Call call = begin_call(ws, tr, std::move(lock));
    fill(ws, ws.stream(0));
    return run(ws, call, out);
  };
  if (threads > 1 && batch >= kShardRows * threads && trace == nullptr) {
    // Enough sequences: each thread takes a shard of the batch (balanced by
    // total steps) through the whole model as an independent sub-call, with
    // its own workspace: no hand-offs, and every block of a shard is one
    // contiguous gemm. A sequence's result does not depend on its shard.
    std::vector<int> sorted(static_cast<size_t>(batch));
    std::iota(sorted.begin(), sorted.end(), 0);
    std::stable_sort(sorted.begin(), sorted.end(), [&](int a, int b) { return lengths[a] > lengths[b]; });
    std::vector<int> sorted_lengths(static_cast<size_t>(batch));
    for (int i = 0; i < batch; ++i) sorted_lengths[static_cast<size_t>(i)] = lengths[sorted[static_cast<size_t>(i)]];
    // Shard k is sized for thread k's measured speed (see rebalance_shards).
    const std::vector<int> bounds = split_batch_weighted(sorted_lengths, shard_speed_, kShardRows);
    const int shards = static_cast<int>(bounds.size()) - 1;
    std::exception_ptr error;
    std::mutex error_mu;
    std::vector<ShardTiming> timing(static_cast<size_t>(threads));
    // Shards are claimed, not assigned: a thread takes its own shard, then any
    // left over, so a worker that wakes late never holds the call up.
    std::unique_ptr<std::atomic<int>[]> claimed(new std::atomic<int>[static_cast<size_t>(shards)]);
    for (int i = 0; i < shards; ++i) claimed[static_cast<size_t>(i)].store(0, std::memory_order_relaxed);
    pool_->run([&](int tid) {
      for (int k = 0; k < shards; ++k) {
        const int sh = (tid + k) % shards;
        if (claimed[static_cast<size_t>(sh)].exchange(1, std::memory_order_acq_rel) != 0) continue;
        const auto t0 = std::chrono::steady_clock::now();
        try {
          const int b0 = bounds[static_cast<size_t>(sh)], b1 = bounds[static_cast<size_t>(sh) + 1];
          run_subset(sorted.data() + b0, b1 - b0, nullptr, {});
          ShardTiming& tm = timing[static_cast<size_t>(tid)];
          for (int i = b0; i < b1; ++i) tm.steps += sorted_lengths[static_cast<size_t>(i)];
          tm.ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!error) error = std::current_exception();
        }
      }
    });
    if (error) std::rethrow_exception(error);
    rebalance_shards(timing);
    count(ScheduleStats::kShards);
    return;
  }
  count(run_subset(nullptr, batch, trace, std::move(pool_lock)));
}

namespace {
// Speeds relative to their mean, each held within [1/skew, skew], so that no
// thread's shard can shrink to nothing on one unlucky measurement.
void set_relative_speeds(const std::vector<double>& speeds, double skew, std::vector<double>* out) {
  double mean = 0;
  for (double v : speeds) mean += v / static_cast<double>(speeds.size());
  for (size_t k = 0; k < speeds.size(); ++k) (*out)[k] = std::min(skew, std::max(1.0 / skew, speeds[k] / mean));
}
}  // namespace

const char* ScheduleStats::name(int field) {
  static constexpr const char* kNames[kFields] = {"calls",      "one_thread",  "shards",   "wavefront", "split",
                                                  "split_late", "split_alone", "held_off", "backoffs"};
  return field >= 0 && field < kFields ? kNames[field] : "?";
}

ScheduleStats Engine::schedule_stats() const {
  ScheduleStats s;
  for (size_t f = 0; f < stats_.size(); ++f) s.counts[f] = stats_[f].load(std::memory_order_relaxed);
  return s;
}

std::vector<double> Engine::shard_speeds() const {
  if (!pool_) return {};
  const std::unique_lock<std::mutex> lock = pool_->try_lock();
  if (!lock.owns_lock()) throw std::runtime_error("the thread pool is in use by another call");
  return shard_speed_;
}

void Engine::set_shard_speeds(const std::vector<double>& speeds) const {
  if (static_cast<int>(speeds.size()) != (pool_ ? threads_ : 0))
    throw std::invalid_argument(concat("expected ", pool_ ? threads_ : 0, " shard speeds (one per pool thread), got ",
                                       speeds.size()));
  if (!pool_) return;
  for (double v : speeds)
    if (!(v > 0) || !std::isfinite(v))
      throw std::invalid_argument(concat("shard speeds must be finite and > 0, got ", v));
  const std::unique_lock<std::mutex> lock = pool_->try_lock();
  if (!lock.owns_lock()) throw std::runtime_error("the thread pool is in use by another call");
  set_relative_speeds(speeds, kMaxShardSkew, &shard_speed_);
}

void Engine::rebalance_shards(const std::vector<ShardTiming>& timing) const {
  // Cores of a shared machine run at different speeds for tens of
  // milliseconds at a time (another process, the host, a kernel thread on one
  // of them), and a call of even shards lasts as long as its slowest. Each
  // thread's next shard is sized by its speed over recent calls: half this
  // call's, half the earlier estimate, relative to the
  // threads' mean and kept within a factor kMaxShardSkew of it, so that one
  // unlucky call cannot starve a thread. Only calls every thread
  // took part in count (a thread that ran no shard was not measured).
  const size_t n = timing.size();
  std::vector<double> measured(n), blended(n);
  for (size_t k = 0; k < n; ++k) {
    if (timing[k].ns <= 0 || timing[k].steps <= 0) return;
    measured[k] = static_cast<double>(timing[k].steps) / static_cast<double>(timing[k].ns);
  }
  set_relative_speeds(measured, std::numeric_limits<double>::infinity(), &measured);
  for (size_t k = 0; k < n; ++k) blended[k] = 0.5 * shard_speed_[k] + 0.5 * measured[k];
  set_relative_speeds(blended, kMaxShardSkew, &shard_speed_);
}

Engine::Call Engine::begin_call(Workspace& ws, CallTrace* trace, std::unique_lock<std::mutex> pool_lock) const {
  Call call;
  ws.trace = trace != nullptr ? &trace->records : nullptr;
  ws.min_alone_units = trace != nullptr ? trace->min_alone_units : 0;
  call.pool_lock = std::move(pool_lock);
  const int threads = call.pool_lock.owns_lock() ? pool_->size() : 1;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch()).count();
  const bool held_off = threads > 1 && split_backoff_.held_off(now);
  if (held_off) count(ScheduleStats::kHeldOff);
  const bool may_split = !held_off && (trace == nullptr || trace->allow_split);
  if (ws.plan_steps != ws.steps || ws.plan_batch != ws.batch || ws.plan_threads != threads ||
      ws.plan_may_split != may_split) {
    // Split plans need unit slices aligned to gemm panels (and 0 disables them).
    ws.plan = make_plan(desc_, ws.steps, ws.lengths, threads,
                        !layers_.empty() && layers_[0].dirs[0].token_proj.size() != 0,
                        may_split ? kernels_->gemm_nr : 0);
    ws.plan_steps = ws.steps;
    ws.plan_batch = ws.batch;
    ws.plan_threads = threads;
    ws.plan_may_split = may_split;
  }
  call.plan = &ws.plan;
  const Plan& plan = ws.plan;
  if (plan.threads == 1 && call.pool_lock.owns_lock()) call.pool_lock.unlock();
  assign_slots(ws, plan.threads == 1);
  if (trace != nullptr) trace->plan = plan;

  std::size_t max_h = 1, max_p = 1, max_gh = 1;
  for (const LayerDesc& L : desc_.layers) {
    max_h = std::max<std::size_t>(max_h, static_cast<std::size_t>(L.units));
    max_p = std::max<std::size_t>(max_p, static_cast<std::size_t>(L.dir_width()));
    max_gh = std::max<std::size_t>(max_gh, static_cast<std::size_t>(L.gates()) * L.units);
  }
  const std::size_t B = static_cast<std::size_t>(ws.batch);
  ws.state.resize(2 * desc_.layers.size());
  for (size_t l = 0; l < desc_.layers.size(); ++l) {
    const LayerDesc& L = desc_.layers[l];
    for (int d = 0; d < L.dirs(); ++d) {
      Workspace::State& st = ws.state[2 * l + static_cast<size_t>(d)];
      for (int k = 0; k < 2; ++k) {
        st.h[k].ensure(B * static_cast<std::size_t>(L.dir_width()));
        st.c[k].ensure(B * static_cast<std::size_t>(L.units));
      }
    }
    if (L.dirs() == 2 && L.merge != Merge::kConcat)
      ws.merge_tmp.ensure(static_cast<std::size_t>(ws.rows) * max_p);
    if (plan.projected[l]) {
      ws.proj.resize(2 * desc_.layers.size());
      for (int d = 0; d < L.dirs(); ++d)
        ws.proj[2 * l + static_cast<size_t>(d)].ensure(static_cast<std::size_t>(ws.rows) * L.gates() * L.units);
    }
  }
  for (int d = 0; d < desc_.layers.back().dirs(); ++d) ws.final_state[d].ensure(B * max_p);
  // Largest row count one unit projects at once: a block of steps of one shard.
  int max_shard = 0;
  for (int s = 0; s < plan.shards(); ++s)
    max_shard = std::max(max_shard, plan.shard_begin[static_cast<size_t>(s) + 1] -
                                        plan.shard_begin[static_cast<size_t>(s)]);
  ws.scratch.resize(static_cast<size_t>(plan.threads));
  for (Workspace::Scratch& sc : ws.scratch) {
    sc.xproj.ensure(static_cast<std::size_t>(plan.block_steps) * max_shard * max_gh);
    sc.m.ensure(B * max_h);
    sc.gru.ensure(2 * B * max_h);
    sc.partial.ensure(B * kPartialFloatsPerRow);
    sc.hq.ensure(B * hq_floats_per_row(max_p));
  }
  return call;
}

ScheduleStats::Field Engine::run(Workspace& ws, Call& call, float* out) const {
  const Plan& plan = *call.plan;
  ScheduleStats::Field ran = ScheduleStats::kWavefront;
  if (plan.threads == 1) {
    ran = ScheduleStats::kOneThread;
    for (int i : plan.per_thread[0]) timed_unit(ws, plan, i, 0);
  } else if (plan.split > 1) {
    ran = run_split(ws, plan);
  } else {
    // Units hand rows to each other through `done` flags. A thread runs a
    // unit only after claiming it, so each unit runs exactly once, and which
    // thread runs it never changes its result. Threads take the units of
    // their own list in order (skipping those others claimed), then help with
    // whatever is unclaimed, in global order: a worker that wakes late (a
    // descheduled core in a VM can take a millisecond) costs nothing but its
    // help, and the call never waits for it to start.
    const size_t n = plan.units.size();
    std::unique_ptr<std::atomic<int>[]> done(new std::atomic<int>[n]);
    std::unique_ptr<std::atomic<int>[]> claimed(new std::atomic<int>[n]);
    for (size_t i = 0; i < n; ++i) {
      done[i].store(0, std::memory_order_relaxed);
      claimed[i].store(0, std::memory_order_relaxed);
    }
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mu;
    auto ready = [&](int i) {
      for (int d : plan.units[static_cast<size_t>(i)].deps)
        if (done[static_cast<size_t>(d)].load(std::memory_order_acquire) == 0) return false;
      return true;
    };
    // Waits until unit i can run or someone else claimed it; false if the call failed.
    auto wait_ready = [&](int i) {
      // The count saturates: a wait may outlast any int (a descheduled thread).
      for (int spin = 0; !ready(i); spin = std::min(spin + 1, kSpinBeforeYield)) {
        if (failed.load(std::memory_order_relaxed)) return false;
        if (claimed[static_cast<size_t>(i)].load(std::memory_order_relaxed) != 0) return true;
        if (spin < kSpinBeforeYield)
          cpu_relax();
        else
          std::this_thread::yield();
      }
      return true;
    };
    auto take = [&](int i, int tid) {
      if (claimed[static_cast<size_t>(i)].load(std::memory_order_relaxed) != 0) return;
      if (!wait_ready(i)) return;
      if (claimed[static_cast<size_t>(i)].exchange(1, std::memory_order_acq_rel) != 0) return;
      timed_unit(ws, plan, i, tid);
      done[static_cast<size_t>(i)].store(1, std::memory_order_release);
    };
    pool_->run([&](int tid) {
      if (tid >= plan.threads) return;  // the plan needs fewer threads than the pool has
      try {
        for (int i : plan.per_thread[static_cast<size_t>(tid)]) {
          if (failed.load(std::memory_order_relaxed)) return;
          take(i, tid);
        }
        for (int i = 0; i < static_cast<int>(n); ++i) {
          if (failed.load(std::memory_order_relaxed)) return;
          take(i, tid);
        }
      } catch (...) {
        // Never leave other threads waiting on a unit that will not finish.
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    });
    if (error) std::rethrow_exception(error);
  }
  call.pool_lock = {};  // the readout runs on this thread alone
  readout_and_head(ws, out);
  return ran;
}

ScheduleStats::Field Engine::run_split(Workspace& ws, const Plan& plan) const {
  // Every thread takes part in every step of a split unit, so the split can
  // only start once all have joined. Workers that are spinning join within
  // microseconds; one woken from sleep takes 0.1-2 ms on a VM (the host has
  // to run its virtual CPU again). So the caller waits briefly, then runs
  // units alone, whole width, and before each unit checks whether every
  // worker has arrived: from there on all run it split. A unit's bits are
  // the same either way, so where the switch falls changes nothing.
  const int n = plan.split;
  const int U = static_cast<int>(plan.units.size());
  const auto start = std::chrono::steady_clock::now();
  std::atomic<int> arrived{0};      // workers that reached this job
  std::atomic<int> split_from{-1};  // first unit run split (U: none); -1 undecided
  StepBarrier barrier(n);
  pool_->run([&](int tid) {
    if (tid >= n) return;
    int from;
    if (tid == 0) {
      const auto until = std::chrono::steady_clock::now() + kJoinWait;
      while (arrived.load(std::memory_order_acquire) < n - 1 && std::chrono::steady_clock::now() < until)
        cpu_relax();
      from = std::min(ws.min_alone_units, U);
      for (int i = 0; i < from; ++i) timed_unit(ws, plan, i, 0);
      while (from < U && arrived.load(std::memory_order_acquire) < n - 1) timed_unit(ws, plan, from++, 0);
      split_from.store(from, std::memory_order_release);
    } else {
      arrived.fetch_add(1, std::memory_order_acq_rel);
      // The caller decides at its next unit boundary (or when it is done).
      while ((from = split_from.load(std::memory_order_acquire)) < 0) cpu_relax();
    }
    if (from >= U) return;
    const Slice slice{tid, n, &barrier};
    for (int i = from; i < U; ++i) {
      const Unit& u = plan.units[static_cast<size_t>(i)];
      barrier.wait();  // the rows a unit reads were written by every thread (or the caller alone)
      if (u.kind == Unit::Kind::kDirection)
        run_direction(ws, plan, u, tid, &slice);
      else if (tid == 0)
        run_unit(ws, plan, u, 0);
    }
    barrier.wait();
  });
  // Threads kept waiting at step barriers for a large part of the call mean
  // another process holds a core: per-step hand-offs then lose to block
  // hand-offs. Several such calls in a row make calls use the wavefront for
  // a while. A passing interruption (a kernel thread, a hypervisor tick) is
  // a small part of a long call and costs every plan about the same; it
  // counts only against short calls, and only repeatedly.
  // Only calls split from the start are judged (a late join says nothing
  // about the barrier).
  const int from = split_from.load(std::memory_order_relaxed);
  if (from != 0) return from < U ? ScheduleStats::kSplitLate : ScheduleStats::kSplitAlone;
  const auto end = std::chrono::steady_clock::now();
  const int64_t end_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(end.time_since_epoch()).count();
  const int64_t call_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
  if (split_backoff_.judge(barrier.long_wait_ns(), call_ns, end_ns)) count(ScheduleStats::kBackoffs);
  return ScheduleStats::kSplit;
}

void Engine::timed_unit(Workspace& ws, const Plan& plan, int index, int tid) const {
  const Unit& u = plan.units[static_cast<size_t>(index)];
  if (ws.trace == nullptr) return run_unit(ws, plan, u, tid);
  using Clock = std::chrono::steady_clock;
  const int64_t start = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  run_unit(ws, plan, u, tid);
  const int64_t end = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lock(trace_mu_);
  ws.trace->push_back({index, tid, start, end});
}

void Engine::run_unit(Workspace& ws, const Plan& plan, const Unit& u, int tid) const {
  switch (u.kind) {
    case Unit::Kind::kFinish:
      return finish_block(ws, plan, u);
    case Unit::Kind::kProject:
      return project_block(ws, plan, u);
    case Unit::Kind::kDirection:
      return run_direction(ws, plan, u, tid, nullptr);
  }
}

void Engine::project_block(Workspace& ws, const Plan& plan, const Unit& u) const {
  // kProject plans have one shard (the whole batch): a block is one row range.
  const LayerDesc& L = desc_.layers[static_cast<size_t>(u.layer)];
  const DirWeights& dw = layers_[static_cast<size_t>(u.layer)].dirs[static_cast<size_t>(u.dir)];
  const int GH = L.gates() * L.units;
  const int in_w = desc_.stream_width(u.layer - 1);
  const int t_begin = plan.block_begin[static_cast<size_t>(u.block)];
  const int t_end = plan.block_begin[static_cast<size_t>(u.block) + 1];
  const int64_t r0 = ws.offset[static_cast<size_t>(t_begin)];
  kernels_->gemm(dw.wx.view, ws.stream(u.layer) + r0 * in_w, static_cast<std::size_t>(in_w),
                 static_cast<int>(ws.offset[static_cast<size_t>(t_end)] - r0),
                 ws.proj[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)].data() + r0 * GH,
                 static_cast<std::size_t>(GH));
}

void Engine::run_direction(Workspace& ws, const Plan& plan, const Unit& u, int tid,
                           const Slice* slice) const {
  const LayerDesc& L = desc_.layers[static_cast<size_t>(u.layer)];
  const DirWeights& dw = layers_[static_cast<size_t>(u.layer)].dirs[static_cast<size_t>(u.dir)];
  Workspace::State& st = ws.state[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)];
  Workspace::Scratch& sc = ws.scratch[static_cast<size_t>(tid)];
  const int H = L.units, P = L.dir_width(), GH = L.gates() * H;
  const int in_w = desc_.stream_width(u.layer - 1);
  const int s0 = plan.shard_begin[static_cast<size_t>(u.shard)];
  const int s1 = plan.shard_begin[static_cast<size_t>(u.shard) + 1];
  const int t_begin = plan.block_begin[static_cast<size_t>(u.block)];
  const int t_end = plan.block_begin[static_cast<size_t>(u.block) + 1];
  const bool top = u.layer + 1 == static_cast<int>(desc_.layers.size());
  // Hidden units this thread computes: all, or its slice of a split plan
  // (whose layers have no projection, so P == H, and align with gemm panels).
  const int u0 = slice != nullptr ? H / slice->count * slice->index : 0;
  const int u1 = slice != nullptr ? u0 + H / slice->count : H;
  const std::size_t slice_bytes = static_cast<std::size_t>(u1 - u0) * sizeof(float);

  if (u.first) {
    // Sequences start from a zero state. Rows that join later (backward
    // direction, shorter sequences) are still zero when they join, because a
    // row is only written while it is active.
    for (int k = 0; k < 2; ++k) {
      if (slice == nullptr) {
        std::memset(st.h[k].data() + s0 * P, 0, static_cast<std::size_t>(s1 - s0) * P * sizeof(float));
        std::memset(st.c[k].data() + s0 * H, 0, static_cast<std::size_t>(s1 - s0) * H * sizeof(float));
      } else {
        for (int r = s0; r < s1; ++r) {
          std::memset(st.h[k].data() + r * P + u0, 0, slice_bytes);
          std::memset(st.c[k].data() + r * H + u0, 0, slice_bytes);
        }
      }
    }
  }

  // Input projections of the block, row r of the block at xproj row r: plans
  // have one shard (large batches run as independent sub-calls), so the rows
  // of consecutive steps are contiguous and the block is one gemm.
  assert(s0 == 0 && s1 == ws.batch);
  const float* in = ws.stream(u.layer);
  const int64_t r0 = ws.offset[static_cast<size_t>(t_begin)];
  const int block_rows = static_cast<int>(ws.offset[static_cast<size_t>(t_end)] - r0);
  const bool projected = plan.projected[static_cast<size_t>(u.layer)];
  if (projected) {
    // Done by kProject units into ws.proj (read below).
  } else if (dw.token_proj.size() != 0) {
    const std::size_t bytes = static_cast<std::size_t>(GH) * sizeof(float);
    for (int i = 0; i < block_rows; ++i) {
      const float* src =
          dw.token_proj.data() + static_cast<std::size_t>(ws.token[static_cast<size_t>(r0 + i)]) * GH;
      float* dst = sc.xproj.data() + static_cast<std::size_t>(i) * GH;
      if (slice == nullptr) {
        std::memcpy(dst, src, bytes);
      } else {
        for (int g = 0; g < L.gates(); ++g) std::memcpy(dst + g * H + u0, src + g * H + u0, slice_bytes);
      }
    }
  } else if (slice != nullptr) {
    // This slice's columns of every gate block.
    for (int g = 0; g < L.gates(); ++g)
      kernels_->gemm(gemm_columns(dw.wx.view, g * H + u0, u1 - u0), in + r0 * in_w,
                     static_cast<std::size_t>(in_w), block_rows, sc.xproj.data() + g * H + u0,
                     static_cast<std::size_t>(GH));
  } else {
    kernels_->gemm(dw.wx.view, in + r0 * in_w, static_cast<std::size_t>(in_w), block_rows,
                   sc.xproj.data(), static_cast<std::size_t>(GH));
  }

  float* y_base;
  std::size_t ld_y;
  if (L.dirs() == 2 && L.merge != Merge::kConcat && u.dir == 1) {
    y_base = ws.merge_tmp.data();
    ld_y = static_cast<std::size_t>(max_width_p_);
  } else {
    y_base = ws.stream(u.layer + 1) + ((L.dirs() == 2 && L.merge == Merge::kConcat && u.dir == 1) ? P : 0);
    ld_y = static_cast<std::size_t>(L.out_width());
  }

  StepArgs a;
  a.w = &dw.wh.view;
  a.w2 = &dw.wh_n.view;
  a.ld_h = static_cast<std::size_t>(P);
  a.ld_xp = static_cast<std::size_t>(GH);
  a.b_hn = dw.b_hn.size() ? dw.b_hn.data() : nullptr;
  a.ld_c = static_cast<std::size_t>(H);
  a.scratch = sc.gru.data();
  a.partial = sc.partial.data();
  a.hq = sc.hq.data();
  a.act = L.act;
  a.ract = L.ract;
  a.tile_begin = u0 / kernels_->rec_tile;
  a.tile_end = slice != nullptr ? u1 / kernels_->rec_tile : -1;
  const bool proj = L.proj_size > 0;

  for (int s = 0; s < t_end - t_begin; ++s) {
    const int t = u.reverse ? t_end - 1 - s : t_begin + s;
    const int hi = std::min(s1, ws.active[static_cast<size_t>(t)]);
    const int n = hi - s0;
    if (slice != nullptr) slice->barrier->wait();  // every slice of the previous step is written
    if (n <= 0) continue;
    const int done_before = u.reverse ? ws.steps - 1 - t : t;  // steps this direction ran before t
    const int par = done_before & 1;
    float* h_prev = st.h[par].data() + s0 * P;
    float* h_next = st.h[1 - par].data() + s0 * P;
    float* c_prev = st.c[par].data() + s0 * H;
    float* c_next = st.c[1 - par].data() + s0 * H;
    const int64_t row0 = ws.offset[static_cast<size_t>(t)] + s0;
    float* y = y_base + row0 * static_cast<int64_t>(ld_y);
    a.n = n;
    a.h_prev = h_prev;
    if (projected)
      a.xp = ws.proj[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)].data() + row0 * GH;
    else
      a.xp = sc.xproj.data() + (row0 - r0) * GH;
    a.c_prev = c_prev;
    a.c_next = c_next;
    if (proj) {
      a.h_next = sc.m.data();
      a.ld_hn = static_cast<std::size_t>(H);
      a.y = nullptr;
    } else {
      a.h_next = h_next;
      a.ld_hn = static_cast<std::size_t>(P);
      a.y = y;
      a.ld_y = ld_y;
    }
    switch (L.cell) {
      case Cell::kLstm:
        kernels_->lstm_step(a);
        break;
      case Cell::kGru:
        (L.reset_after ? kernels_->gru_step : kernels_->gru_reset_before_step)(a);
        break;
      case Cell::kRnn:
        kernels_->rnn_step(a);
        break;
    }
    if (proj) {
      kernels_->gemm(dw.wr.view, sc.m.data(), static_cast<std::size_t>(H), n, h_next,
                     static_cast<std::size_t>(P));
      copy_rows(h_next, static_cast<std::size_t>(P), y, ld_y, n, P);
    }
    if (ws.any_skip) {
      // A masked step keeps the state and outputs zeros (docs/format.md).
      for (int i = 0; i < n; ++i) {
        if (!ws.skip[static_cast<size_t>(row0 + i)]) continue;
        if (slice == nullptr) {
          std::memcpy(h_next + i * P, h_prev + i * P, static_cast<std::size_t>(P) * sizeof(float));
          std::memcpy(c_next + i * H, c_prev + i * H, static_cast<std::size_t>(H) * sizeof(float));
          std::memset(y + i * static_cast<int64_t>(ld_y), 0, static_cast<std::size_t>(P) * sizeof(float));
        } else {
          std::memcpy(h_next + i * P + u0, h_prev + i * P + u0, slice_bytes);
          std::memcpy(c_next + i * H + u0, c_prev + i * H + u0, slice_bytes);
          std::memset(y + i * static_cast<int64_t>(ld_y) + u0, 0, slice_bytes);
        }
      }
    }
    if (top) {
      // Sequences whose reading ends at this step keep their final state.
      const int from = u.reverse ? (t == 0 ? s0 : hi) : std::max(s0, ws.active[static_cast<size_t>(t) + 1]);
      const int col = slice != nullptr ? u0 : 0;
      const int width = slice != nullptr ? u1 - u0 : P;
      if (from < hi)
        copy_rows(h_next + (from - s0) * P + col, static_cast<std::size_t>(P),
                  ws.final_state[u.dir].data() + from * P + col, static_cast<std::size_t>(P), hi - from,
                  width);
    }
  }
}

void Engine::finish_block(Workspace& ws, const Plan& plan, const Unit& u) const {
  const LayerDesc& L = desc_.layers[static_cast<size_t>(u.layer)];
  float* out = ws.stream(u.layer + 1);
  const int W = L.out_width();
  const bool merge = L.dirs() == 2 && L.merge != Merge::kConcat;
  const float* bwd = merge ? ws.merge_tmp.data() : nullptr;
  const float* src = L.residual_from != kNoResidual ? ws.stream(L.residual_from + 1) : nullptr;
  const int s0 = plan.shard_begin[static_cast<size_t>(u.shard)];
  const int s1 = plan.shard_begin[static_cast<size_t>(u.shard) + 1];
  const int t_begin = plan.block_begin[static_cast<size_t>(u.block)];
  const int t_end = plan.block_begin[static_cast<size_t>(u.block) + 1];
  for (int t = t_begin; t < t_end; ++t) {
    const int hi = std::min(s1, ws.active[static_cast<size_t>(t)]);
    for (int64_t r = ws.offset[static_cast<size_t>(t)] + s0; r < ws.offset[static_cast<size_t>(t)] + hi; ++r) {
      float* o = out + r * W;
      if (merge) {
        const float* b = bwd + r * max_width_p_;
        for (int j = 0; j < W; ++j) o[j] = merge_one(L.merge, o[j], b[j]);
      }
      if (src != nullptr && !ws.skip[static_cast<size_t>(r)])
        for (int j = 0; j < W; ++j) o[j] += src[r * W + j];
    }
  }
}

void Engine::dense_head(Workspace& ws, float* z, int rows, float* tmp) const {
  (void)ws;
  float* cur = z;
  float* other = tmp;
  int width = desc_.top_width();
  for (size_t j = 0; j < desc_.head.size(); ++j) {
    const DenseDesc& D = desc_.head[j];
    kernels_->gemm(head_[j].view, cur, static_cast<std::size_t>(width), rows, other,
                   static_cast<std::size_t>(D.units));
    if (D.act == Act::kSoftmax || D.act == Act::kLogSoftmax) {
      for (int r = 0; r < rows; ++r)
        row_softmax(other + static_cast<std::size_t>(r) * D.units, D.units, D.act == Act::kLogSoftmax);
    } else if (D.act != Act::kLinear) {
      kernels_->activate(D.act, other, rows * D.units);
    }
    std::swap(cur, other);
    width = D.units;
  }
  if (cur != z) std::memcpy(z, cur, static_cast<std::size_t>(rows) * width * sizeof(float));
}

void Engine::readout_and_head(Workspace& ws, float* out) const {
  const LayerDesc& top = desc_.layers.back();
  const int W = top.out_width();
  const int P = top.dir_width();
  const int OW = desc_.output_width();
  const int B = ws.batch;
  const float* seq = ws.stream(static_cast<int>(desc_.layers.size()));

  if (desc_.readout == Readout::kSequence) {
    const std::size_t rows = static_cast<std::size_t>(ws.rows);
    const std::size_t wmax = static_cast<std::size_t>(std::max(max_head_width_, W));
    AlignedBuffer& za = ws.head_a;
    AlignedBuffer& zb = ws.head_b;
    za.ensure(rows * wmax);
    zb.ensure(rows * wmax);
    copy_rows(seq, static_cast<std::size_t>(W), za.data(), static_cast<std::size_t>(W),
              static_cast<int>(rows), W);
    dense_head(ws, za.data(), static_cast<int>(rows), zb.data());
    const std::size_t T = static_cast<std::size_t>(ws.width);
    for (int i = 0; i < B; ++i)  // only this call's sequences: shards share `out`
      std::memset(out + static_cast<std::size_t>(ws.order[static_cast<size_t>(i)]) * T * OW, 0,
                  T * OW * sizeof(float));
    for (int t = 0; t < ws.steps; ++t)
      for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        if (ws.skip[static_cast<size_t>(row)]) continue;
        const int b = ws.order[static_cast<size_t>(i)];
        std::memcpy(out + (static_cast<std::size_t>(b) * T + t) * OW, za.data() + row * OW,
                    static_cast<std::size_t>(OW) * sizeof(float));
      }
    return;
  }

  const std::size_t wmax = static_cast<std::size_t>(std::max(max_head_width_, W));
  ws.head_a.ensure(static_cast<std::size_t>(B) * wmax);
  ws.head_b.ensure(static_cast<std::size_t>(B) * wmax);
  float* z = ws.head_a.data();
  if (desc_.readout == Readout::kLast) {
    const float* f0 = ws.final_state[0].data();
    if (top.dirs() == 1) {
      copy_rows(f0, static_cast<std::size_t>(P), z, static_cast<std::size_t>(W), B, P);
    } else {
      const float* f1 = ws.final_state[1].data();
      for (int i = 0; i < B; ++i)
        for (int j = 0; j < P; ++j) {
          const float a = f0[i * P + j], b = f1[i * P + j];
          if (top.merge == Merge::kConcat) {
            z[i * W + j] = a;
            z[i * W + P + j] = b;
          } else {
            z[i * W + j] = merge_one(top.merge, a, b);
          }
        }
    }
  } else {
    const bool mean = desc_.readout == Readout::kMean;
    std::vector<double> acc(static_cast<size_t>(W));
    for (int i = 0; i < B; ++i) {
      std::fill(acc.begin(), acc.end(), mean ? 0.0 : -std::numeric_limits<double>::infinity());
      int count = 0;
      for (int t = 0; t < ws.lengths[static_cast<size_t>(i)]; ++t) {
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        if (ws.skip[static_cast<size_t>(row)]) continue;
        ++count;
        const float* v = seq + row * W;
        for (int j = 0; j < W; ++j)
          acc[static_cast<size_t>(j)] = mean ? acc[static_cast<size_t>(j)] + v[j]
                                             : std::max<double>(acc[static_cast<size_t>(j)], v[j]);
      }
      for (int j = 0; j < W; ++j)
        z[i * W + j] = count == 0 ? 0.0f
                                  : static_cast<float>(mean ? acc[static_cast<size_t>(j)] / count
                                                            : acc[static_cast<size_t>(j)]);
    }
  }
  dense_head(ws, z, B, ws.head_b.data());
  for (int i = 0; i < B; ++i)
    std::memcpy(out + static_cast<std::size_t>(ws.order[static_cast<size_t>(i)]) * OW,
                z + static_cast<std::size_t>(i) * OW, static_cast<std::size_t>(OW) * sizeof(float));
}

}  // namespace rnninfer
