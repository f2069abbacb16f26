// What a unit of a plan does to the rows of a call (oneDNN's "cell
// execution" half of an RNN primitive): one direction's block of steps (input
// projections, then the fused step kernel per step), the finish of a block
// (merge of two directions, residual add), a projection block, and the
// readout and head on the calling thread. Which thread runs which unit and
// when is the executor's business (executor.h); nothing here depends on it,
// so a row's bits are the same under every plan.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/packed_model.h"
#include "engine/scheduler.h"
#include "engine/thread_pool.h"
#include "engine/workspace.h"

namespace rnninfer {

// Where one call's results go and, for streams, where each sequence's state
// comes from and goes to; indexed by the caller's sequence index.
struct CallIO {
  // predict: one array, sequence b's outputs at out + b * out_stride.
  float* out = nullptr;
  int64_t out_stride = 0;
  // streams: one array per sequence instead (lengths[b] x width for sequence
  // readouts, else width).
  float* const* out_seq = nullptr;
  // streams: each sequence's starting state (PackedModel::state layout) and
  // where its final state goes; nullptr = the zero state / not wanted.
  const float* const* state_in = nullptr;
  float* const* state_out = nullptr;

  float* out_of(int b) const {
    return out_seq != nullptr ? out_seq[b] : out + static_cast<int64_t>(b) * out_stride;
  }
};

// StepArgs::partial per row: up to 4 gates x 16 lanes (the widest ISA).
constexpr std::size_t kPartialFloatsPerRow = 4 * 16;

// One thread's share of a split plan: hidden units [H*index/count, H*(index+1)/count).
struct Slice {
  int index, count;
  StepBarrier* barrier;
  // Every thread loaded its slice of the starting states (init_state) before
  // the barrier that opens the unit: a block's first step then needs no
  // barrier of its own.
  bool state_loaded = false;
};

// Runs unit u whole (not split) on thread tid's scratch.
void run_unit(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u, int tid);
// The starting state of a direction unit that begins its layer (u.first):
// each sequence's carried state (streams) or zeros; with a slice, only that
// slice's units. run_direction does it unless slice->state_loaded.
void init_state(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u,
                const Slice* slice);
// A direction unit: its block's input projections, then its steps; with a
// slice, only that slice's hidden units (every thread of the split runs it).
void run_direction(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u, int tid,
                   const Slice* slice);
// Readout and head of the call's rows, written to ws.io's outputs.
void readout_and_head(const PackedModel& m, Workspace& ws);
// Each sequence's state after its last step, to ws.io->state_out (streams).
void write_states(const PackedModel& m, Workspace& ws);

}  // namespace rnninfer
