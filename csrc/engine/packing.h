// Canonical weights (docs/format.md, PyTorch layout) -> the packed layouts
// of kernels.h. Done once at load; the packed buffers are then read-only.
#pragma once

#include <vector>

#include "engine/aligned.h"
#include "kernels/kernels.h"

namespace rnninfer {

// A packed gemm operand that owns its memory.
struct GemmWeights {
  AlignedBuffer data, bias;
  PackedGemm view;
};

// A packed recurrent operand that owns its memory.
struct RecWeights {
  AlignedBuffer data;
  PackedRec view;
};

// w: N x K row-major; bias: N values or nullptr. Panel width from the table.
void pack_gemm(const float* w, int n, int k, const float* bias, int nr, GemmWeights* out);

// w: rows [g * H + u] for the gates listed in `gates` (indices into the
// canonical gate blocks), each K wide. Unit tile width from the table.
void pack_rec(const float* w, int h, int k, const std::vector<int>& gates, int tile,
              RecWeights* out);

}  // namespace rnninfer
