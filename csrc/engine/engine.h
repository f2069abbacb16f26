// Engine: a model's packed weights and the predict() entry points.
//
// Immutable after construction: predict() is const, keeps all per-call state
// in a Workspace of its own, and so may run from many threads at once.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/model_desc.h"
#include "engine/packing.h"
#include "engine/scheduler.h"
#include "engine/thread_pool.h"
#include "engine/workspace.h"
#include "kernels/kernels.h"

namespace rnninfer {

// One named tensor. Only w_ih and w_hh may be reduced (bf16 bit patterns as
// uint16, or int8 with a float32 "<name>_scale" tensor of one scale per row);
// everything else is float32.
struct TensorView {
  const void* data = nullptr;
  std::vector<int64_t> shape;
  WType dtype = WType::kF32;
};
using TensorMap = std::map<std::string, TensorView>;

// Packed weights of one direction of one layer.
struct DirWeights {
  GemmWeights wx;   // input projection, N = G*H, biases outside the reset gate folded in
  RecWeights wh;    // recurrent weights (GRU reset-before: r and z only)
  RecWeights wh_n;  // GRU reset-before: candidate gate
  AlignedBuffer b_hn;  // GRU reset-after: recurrent candidate bias
  GemmWeights wr;   // LSTM projection (P x H)
  // First layer of a token model: the input projection of every vocabulary
  // entry (vocab x G*H), so a step's projection is a row lookup instead of a
  // gemm. Computed by the same gemm kernel, so the bits are the same.
  AlignedBuffer token_proj;
};

struct LayerWeights {
  std::vector<DirWeights> dirs;
};


// How an engine's calls ran (Engine::schedule_stats).
struct ScheduleStats {
  enum Field {
    kCalls,        // predict calls
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

class Engine {
 public:
  // Validates desc and every tensor's presence and shape (std::invalid_argument),
  // then packs the weights for `kernels` (nullptr = the process default).
  Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels);

  // tokens: B x T row-major, ids checked in [0, vocab) (std::invalid_argument
  // naming the sequence and step otherwise); lengths: B values in [1, T].
  // out: B * T * out_width (readout "sequence") or B * out_width floats.
  void predict_tokens(const int64_t* tokens, int batch, int steps, const int32_t* lengths,
                      float* out, CallTrace* trace = nullptr) const;
  // x: B x T x F row-major float32.
  void predict_features(const float* x, int batch, int steps, const int32_t* lengths,
                        float* out, CallTrace* trace = nullptr) const;

  const ModelDesc& desc() const { return desc_; }
  const KernelTable& kernels() const { return *kernels_; }
  int threads() const { return threads_; }
  // What the recurrent products multiply the weights with: "fp32" (the
  // widen-in-registers kernels), or "bf16" / "int8" when the packed layout is
  // one of the dot-product kernels' (activations rounded/quantised per row and
  // step; the table's gemm does the same to the inputs of the projections).
  const char* recurrent_activations() const;
  // Each pool thread's estimated relative speed for batch shards (about 1;
  // empty for one thread). A scheduling hint that never changes results;
  // tests set it to force uneven shards. Both throw std::runtime_error while
  // another call holds the pool, set_ std::invalid_argument on bad values.
  std::vector<double> shard_speeds() const;
  void set_shard_speeds(const std::vector<double>& speeds) const;
  // What the scheduler chose, counted over every call since load: for
  // benchmarks and for users asking why a call was slow. Never affects results.
  ScheduleStats schedule_stats() const;
  // Floats of output per sequence for a padded width of `steps`.
  int64_t output_size(int steps) const;

 private:
  // Per-call scratch comes from a small pool so that a call allocates
  // nothing once the pool has warmed up; the pool is the engine's only
  // mutable state besides the thread pool and is guarded by spare_mu_.
  static constexpr size_t kMaxPooledWorkspaces = 8;
  class Lease {
   public:
    explicit Lease(const Engine& e);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Workspace& ws() { return *ws_; }

   private:
    const Engine& engine_;
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
  // StepArgs::partial per row: up to 4 gates x 16 lanes (the widest ISA).
  static constexpr std::size_t kPartialFloatsPerRow = 4 * 16;
  // Budget for the first layer's per-token projection table; larger
  // vocabularies keep the gemm (the table would not stay in cache anyway).
  static constexpr std::size_t kMaxTokenProjectionBytes = std::size_t{256} << 20;

  void check_call(int batch, int steps, const int32_t* lengths) const;
  void assign_slots(Workspace& ws, bool reuse) const;
  Call begin_call(Workspace& ws, CallTrace* trace, std::unique_lock<std::mutex> pool_lock) const;
  void execute(int batch, int steps, const int32_t* lengths, float* out, CallTrace* trace,
               const std::function<void(Workspace&, float*)>& fill) const;
  // Runs the call's plan and the readout; returns which kind of plan ran.
  ScheduleStats::Field run(Workspace& ws, Call& call, float* out) const;
  void run_unit(Workspace& ws, const Plan& plan, const Unit& u, int tid) const;
  void timed_unit(Workspace& ws, const Plan& plan, int index, int tid) const;
  // One thread's share of a split plan: hidden units [H*index/count, H*(index+1)/count).
  struct Slice {
    int index, count;
    StepBarrier* barrier;
  };
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
  void rebalance_shards(const std::vector<ShardTiming>& timing) const;
  // How long a split call waits for its threads to join before it starts
  // running units alone (spinning workers join within a few microseconds).
  static constexpr std::chrono::microseconds kJoinWait{30};

  ScheduleStats::Field run_split(Workspace& ws, const Plan& plan) const;
  void run_direction(Workspace& ws, const Plan& plan, const Unit& u, int tid, const Slice* slice) const;
  void finish_block(Workspace& ws, const Plan& plan, const Unit& u) const;
  void project_block(Workspace& ws, const Plan& plan, const Unit& u) const;
  void readout_and_head(Workspace& ws, float* out) const;
  void dense_head(Workspace& ws, float* z, int rows, float* tmp) const;

  ModelDesc desc_;
  const KernelTable* kernels_;
  int threads_;
  AlignedBuffer embedding_;  // vocab x input_width
  std::vector<LayerWeights> layers_;
  std::vector<GemmWeights> head_;
  int max_head_width_ = 0;
  int max_width_p_ = 0;
  std::unique_ptr<ThreadPool> pool_;  // threads_ - 1 workers; nullptr for one thread
  // Scheduling hint only (never affects results): when split plans are avoided.
  mutable SplitBackoff split_backoff_;
  // What the scheduler did (ScheduleStats' fields, by index); never read by the scheduler itself.
  mutable std::array<std::atomic<int64_t>, ScheduleStats::kFields> stats_{};
  void count(ScheduleStats::Field f) const { stats_[f].fetch_add(1, std::memory_order_relaxed); }
  // Scheduling hint only: each pool thread's relative speed running batch
  // shards (about 1). Read and written only by the call holding the pool.
  mutable std::vector<double> shard_speed_;
  mutable std::mutex spare_mu_;
  mutable std::mutex trace_mu_;  // only taken when a call is traced
  mutable std::vector<std::unique_ptr<Workspace>> spare_;  // workspaces kept for reuse
};

}  // namespace rnninfer
