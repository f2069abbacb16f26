// Per-call scratch, sized once before any layer runs; nothing in the step
// loops allocates. Rows are kept in PyTorch's packed-sequence order: the
// batch is sorted by length (longest first, stable), and the rows of step t
// are the n_t sequences still running at t, stored contiguously after those
// of step t-1. A block of steps is then one contiguous row range (one gemm),
// and the sequences active at a step are always a prefix of the state rows.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/aligned.h"

namespace rnninfer {

struct Workspace {
  int batch = 0;
  int steps = 0;                   // longest sequence
  int width = 0;                   // padded width of the caller's arrays
  int64_t rows = 0;                // sum of lengths
  std::vector<int> order;          // sorted position -> original batch index
  std::vector<int> lengths;        // by sorted position
  std::vector<int> active;         // n_t, t in [0, steps)
  std::vector<int64_t> offset;     // first packed row of step t, t in [0, steps]
  std::vector<uint8_t> skip;       // per packed row: masked step (state carried)
  bool any_skip = false;

  // Layer outputs live in a few reusable slots: stream s ([0] model input,
  // [i + 1] output of layer i) uses slots[stream_slot[s]] from the layer that
  // writes it to the last layer that reads it (its successor, or a later
  // residual link), so a plain stack needs two slots whatever its depth.
  std::vector<AlignedBuffer> slots;
  std::vector<int> stream_slot;
  std::vector<int> last_use;
  float* stream(int s) { return slots[static_cast<size_t>(stream_slot[static_cast<size_t>(s)])].data(); }
  AlignedBuffer merge_tmp;             // backward half for sum/mul/ave merges

  // State of one direction while it runs; [0] forward (or only), [1] backward,
  // so the two directions of a layer never share memory.
  struct DirState {
    AlignedBuffer xproj;        // input projections of one block of steps
    AlignedBuffer h[2], c[2];   // double-buffered state (batch rows)
    AlignedBuffer m;            // LSTM projection input o*act(c)
    AlignedBuffer gru_scratch;  // GRU reset-before: z and r*h
    AlignedBuffer final_state;  // h after each sequence's last step, for readout "last"
    int cur = 0;                // which of h/c holds the current state
  } dir[2];
  AlignedBuffer pooled, head_a, head_b;  // readout and head activations
};

// A unit of work: one direction of one layer over a block of steps, for all
// sequences of the call (a batch shard is the whole batch for now). The
// scheduler runs units in an order that respects the recurrence: blocks of
// a direction in reading order, and a layer's blocks after the rows they
// read are written.
struct WorkUnit {
  int layer = 0;
  int dir = 0;        // 0 = forward half (or the only one), 1 = backward half
  bool reverse = false;
  int t_begin = 0;    // block [t_begin, t_end)
  int t_end = 0;
};

}  // namespace rnninfer
