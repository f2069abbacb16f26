// The scheduler: a call's work as a graph of units, statically assigned to
// threads, each thread running its units in one global topological order.
//
// Units:
//   kDirection (layer, dir, block, shard): input projection of a block of
//     steps (one gemm) then the steps of that block, for the sequences of one
//     batch shard, in the direction's reading order;
//   kFinish (layer, block, shard): what needs both directions of a block or
//     an earlier layer's rows: the merge of a bidirectional layer (sum, mul,
//     ave) and the residual add;
//   kProject (layer, dir, block, shard), wavefront plans only: the input
//     projection of a block, done by the thread that produced its rows (the
//     layer below), so the thread running the recurrence only streams its
//     recurrent weights and the two sides of a hand-off carry similar work.
// Dependencies: a direction's previous block (the recurrence); the rows the
// unit reads from the layer below (the same block of a forward-only layer,
// which gives the layer-major wavefront: layer l works on block k while
// layer l+1 works on block k-1; every block of a layer read backwards).
// Deadlock freedom: every thread runs its units in the same global
// topological order, so the earliest unfinished unit can always run.
// Determinism: units only decide *when* rows are computed, never how; a
// row's arithmetic is the same under every plan and thread count.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/model_desc.h"

namespace rnninfer {

struct Unit {
  enum class Kind { kDirection, kFinish, kProject };
  Kind kind = Kind::kDirection;
  int layer = 0;
  int dir = 0;       // kDirection: 0 forward half (or the only one), 1 backward half
  bool reverse = false;
  int block = 0;     // time block index: steps [block_begin[block], block_begin[block + 1])
  int first = 0;     // kDirection: true on the direction's first block (state starts at 0)
  int shard = 0;
  int thread = 0;
  std::vector<int> deps;  // indices of units that must be done first
};

struct Plan {
  int threads = 1;
  int block_steps = 16;            // the longest block
  int blocks = 0;
  std::vector<int> block_begin;    // blocks + 1 step boundaries
  std::vector<int> shard_begin;  // sorted-batch row ranges [shard_begin[s], shard_begin[s + 1])
  std::vector<Unit> units;       // in global topological order
  std::vector<std::vector<int>> per_thread;  // unit indices, each in global order
  bool wavefront = false;
  // > 1: every unit is run by this many threads together, each on its own
  // slice of the layer's hidden units, meeting at a barrier every step.
  int split = 1;
  std::vector<bool> projected;  // per layer: its input projections are kProject units

  int shards() const { return static_cast<int>(shard_begin.size()) - 1; }
};

// Steps per block for one thread: enough rows for the gemm's register tile to
// be busy at batch 1, few enough that a block's projections stay in L2.
constexpr int kTimeBlock = 16;
// Large batches: blocks short enough that their projections stay in L2
// (kBlockProjectionBytes), when that leaves at least kMinBlockSteps steps, so
// that each block still amortises streaming the input weights over several.
constexpr std::size_t kBlockProjectionBytes = std::size_t{256} << 10;
constexpr int kMinBlockSteps = 4;

// Plans a call. `lengths` are the sequence lengths sorted longest first;
// `threads` the threads available for this call.
// `gather_first`: the first layer's projections are table lookups, not a gemm.
// `split_align`: hidden units per thread must be a multiple of this (the gemm
// panel width) for threads to split layers' units among them.
Plan make_plan(const ModelDesc& desc, int steps, const std::vector<int>& lengths, int threads,
               bool gather_first, int split_align);

// Batch shards, contiguous in the given (longest-first) order, whose work
// (sum of lengths) is in proportion to `speeds` (one positive value per
// shard: the measured speed of the thread that will run it; equal speeds give
// balanced work), each of at least `min_rows` sequences where the batch
// allows it: min(speeds.size(), lengths.size()) + 1 boundaries, each where
// the running work is nearest its target.
std::vector<int> split_batch_weighted(const std::vector<int>& lengths, const std::vector<double>& speeds,
                                      int min_rows);

// When calls avoid split plans. A split call whose threads together spent
// over a quarter of it in long barrier waits (a core held by another process
// or by the host) is a strike; kStrikes in a row begin a back-off of
// kBackoffCalls times the last call's duration, doubled for each back-off
// since the last clean split call, up to kMaxBackoffNs. Measured in calls
// rather than fixed time: a core held for a moment (a burst of another
// process, the host stealing a virtual CPU) costs a few calls of another plan,
// one held for good settles at the cap after a few doublings, each costing
// kStrikes slow calls. A scheduling hint shared by concurrent calls (relaxed
// atomics; a lost update costs nothing but timing), never affecting results.
class SplitBackoff {
 public:
  static constexpr int kStrikes = 3;
  static constexpr int64_t kBackoffCalls = 16;
  static constexpr int64_t kMaxBackoffNs = int64_t{2} * 1000 * 1000 * 1000;

  // Whether split plans are held off at time now_ns (steady clock).
  bool held_off(int64_t now_ns) const { return now_ns < until_ns_.load(std::memory_order_relaxed); }
  // Judges a split call that ran on every thread from its first unit; true if
  // it began a back-off.
  bool judge(int64_t long_wait_ns, int64_t call_ns, int64_t end_ns);
  int64_t until_ns() const { return until_ns_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> until_ns_{0};
  std::atomic<int> strikes_{0};   // held-up split calls in a row
  std::atomic<int> doublings_{0};  // back-offs since the last clean split call (capped)
};

// Whether layer l needs kFinish units (merge of two directions, or residual).
bool needs_finish(const LayerDesc& layer);

}  // namespace rnninfer
