// Engine: loads a model (checks the tensors against the description, folds
// biases, packs every weight for the kernel table, precomputes the token
// projection table) and is the entry point of every call: predict() over
// padded batches, feed() for streams that carry their state between calls.
// The calls themselves run in the executor (executor.h) over the layer code
// (layer_exec.h).
//
// Immutable after construction: every call is const, keeps all per-call state
// in a workspace of its own, and so may run from many threads at once.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/model_desc.h"
#include "engine/packed_model.h"
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

class Engine {
 public:
  // Validates desc and every tensor's presence and shape (std::invalid_argument),
  // then packs the weights for `kernels` (nullptr = the process default).
  // Touches no Python object: the binding runs it without the GIL.
  Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels);

  // tokens: B x T row-major, ids checked in [0, vocab) (std::invalid_argument
  // naming the sequence and step otherwise); lengths: B values in [1, T].
  // out: B * T * out_width (readout "sequence") or B * out_width floats.
  void predict_tokens(const int64_t* tokens, int batch, int steps, const int32_t* lengths,
                      float* out, CallTrace* trace = nullptr) const;
  // x: B x T x F row-major float32.
  void predict_features(const float* x, int batch, int steps, const int32_t* lengths,
                        float* out, CallTrace* trace = nullptr) const;

  // Streams. A batch of sequences each continuing from its own state: sequence
  // b runs lengths[b] >= 1 new steps (tokens[b] ids, or features[b], lengths[b]
  // x F floats) from state_in[b] and ends in state_out[b] (state_size() floats
  // each, the layout of state_entries(); in and out must not overlap);
  // out[b] gets its outputs (lengths[b] x output_width for sequence readouts,
  // else output_width: the head on the last state). The same plans, kernels
  // and bits as predict() on the whole sequence. std::invalid_argument for a
  // model that cannot stream (see check_streams) and for bad token ids. A call
  // that fails may have written some state_out[b] already: a caller whose
  // states must survive an error keeps state_in and adopts state_out only on
  // success.
  void feed_tokens(int batch, const int64_t* const* tokens, const int32_t* lengths,
                   const float* const* state_in, float* const* state_out, float* const* out) const;
  void feed_features(int batch, const float* const* features, const int32_t* lengths,
                     const float* const* state_in, float* const* state_out, float* const* out) const;
  // std::invalid_argument naming the first reason this model cannot stream
  // (a layer that reads backwards, a mean readout).
  void check_streams() const;
  const std::vector<StateEntry>& state_entries() const { return model_.state; }
  int64_t state_size() const { return model_.state_size; }
  // Offset of a max readout's pool in a state (-1: none).
  int64_t pool_max() const { return model_.pool_max; }

  const ModelDesc& desc() const { return model_.desc; }
  const KernelTable& kernels() const { return *model_.kernels; }
  const Executor& executor() const { return exec_; }
  int threads() const { return exec_.threads(); }
  // What the recurrent products multiply the weights with: "fp32" (the
  // widen-in-registers kernels), or "bf16" / "int8" when the packed layout is
  // one of the dot-product kernels' (activations rounded/quantised per row and
  // step; the table's gemm does the same to the inputs of the projections).
  const char* recurrent_activations() const;
  // Floats of output per sequence for a padded width of `steps`.
  int64_t output_size(int steps) const;

 private:
  // Budget for the first layer's per-token projection table; larger
  // vocabularies keep the gemm (the table would not stay in cache anyway).
  static constexpr std::size_t kMaxTokenProjectionBytes = std::size_t{256} << 20;
  // Largest unit tile of W_x (and of W_h) in bytes for which a layer's steps
  // compute its input projection themselves (StepArgs::wx): both tiles then
  // stay in L1 while every row group passes over them.
  static constexpr std::size_t kMaxFusedTileBytes = std::size_t{16} << 10;
  static PackedModel pack(ModelDesc desc, const TensorMap& tensors, int threads,
                          const KernelTable* kernels);

  PackedModel model_;
  Executor exec_;  // refers to model_ (declared before it, so built first)
};

}  // namespace rnninfer
