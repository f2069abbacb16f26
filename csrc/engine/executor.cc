// The executor (executor.h): plans run on the model's threads.
#include "engine/executor.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <numeric>
#include <thread>

#include "engine/errors.h"

namespace rnninfer {
namespace {

// Sorts the batch by length (longest first; equal lengths keep their order,
// which a subset already has) and lays out packed rows. std::sort with the
// index as tie-break is a stable sort that needs no temporary buffer.
void plan_rows(Workspace& ws, const int* subset, int batch, int steps, const int32_t* lengths) {
  ws.batch = batch;
  ws.order.resize(static_cast<size_t>(batch));
  if (subset != nullptr) {
    std::copy(subset, subset + batch, ws.order.begin());
  } else {
    std::iota(ws.order.begin(), ws.order.end(), 0);
    std::sort(ws.order.begin(), ws.order.end(),
              [&](int a, int b) { return lengths[a] != lengths[b] ? lengths[a] > lengths[b] : a < b; });
  }
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

Executor::Executor(const PackedModel& model, int threads) : m_(model), threads_(threads) {
  check_arg(threads >= 1, "threads must be >= 1, got ", threads);
  if (threads_ > 1) {
    pool_ = std::make_unique<ThreadPool>(threads_);
    shard_speed_.assign(static_cast<size_t>(threads_), 1.0);
  }
}

void Executor::execute(int batch, int steps, const int32_t* lengths, const CallIO& io,
                       CallTrace* trace, FillFn fill) const {
  check_arg(batch > 0, "empty batch: no sequences to run");
  check_arg(steps > 0, "zero-length input: no steps to run");
  for (int b = 0; b < batch; ++b)
    check_arg(lengths[b] >= 1 && lengths[b] <= steps, "lengths[", b, "] = ", lengths[b],
              " is outside [1, ", steps, "]");
  count(ScheduleStats::kCalls);
  std::unique_lock<std::mutex> pool_lock;
  int threads = 1;
  if (pool_) {
    pool_lock = pool_->try_lock();
    if (pool_lock.owns_lock()) threads = pool_->size();
  }
  if (threads > 1 && batch >= kShardRows * threads && trace == nullptr) {
    Lease lease(*this);
    run_shards(lease.ws(), batch, steps, lengths, io, fill);
    count(ScheduleStats::kShards);
    return;
  }
  count(run_rows(nullptr, batch, steps, lengths, io, trace, fill, std::move(pool_lock)));
}

ScheduleStats::Field Executor::run_rows(const int* subset, int n, int steps, const int32_t* lengths,
                                        const CallIO& io, CallTrace* trace, FillFn fill,
                                        std::unique_lock<std::mutex> pool_lock) const {
  Lease lease(*this);
  Workspace& ws = lease.ws();
  ws.io = &io;
  plan_rows(ws, subset, n, steps, lengths);
  Call call = begin_call(ws, trace, std::move(pool_lock));
  fill(ws, ws.stream(0));
  return run(ws, call);
}

void Executor::run_shards(Workspace& top, int batch, int steps, const int32_t* lengths,
                          const CallIO& io, FillFn fill) const {
  // Enough sequences: each thread takes a shard of the batch (balanced by
  // total steps) through the whole model as an independent sub-call, with
  // its own workspace: no hand-offs, and every block of a shard is one
  // contiguous gemm. A sequence's result does not depend on its shard.
  // `top` (the call's own workspace) holds the sorted batch.
  const int threads = pool_->size();
  std::vector<int>& sorted = top.order;
  sorted.resize(static_cast<size_t>(batch));
  std::iota(sorted.begin(), sorted.end(), 0);
  std::sort(sorted.begin(), sorted.end(),
            [&](int a, int b) { return lengths[a] != lengths[b] ? lengths[a] > lengths[b] : a < b; });
  std::vector<int>& sorted_lengths = top.lengths;
  sorted_lengths.resize(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) sorted_lengths[static_cast<size_t>(i)] = lengths[sorted[static_cast<size_t>(i)]];
  // Shard k is sized for thread k's measured speed (see rebalance_shards).
  const std::vector<int> bounds = split_batch_weighted(sorted_lengths, shard_speed_, kShardRows);
  const int shards = static_cast<int>(bounds.size()) - 1;
  std::exception_ptr error;
  std::mutex error_mu;
  std::vector<ShardTiming> timing(static_cast<size_t>(threads));
  // Shards are claimed, not assigned: a thread takes its own shard, then any
  // left over, so a worker that wakes late never holds the call up.
  top.ensure_flags(static_cast<size_t>(shards));
  std::atomic<int>* claimed = top.flags.get();
  for (int i = 0; i < shards; ++i) claimed[i].store(0, std::memory_order_relaxed);
  pool_->run([&](int tid) {
    for (int k = 0; k < shards; ++k) {
      const int sh = (tid + k) % shards;
      if (claimed[sh].exchange(1, std::memory_order_acq_rel) != 0) continue;
      const auto t0 = std::chrono::steady_clock::now();
      try {
        const int b0 = bounds[static_cast<size_t>(sh)], b1 = bounds[static_cast<size_t>(sh) + 1];
        run_rows(sorted.data() + b0, b1 - b0, steps, lengths, io, nullptr, fill, {});
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

ScheduleStats Executor::schedule_stats() const {
  ScheduleStats s;
  for (size_t f = 0; f < stats_.size(); ++f) s.counts[f] = stats_[f].load(std::memory_order_relaxed);
  return s;
}

std::vector<double> Executor::shard_speeds() const {
  if (!pool_) return {};
  const std::unique_lock<std::mutex> lock = pool_->try_lock();
  if (!lock.owns_lock()) throw std::runtime_error("the thread pool is in use by another call");
  return shard_speed_;
}

void Executor::set_shard_speeds(const std::vector<double>& speeds) const {
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

void Executor::rebalance_shards(const std::vector<ShardTiming>& timing) const {
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

void Executor::assign_slots(Workspace& ws, bool reuse) const {
  const int nl = static_cast<int>(m_.desc.layers.size());
  ws.last_use.assign(static_cast<size_t>(nl) + 1, -1);
  for (int l = 0; l < nl; ++l) {
    ws.last_use[static_cast<size_t>(l)] = std::max(ws.last_use[static_cast<size_t>(l)], l);
    const int r = m_.desc.layers[static_cast<size_t>(l)].residual_from;
    if (r != kNoResidual) ws.last_use[static_cast<size_t>(r) + 1] = l;
  }
  ws.last_use[static_cast<size_t>(nl)] = nl;  // the top stream lives to the readout
  // Stream s is written by layer s - 1 and read up to layer last_use[s]; with
  // layers run one after another, two streams may share a slot when those
  // intervals do not meet.
  ws.stream_slot.assign(static_cast<size_t>(nl) + 1, -1);
  std::vector<int>& slot_free_after = ws.slot_free_after;  // per slot: last layer using it
  slot_free_after.clear();
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
    ws.slots[static_cast<size_t>(slot)].ensure(static_cast<std::size_t>(ws.rows) * m_.desc.stream_width(st - 1));
  }
}

Executor::~Executor() { delete hot_.load(std::memory_order_acquire); }

Executor::Lease::Lease(const Executor& e) : exec_(e) {
  // The common case (one call at a time) takes the hot workspace without a lock.
  ws_.reset(e.hot_.exchange(nullptr, std::memory_order_acquire));
  if (!ws_) {
    std::lock_guard<std::mutex> lock(e.spare_mu_);
    if (!e.spare_.empty()) {
      ws_ = std::move(e.spare_.back());
      e.spare_.pop_back();
    }
  }
  if (!ws_) ws_ = std::make_unique<Workspace>();
}

Executor::Lease::~Lease() {
  Workspace* empty = nullptr;
  if (exec_.hot_.compare_exchange_strong(empty, ws_.get(), std::memory_order_acq_rel)) {
    (void)ws_.release();  // now owned by hot_
    return;
  }
  std::lock_guard<std::mutex> lock(exec_.spare_mu_);
  // Keep a few workspaces for reuse; more than that were only needed by a
  // burst of concurrent calls and are released.
  if (exec_.spare_.size() < kMaxPooledWorkspaces) exec_.spare_.push_back(std::move(ws_));
}

Executor::Call Executor::begin_call(Workspace& ws, CallTrace* trace, std::unique_lock<std::mutex> pool_lock) const {
  Call call;
  ws.trace = trace != nullptr ? &trace->records : nullptr;
  ws.min_alone_units = trace != nullptr ? trace->min_alone_units : 0;
  call.pool_lock = std::move(pool_lock);
  const int threads = call.pool_lock.owns_lock() ? pool_->size() : 1;
  // The clock is read only when a back-off could matter (a one-thread feed
  // is a few microseconds, and a clock read a noticeable part of it).
  const bool held_off =
      threads > 1 && split_backoff_.held_off(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                 std::chrono::steady_clock::now().time_since_epoch())
                                                 .count());
  if (held_off) count(ScheduleStats::kHeldOff);
  const bool may_split = !held_off && (trace == nullptr || trace->allow_split);
  if (ws.plan_steps != ws.steps || ws.plan_batch != ws.batch || ws.plan_threads != threads ||
      ws.plan_may_split != may_split) {
    // Split plans need unit slices aligned to gemm panels (and 0 disables them).
    ws.plan = make_plan(m_.desc, ws.steps, ws.lengths, threads, m_.gather_first(),
                        may_split ? m_.kernels->gemm_nr : 0);
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
  for (const LayerDesc& L : m_.desc.layers) {
    max_h = std::max<std::size_t>(max_h, static_cast<std::size_t>(L.units));
    max_p = std::max<std::size_t>(max_p, static_cast<std::size_t>(L.dir_width()));
    max_gh = std::max<std::size_t>(max_gh, static_cast<std::size_t>(L.gates()) * L.units);
  }
  const std::size_t B = static_cast<std::size_t>(ws.batch);
  ws.state.resize(2 * m_.desc.layers.size());
  for (size_t l = 0; l < m_.desc.layers.size(); ++l) {
    const LayerDesc& L = m_.desc.layers[l];
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
      ws.proj.resize(2 * m_.desc.layers.size());
      for (int d = 0; d < L.dirs(); ++d)
        ws.proj[2 * l + static_cast<size_t>(d)].ensure(static_cast<std::size_t>(ws.rows) * L.gates() * L.units);
    }
  }
  for (int d = 0; d < m_.desc.layers.back().dirs(); ++d) ws.final_state[d].ensure(B * max_p);
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

ScheduleStats::Field Executor::run(Workspace& ws, Call& call) const {
  const Plan& plan = *call.plan;
  ScheduleStats::Field ran = ScheduleStats::kOneThread;
  if (plan.threads == 1) {
    for (int i : plan.per_thread[0]) timed_unit(ws, plan, i, 0);
  } else if (plan.split > 1) {
    ran = run_split(ws, plan);
  } else {
    ran = run_units(ws, plan);
  }
  call.pool_lock = {};  // the readout runs on this thread alone
  readout_and_head(m_, ws);
  write_states(m_, ws);
  return ran;
}

ScheduleStats::Field Executor::run_units(Workspace& ws, const Plan& plan) const {
  // Units hand rows to each other through `done` flags. A thread runs a
  // unit only after claiming it, so each unit runs exactly once, and which
  // thread runs it never changes its result. Threads take the units of
  // their own list in order (skipping those others claimed), then help with
  // whatever is unclaimed, in global order: a worker that wakes late (a
  // descheduled core in a VM can take a millisecond) costs nothing but its
  // help, and the call never waits for it to start.
  const size_t n = plan.units.size();
  ws.ensure_flags(2 * n);
  std::atomic<int>* done = ws.flags.get();
  std::atomic<int>* claimed = done + n;
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
  return ScheduleStats::kWavefront;
}

ScheduleStats::Field Executor::run_split(Workspace& ws, const Plan& plan) const {
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
      // The caller loads every layer's starting state, whole, while the
      // workers are still joining (it would only spin meanwhile). The release
      // of split_from below hands these rows to the workers, together with
      // every unit the caller runs alone: the first split unit and the first
      // step of each layer then need no barrier (a one-token feed crosses
      // one step barrier, between its layers). A unit run alone loads its
      // state again: the same values, before any of its steps.
      for (int i = 0; i < U; ++i) {
        const Unit& u = plan.units[static_cast<size_t>(i)];
        if (u.kind == Unit::Kind::kDirection && u.first) init_state(m_, ws, plan, u, nullptr);
      }
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
    const Slice slice{tid, n, &barrier, true};
    for (int i = from; i < U; ++i) {
      const Unit& u = plan.units[static_cast<size_t>(i)];
      // The rows a unit reads were written by every thread (the first: by the caller, see above).
      if (i > from) barrier.wait();
      if (u.kind == Unit::Kind::kDirection)
        run_direction(m_, ws, plan, u, tid, &slice);
      else if (tid == 0)
        run_unit(m_, ws, plan, u, 0);
    }
    // Only the caller waits for the others to finish (it reads their rows
    // next); a worker leaves as soon as it is done, and the pool's run()
    // returns once it has.
    if (tid == 0)
      barrier.wait();
    else
      barrier.arrive();
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

void Executor::timed_unit(Workspace& ws, const Plan& plan, int index, int tid) const {
  const Unit& u = plan.units[static_cast<size_t>(index)];
  if (ws.trace == nullptr) return run_unit(m_, ws, plan, u, tid);
  using Clock = std::chrono::steady_clock;
  const int64_t start = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  run_unit(m_, ws, plan, u, tid);
  const int64_t end = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  std::lock_guard<std::mutex> lock(trace_mu_);
  ws.trace->push_back({index, tid, start, end});
}

}  // namespace rnninfer
