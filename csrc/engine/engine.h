// Engine: a model's packed weights and the predict() entry points.
//
// Immutable after construction: predict() is const, keeps all per-call state
// in a Workspace of its own, and so may run from many threads at once.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/model_desc.h"
#include "engine/packing.h"
#include "kernels/kernels.h"

namespace rnninfer {

struct TensorView {
  const float* data = nullptr;
  std::vector<int64_t> shape;
};
using TensorMap = std::map<std::string, TensorView>;

// Packed weights of one direction of one layer.
struct DirWeights {
  GemmWeights wx;   // input projection, N = G*H, biases outside the reset gate folded in
  RecWeights wh;    // recurrent weights (GRU reset-before: r and z only)
  RecWeights wh_n;  // GRU reset-before: candidate gate
  AlignedBuffer b_hn;  // GRU reset-after: recurrent candidate bias
  GemmWeights wr;   // LSTM projection (P x H)
};

struct LayerWeights {
  std::vector<DirWeights> dirs;
};

struct Workspace;
struct WorkUnit;

class Engine {
 public:
  // Validates desc and every tensor's presence and shape (std::invalid_argument),
  // then packs the weights for `kernels` (nullptr = the process default).
  Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels);

  // tokens: B x T row-major int32, ids checked in [0, vocab); lengths: B values in [1, T].
  // out: B * T * out_width (readout "sequence") or B * out_width floats.
  void predict_tokens(const int32_t* tokens, int batch, int steps, const int32_t* lengths,
                      float* out) const;
  // x: B x T x F row-major float32.
  void predict_features(const float* x, int batch, int steps, const int32_t* lengths,
                        float* out) const;

  const ModelDesc& desc() const { return desc_; }
  const KernelTable& kernels() const { return *kernels_; }
  int threads() const { return threads_; }
  // Floats of output per sequence for a padded width of `steps`.
  int64_t output_size(int steps) const;

 private:
  void check_call(int batch, int steps, const int32_t* lengths) const;
  void run(Workspace& ws, float* out) const;
  void run_unit(Workspace& ws, const WorkUnit& u) const;
  void finish_layer(Workspace& ws, int layer) const;
  void readout_and_head(Workspace& ws, float* out) const;
  void dense_head(Workspace& ws, float* z, int rows, float* tmp) const;

  ModelDesc desc_;
  const KernelTable* kernels_;
  int threads_;
  AlignedBuffer embedding_;  // vocab x input_width
  std::vector<LayerWeights> layers_;
  std::vector<GemmWeights> head_;
  int max_head_width_ = 0;
};

}  // namespace rnninfer
