// Engine: a model's packed weights and the predict() entry points.
//
// Immutable after construction: predict() is const, keeps all per-call state
// in a Workspace of its own, and so may run from many threads at once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/model_desc.h"
#include "engine/packing.h"
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
};

struct LayerWeights {
  std::vector<DirWeights> dirs;
};

struct WorkUnit;

class Engine {
 public:
  // Validates desc and every tensor's presence and shape (std::invalid_argument),
  // then packs the weights for `kernels` (nullptr = the process default).
  Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels);

  // tokens: B x T row-major, ids checked in [0, vocab) (std::invalid_argument
  // naming the sequence and step otherwise); lengths: B values in [1, T].
  // out: B * T * out_width (readout "sequence") or B * out_width floats.
  void predict_tokens(const int64_t* tokens, int batch, int steps, const int32_t* lengths,
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
  // Per-call scratch comes from a small pool so that a call allocates
  // nothing once the pool has warmed up; the pool is the engine's only
  // mutable state and is guarded by pool_mu_.
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

  void check_call(int batch, int steps, const int32_t* lengths) const;
  void plan_streams(Workspace& ws) const;
  void open_stream(Workspace& ws, int s, std::size_t floats) const;
  void close_stream(Workspace& ws, int s) const;
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
  mutable std::mutex pool_mu_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_;
};

}  // namespace rnninfer
