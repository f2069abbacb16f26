// A loaded model as the executor and the layer code read it: the description,
// the kernel table, and every weight packed for that table (engine.cc builds
// it once; nothing changes it afterwards).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/aligned.h"
#include "engine/model_desc.h"
#include "engine/packing.h"
#include "kernels/kernels.h"

namespace rnninfer {

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
  // Small layers reading a hidden sequence (or features): W_x packed like
  // the recurrent weights, and the folded biases per (unit tile, gate, lane),
  // for the step kernels' fused input projection (StepArgs::wx). Empty when
  // the layer does not qualify (engine.cc, fuses_input).
  RecWeights wx_step;
  AlignedBuffer bx_step;
};

struct LayerWeights {
  std::vector<DirWeights> dirs;
};

// Where one sequence's carried state lives in a flat float vector (streams):
// per layer, h (dir_width floats) then, for LSTM, c (units floats); then, for
// a max readout, the pool so far. Only forward-only stacks have one (a
// backward direction cannot be carried).
struct StateEntry {
  std::string name;  // "layers.<i>.fwd.h" / "layers.<i>.fwd.c" / "readout.max" / "readout.steps"
  int layer = 0;
  bool cell = false;  // c rather than h
  int64_t offset = 0;
  int64_t size = 0;
};

struct PackedModel {
  ModelDesc desc;
  const KernelTable* kernels = nullptr;
  AlignedBuffer embedding;  // vocab x input_width
  std::vector<LayerWeights> layers;
  std::vector<GemmWeights> head;
  int max_head_width = 0;  // widest row the head reads or writes
  int max_width_p = 0;     // widest dir_width over the layers
  // Carried state of one sequence (streams); empty when the model has a
  // layer that reads backwards.
  std::vector<StateEntry> state;
  int64_t state_size = 0;
  std::vector<int64_t> state_h, state_c;  // per layer: offsets of h and c (-1: none)
  // Max readout: the running max of the top layer's rows (top width floats)
  // and the steps pooled so far (one float); -1 for other readouts.
  int64_t pool_max = -1, pool_steps = -1;

  // The first layer's projections are table lookups (a token model whose
  // table fit the budget).
  bool gather_first() const { return !layers.empty() && layers[0].dirs[0].token_proj.size() != 0; }
  // Whether anything reads the model input rows (stream 0): not when the
  // first layer looks its projections up and no residual link starts there.
  bool reads_input_rows() const {
    if (!gather_first()) return true;
    for (const LayerDesc& L : desc.layers)
      if (L.residual_from == -1) return true;
    return false;
  }
};

}  // namespace rnninfer
