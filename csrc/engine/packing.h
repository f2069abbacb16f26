// Canonical weights (docs/format.md, PyTorch layout) -> the packed layouts
// of kernels.h. Done once at load; the packed buffers are then read-only.
// The packed element type (fp32, bf16, int8) is a property of the packed
// operand: the kernels read PackedGemm/PackedRec::type (docs/precision.md).
#pragma once

#include <vector>

#include "engine/aligned.h"
#include "kernels/kernels.h"

namespace rnninfer {

// A canonical (row-major, rows x K) weight matrix in one of the element types.
// bf16: uint16 bit patterns; int8: values with one float scale per row
// (w[row][k] = data[row][k] * scale[row]). The values are used as given:
// rounding/quantisation happened before (rnninfer.format.precision).
struct WeightSrc {
  WType type = WType::kF32;
  const void* data = nullptr;
  const float* scale = nullptr;  // int8: one per row
};

// A packed gemm operand that owns its memory.
struct GemmWeights {
  AlignedBuffer data, bias, scale, comp;
  PackedGemm view;
};

// A packed recurrent operand that owns its memory.
struct RecWeights {
  AlignedBuffer data, scale, comp;
  PackedRec view;
};

// w: N x K row-major; bias: N values or nullptr. Panel width from the table;
// for reduced weights with K <= kDotGemmMaxK, the K layout too (kPairs needs
// bf16, kQuads int8; anything else packs kPlain).
void pack_gemm(const WeightSrc& w, int n, int k, const float* bias, int nr, GemmWeights* out,
               RecLayout layout = RecLayout::kPlain);
inline void pack_gemm(const float* w, int n, int k, const float* bias, int nr, GemmWeights* out) {
  pack_gemm(WeightSrc{WType::kF32, w, nullptr}, n, k, bias, nr, out);
}

// w: rows [g * H + u] for the gates listed in `gates` (indices into the
// canonical gate blocks), each K wide. Unit tile width and, for reduced
// weights, the K layout from the table (kPairs needs bf16, kQuads int8).
void pack_rec(const WeightSrc& w, int h, int k, const std::vector<int>& gates, int tile,
              RecWeights* out, RecLayout layout = RecLayout::kPlain);
inline void pack_rec(const float* w, int h, int k, const std::vector<int>& gates, int tile,
                     RecWeights* out) {
  pack_rec(WeightSrc{WType::kF32, w, nullptr}, h, k, gates, tile, out);
}

// Per-output values (values[g * h + u] for canonical gate block g, or
// nullptr for none) in the order of one k-row of a PackedRec over `gates`:
// unit tile t, the i-th listed gate, lane u at ((t * gates.size() + i) *
// tile + u); zero past h. Int8 scales of pack_rec, and the bias of a fused
// input projection (StepArgs::bx).
void pack_tile_values(const float* values, int h, const std::vector<int>& gates, int tile,
                      AlignedBuffer* out);

}  // namespace rnninfer
