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
// k = 0..K-1; (int8 weights: acc = acc * scale[n]); c = acc + bias. That is
// what makes a sequence's bits independent of how many rows share the call
// (SPEC §2 determinism). Reduced-precision weights (bf16, int8) are widened
// to fp32 as they are loaded (weights-inl.h); A, C and the sums stay fp32.
#pragma once

#include <cstddef>

#include "kernels/kernels.h"
#include "kernels/weights-inl.h"
#include "simd/vec.h"

namespace rnninfer {
namespace gemm_impl {

template <Isa I, int NV, int MR, WType T>
inline void tile(const typename wload::WeightOps<I, T>::E* panel, int K, const float* a,
                 std::size_t lda, const float* bias, const float* scale, int ncols, float* c,
                 std::size_t ldc) {
  using O = Ops<I>;
  using V = typename O::V;
  using W = wload::WeightOps<I, T>;
  constexpr int L = O::kLanes;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = O::zero();
  const typename W::E* w = panel;
  for (int k = 0; k < K; ++k, w += NV * L) {
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = W::load(w + v * L);
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
    // int8: the scale is padded to whole panels (packing.cc), so a full load is in bounds.
    const V s = T == WType::kI8 ? O::load(scale + v * L) : O::zero();
    for (int r = 0; r < MR; ++r) {
      const V out = O::add(T == WType::kI8 ? O::mul(acc[r][v], s) : acc[r][v], b);
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
template <Isa I, int NV, int R, WType T>
inline void tail(int rows, const typename wload::WeightOps<I, T>::E* panel, int K, const float* a,
                 std::size_t lda, const float* bias, const float* scale, int ncols, float* c,
                 std::size_t ldc) {
  if constexpr (R > 0) {
    if (rows == R) return tile<I, NV, R, T>(panel, K, a, lda, bias, scale, ncols, c, ldc);
    tail<I, NV, R - 1, T>(rows, panel, K, a, lda, bias, scale, ncols, c, ldc);
  }
}

// R rows (the engine uses R = 1) over PG full panels at once. A panel alone gives R * NV
// independent accumulators, each an FMA chain along K: with one row (a stream
// fed one step, or a short block's last rows) that is two chains, which leave
// the core waiting on FMA latency instead of streaming W (an LSTM(128) input
// projection of one row ran at half the speed of the recurrent step over as
// many bytes). PG panels side by side give PG times as many chains. Every
// element still goes through acc = 0, fma along k = 0..K-1 in order, the same
// epilogue: the bits are those of tile().
template <Isa I, int NV, int R, int PG, WType T>
inline void panel_group(const typename wload::WeightOps<I, T>::E* panel, std::size_t panel_stride,
                        int K, const float* a, std::size_t lda, const float* bias, const float* scale,
                        float* c, std::size_t ldc) {
  using O = Ops<I>;
  using V = typename O::V;
  using W = wload::WeightOps<I, T>;
  constexpr int L = O::kLanes;
  constexpr int NR = NV * L;
  V acc[R][PG][NV];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < PG; ++g)
      for (int v = 0; v < NV; ++v) acc[r][g][v] = O::zero();
  for (int k = 0; k < K; ++k) {
    V wv[PG][NV];
    for (int g = 0; g < PG; ++g)
      for (int v = 0; v < NV; ++v) wv[g][v] = W::load(panel + g * panel_stride + static_cast<std::size_t>(k) * NR + v * L);
    for (int r = 0; r < R; ++r) {
      const V av = O::set1(a[r * lda + k]);
      for (int g = 0; g < PG; ++g)
        for (int v = 0; v < NV; ++v) acc[r][g][v] = O::fma(av, wv[g][v], acc[r][g][v]);
    }
  }
  for (int g = 0; g < PG; ++g)
    for (int v = 0; v < NV; ++v) {
      const int col = g * NR + v * L;
      const V b = bias ? O::load(bias + col) : O::zero();
      const V s = T == WType::kI8 ? O::load(scale + col) : O::zero();
      for (int r = 0; r < R; ++r)
        O::store(c + r * ldc + col, O::add(T == WType::kI8 ? O::mul(acc[r][g][v], s) : acc[r][g][v], b));
    }
}

// Panels grouped for calls of one row (panel_group): 4 panels x NV vectors of
// accumulators plus as many of weights still fit AVX2's 16 registers.
constexpr int kPanelGroup = 4;

template <Isa I, int NV, int MR, WType T>
void gemm_typed(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c,
                std::size_t ldc) {
  constexpr int NR = NV * Ops<I>::kLanes;
  const int panels = (w.n + NR - 1) / NR;
  const auto* data = wload::WeightOps<I, T>::base(w);
  int p = 0;
  if (m == 1) {
    const std::size_t stride = static_cast<std::size_t>(w.k) * NR;
    const int full = w.n / NR;  // panels without a column tail
    for (; p + kPanelGroup <= full; p += kPanelGroup) {
      const float* bias = w.bias ? w.bias + p * NR : nullptr;
      const float* scale = T == WType::kI8 ? w.scale + p * NR : nullptr;
      panel_group<I, NV, 1, kPanelGroup, T>(data + p * stride, stride, w.k, a, lda, bias, scale, c + p * NR, ldc);
    }
  }
  for (; p < panels; ++p) {
    const auto* panel = data + static_cast<std::size_t>(p) * w.k * NR;
    const float* bias = w.bias ? w.bias + p * NR : nullptr;
    const float* scale = T == WType::kI8 ? w.scale + p * NR : nullptr;
    const int ncols = w.n - p * NR;
    float* cp = c + p * NR;
    int r = 0;
    for (; r + MR <= m; r += MR)
      tile<I, NV, MR, T>(panel, w.k, a + r * lda, lda, bias, scale, ncols, cp + r * ldc, ldc);
    if (r < m)
      tail<I, NV, MR - 1, T>(m - r, panel, w.k, a + r * lda, lda, bias, scale, ncols, cp + r * ldc, ldc);
  }
}

// The table entry: one switch per call on the packed weights' element type.
template <Isa I, int NV, int MR>
void gemm(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c,
          std::size_t ldc) {
  switch (w.type) {
    case WType::kBf16:
      gemm_typed<I, NV, MR, WType::kBf16>(w, a, lda, m, c, ldc);
      return;
    case WType::kI8:
      gemm_typed<I, NV, MR, WType::kI8>(w, a, lda, m, c, ldc);
      return;
    case WType::kF32:
      break;
  }
  gemm_typed<I, NV, MR, WType::kF32>(w, a, lda, m, c, ldc);
}

}  // namespace gemm_impl
}  // namespace rnninfer
