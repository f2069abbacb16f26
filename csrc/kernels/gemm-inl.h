// gemm_<isa>: the input projection of a block of steps (and the LSTM
// projection and dense heads), C = A W^T + b, over a packed W (PackedGemm).
//
// Layout: W packed in column panels of NR = NV * kLanes outputs, each panel
// K x NR contiguous (see kernels.h). A row-major (M x K, stride lda), C
// row-major (M x N, stride ldc). No alignment needed for A and C.
// Tiling: MR rows x NV vectors of accumulators in registers; the K loop
// streams one panel row per step. Row tails run the same body with fewer rows;
// column tails use masked loads/stores of the same vectors, so every element
// goes through exactly the same operations: acc = 0; acc = fma(a, w, acc) for
// k = 0..K-1; c = acc + bias. That is what makes a sequence's bits
// independent of how many rows share the call (SPEC §2 determinism).
#pragma once

#include <cstddef>

#include "kernels/kernels.h"
#include "simd/vec.h"

namespace rnninfer {
namespace gemm_impl {

template <Isa I, int NV, int MR>
inline void tile(const float* panel, int K, const float* a, std::size_t lda, const float* bias,
                 int ncols, float* c, std::size_t ldc) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = O::zero();
  const float* w = panel;
  for (int k = 0; k < K; ++k, w += NV * L) {
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = O::load(w + v * L);
    for (int r = 0; r < MR; ++r) {
      const V av = O::set1(a[r * lda + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = O::fma(av, wv[v], acc[r][v]);
    }
  }
  for (int v = 0; v < NV; ++v) {
    const int cols = ncols - v * L;
    if (cols <= 0) break;
    const int nvalid = cols < L ? cols : L;
    const V b = bias ? O::load_n(bias + v * L, nvalid) : O::zero();
    for (int r = 0; r < MR; ++r) {
      const V out = O::add(acc[r][v], b);
      if (nvalid == L)
        O::store(c + r * ldc + v * L, out);
      else
        O::store_n(c + r * ldc + v * L, out, nvalid);
    }
  }
}

// Rows left after the full MR tiles run as one tile of exactly that many rows
// (not one row at a time), so each panel is streamed once per call of up to
// MR rows: at batch 1 a block of a few steps is a few rows, and the gemm is
// bound by streaming W.
template <Isa I, int NV, int R>
inline void tail(int rows, const float* panel, int K, const float* a, std::size_t lda,
                 const float* bias, int ncols, float* c, std::size_t ldc) {
  if constexpr (R > 0) {
    if (rows == R) return tile<I, NV, R>(panel, K, a, lda, bias, ncols, c, ldc);
    tail<I, NV, R - 1>(rows, panel, K, a, lda, bias, ncols, c, ldc);
  }
}

template <Isa I, int NV, int MR>
void gemm(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c,
          std::size_t ldc) {
  constexpr int NR = NV * Ops<I>::kLanes;
  const int panels = (w.n + NR - 1) / NR;
  for (int p = 0; p < panels; ++p) {
    const float* panel = w.data + static_cast<std::size_t>(p) * w.k * NR;
    const float* bias = w.bias ? w.bias + p * NR : nullptr;
    const int ncols = w.n - p * NR;
    float* cp = c + p * NR;
    int r = 0;
    for (; r + MR <= m; r += MR)
      tile<I, NV, MR>(panel, w.k, a + r * lda, lda, bias, ncols, cp + r * ldc, ldc);
    if (r < m) tail<I, NV, MR - 1>(m - r, panel, w.k, a + r * lda, lda, bias, ncols, cp + r * ldc, ldc);
  }
}

}  // namespace gemm_impl
}  // namespace rnninfer
