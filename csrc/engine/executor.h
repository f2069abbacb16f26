// The executor: runs a call's plan (scheduler.h) on the model's threads.
// oneDNN splits an RNN primitive into the part that orchestrates the cells
// and the cells themselves; here the cells are layer_exec.h and this is the
// orchestration: the batch split into shards sized by each thread's measured
// speed, the wavefront of units handed between threads, split plans with
// their back-off, the pool of per-call workspaces, and the counts of what
// ran. It owns everything about an Engine that changes after load, all of
// which are scheduling hints or scratch: none of it ever changes a result.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/function_ref.h"
#include "engine/layer_exec.h"
#include "engine/packed_model.h"
#include "engine/scheduler.h"
#include "engine/thread_pool.h"
#include "engine/workspace.h"

namespace rnninfer {

// How an engine's calls ran (Executor::schedule_stats).
struct ScheduleStats {
  enum Field {
    kCalls,        // calls (predict and stream feeds)
    kOneThread,    // ran on the calling thread alone (plan of one thread, or the pool was busy)
    kShards,       // batch shards, one per thread
    kWavefront,    // units of layers and directions spread over the threads
    kSplit,        // every layer's hidden units split, all threads from the first unit
    kSplitLate,    // split plans whose workers joined after the caller ran some units alone
    kSplitAlone,   // split plans whose workers never joined (the caller ran every unit)
    kHeldOff,      // calls planned without split plans because of a back-off
    kBackoffs,     // back-offs from split plans (threads held up at step barriers)
    kFields
  };
  std::array<int64_t, kFields> counts{};
  static const char* name(int field);
};

// What a traced call did: the plan and each unit's timing (benchmarks only).
struct CallTrace {
  Plan plan;
  std::vector<Workspace::TraceRecord> records;
  bool allow_split = true;  // false: plan this call without split plans (their units are not timed)
  int min_alone_units = 0;  // split plans: the caller runs at least this many units alone first (tests)
};

// Writes the model input rows of a (sub-)call into `in` (ws.stream(0), in
// the workspace's packed row order), and ws.token / ws.skip per row.
using FillFn = FunctionRef<void(Workspace&, float*)>;

class Executor {
 public:
  // Keeps a reference to `model` (its owner, the Engine, outlives it); makes
  // a pool of threads - 1 workers.
  Executor(const PackedModel& model, int threads);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs `batch` sequences of lengths[b] in [1, steps] steps: rows from
  // `fill`, results (and for streams the final states) to `io`.
  // std::invalid_argument on an empty batch or bad lengths.
  void execute(int batch, int steps, const int32_t* lengths, const CallIO& io, CallTrace* trace,
               FillFn fill) const;

  int threads() const { return threads_; }
  // Each pool thread's estimated relative speed for batch shards (about 1;
  // empty for one thread). A scheduling hint that never changes results;
  // tests set it to force uneven shards. Both throw std::runtime_error while
  // another call holds the pool, set_ std::invalid_argument on bad values.
  std::vector<double> shard_speeds() const;
  void set_shard_speeds(const std::vector<double>& speeds) const;
  // What the scheduler chose, counted over every call since load: for
  // benchmarks and for users asking why a call was slow. Never affects results.
  ScheduleStats schedule_stats() const;

 private:
  // Per-call scratch comes from a small pool so that a call allocates
  // nothing once the pool has warmed up: one hot workspace taken and given
  // back with an atomic exchange (calls one at a time, the usual case, never
  // lock), then spares guarded by spare_mu_.
  static constexpr size_t kMaxPooledWorkspaces = 8;
  class Lease {
   public:
    explicit Lease(const Executor& e);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Workspace& ws() { return *ws_; }

   private:
    const Executor& exec_;
    std::unique_ptr<Workspace> ws_;
  };

  // One call's plan, holding the thread pool if this call got it.
  struct Call {
    const Plan* plan = nullptr;  // owned by the workspace
    std::unique_lock<std::mutex> pool_lock;
  };
  // Spins on a dependency before yielding the core: a block hand-off is
  // normally a few microseconds away.
  static constexpr int kSpinBeforeYield = 2000;
  // Fewest sequences per thread for batch shards. A shard of fewer rows streams
  // all the weights for little arithmetic, and every thread doing that at once
  // contends for the shared cache: at 2 rows per shard two threads ran slower
  // than one (LSTM(256), batch 4: 0.64-0.95x), while the unit-graph and split
  // plans gave 1.5-1.9x. At 4 rows per shard shards win or tie.
  static constexpr int kShardRows = 4;
  // Shard sizing by measured thread speed (see rebalance_shards): no thread's
  // estimate strays further than this factor from the mean.
  static constexpr double kMaxShardSkew = 1.35;
  struct ShardTiming {
    int64_t ns = 0;     // time this thread spent running shards
    int64_t steps = 0;  // sequence steps in those shards
  };
  // How long a split call waits for its threads to join before it starts
  // running units alone (spinning workers join within a few microseconds).
  static constexpr std::chrono::microseconds kJoinWait{30};

  // One (sub-)call on the rows `subset` (nullptr: all of the batch) through
  // the whole model; returns which kind of plan ran.
  ScheduleStats::Field run_rows(const int* subset, int n, int steps, const int32_t* lengths,
                                const CallIO& io, CallTrace* trace, FillFn fill,
                                std::unique_lock<std::mutex> pool_lock) const;
  void run_shards(Workspace& top, int batch, int steps, const int32_t* lengths, const CallIO& io,
                  FillFn fill) const;
  void rebalance_shards(const std::vector<ShardTiming>& timing) const;
  void assign_slots(Workspace& ws, bool reuse) const;
  Call begin_call(Workspace& ws, CallTrace* trace, std::unique_lock<std::mutex> pool_lock) const;
  // Runs the call's plan, the readout and the state write-back.
  ScheduleStats::Field run(Workspace& ws, Call& call) const;
  ScheduleStats::Field run_units(Workspace& ws, const Plan& plan) const;
  ScheduleStats::Field run_split(Workspace& ws, const Plan& plan) const;
  void timed_unit(Workspace& ws, const Plan& plan, int index, int tid) const;
  void count(ScheduleStats::Field f) const { stats_[f].fetch_add(1, std::memory_order_relaxed); }

  const PackedModel& m_;
  int threads_;
  std::unique_ptr<ThreadPool> pool_;  // threads_ - 1 workers; nullptr for one thread
  // Scheduling hint only (never affects results): when split plans are avoided.
  mutable SplitBackoff split_backoff_;
  // What the scheduler did (ScheduleStats' fields, by index); never read by the scheduler itself.
  mutable std::array<std::atomic<int64_t>, ScheduleStats::kFields> stats_{};
  // Scheduling hint only: each pool thread's relative speed running batch
  // shards (about 1). Read and written only by the call holding the pool.
  mutable std::vector<double> shard_speed_;
  mutable std::mutex spare_mu_;
  mutable std::mutex trace_mu_;  // only taken when a call is traced
  mutable std::vector<std::unique_ptr<Workspace>> spare_;  // workspaces kept for reuse
  mutable std::atomic<Workspace*> hot_{nullptr};  // owned; see Lease
};

}  // namespace rnninfer
