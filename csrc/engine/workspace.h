// Per-call scratch, sized once before any layer runs; nothing in the step
// loops allocates, and a warmed-up engine allocates nothing per call (the
// Engine keeps a small pool of these). Rows are kept in PyTorch's
// packed-sequence order: the batch is sorted by length (longest first,
// stable), and the rows of step t are the n_t sequences still running at t,
// stored contiguously after those of step t-1. A block of steps is then one
// contiguous row range (one gemm), and the sequences active at a step are
// always a prefix of the state rows.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/aligned.h"
#include "engine/scheduler.h"

namespace rnninfer {

struct CallIO;

struct Workspace {
  const CallIO* io = nullptr;      // the call's outputs and stream states (layer_exec.h)
  int batch = 0;
  int steps = 0;                   // longest sequence
  int width = 0;                   // padded width of the caller's arrays
  int64_t rows = 0;                // sum of lengths
  std::vector<int> order;          // sorted position -> original batch index
  std::vector<int> lengths;        // by sorted position
  std::vector<int> active;         // n_t, t in [0, steps], n_steps = 0
  std::vector<int64_t> offset;     // first packed row of step t, t in [0, steps]
  std::vector<uint8_t> skip;       // per packed row: masked step (state carried)
  std::vector<int32_t> token;      // per packed row: token id (token models)
  bool any_skip = false;

  // Layer outputs: stream s ([0] model input, [i + 1] output of layer i) lives
  // in slots[stream_slot[s]]. A single-threaded call reuses a slot once the
  // last layer reading its stream is done (a plain stack needs two slots at
  // any depth); a multi-threaded call gives every stream its own slot,
  // since layers then run concurrently.
  std::vector<AlignedBuffer> slots;
  std::vector<int> stream_slot;
  std::vector<int> last_use;       // last layer reading each stream
  float* stream(int s) { return slots[static_cast<size_t>(stream_slot[static_cast<size_t>(s)])].data(); }

  // Recurrent state of each (layer, direction): double-buffered h and c for
  // every sequence. Step t of a direction reads buffer (steps done before t) % 2
  // and writes the other, so no shared "current" flag is needed.
  struct State {
    AlignedBuffer h[2], c[2];
  };
  std::vector<State> state;         // [layer * 2 + dir]
  std::vector<AlignedBuffer> proj;  // [layer * 2 + dir]: all rows' projections (kProject plans)
  AlignedBuffer merge_tmp;          // backward halves for sum/mul/ave merges, row stride max_p
  AlignedBuffer final_state[2];     // top layer: h after each sequence's last step, per direction

  // Scratch owned by one thread while it runs a unit.
  struct Scratch {
    AlignedBuffer xproj;        // input projections of one block of steps
    AlignedBuffer m;            // LSTM projection input o*act(c)
    AlignedBuffer gru;          // GRU reset-before: z and r*h
    AlignedBuffer partial;      // chunked recurrent products: 4 gates x 16 lanes per row
    AlignedBuffer hq;           // dot-product steps: one step's activations as bf16/u8
  };
  std::vector<Scratch> scratch;     // [thread]

  AlignedBuffer head_a, head_b;     // readout and head activations
  std::vector<double> pool_acc;     // mean/max readout: one row's running pool
  std::vector<int> slot_free_after;  // assign_slots: per slot, the last layer using it

  // Done/claimed flags of a multi-threaded call's units or shards.
  std::unique_ptr<std::atomic<int>[]> flags;
  std::size_t flag_count = 0;
  void ensure_flags(std::size_t n) {
    if (n <= flag_count) return;
    flags.reset(new std::atomic<int>[n]);
    flag_count = n;
  }

  // Optional per-unit timing (benchmarks and scheduler tests only): when
  // non-null, each unit appends {unit index, thread, start ns, end ns}.
  struct TraceRecord {
    int unit, thread;
    int64_t start_ns, end_ns;
  };
  std::vector<TraceRecord>* trace = nullptr;
  int min_alone_units = 0;  // see CallTrace::min_alone_units

  // The last plan made with this workspace: a plan depends only on the
  // longest length, the batch size and the thread count, and services call
  // with the same shapes again and again.
  Plan plan;
  int plan_steps = -1, plan_batch = -1, plan_threads = -1;
  bool plan_may_split = true;
};

}  // namespace rnninfer
