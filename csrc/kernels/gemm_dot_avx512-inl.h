// gemm_avx512_bf16 for kPairs / kQuads operands: C = A W^T + b with the
// rows of A rounded to bf16 (vdpbf16ps) or quantised to int8 per row
// (vpdpbusd), the same arithmetic as the recurrent dot-product steps
// (recurrent_dot_avx512-inl.h, whose converters it uses).
//
// Include only from kernels_avx512_bf16.cc.
// Layout: PackedGemm panels of NR = NV * 16 outputs; inside a panel, k-group
// q (2 or 4 consecutive k), output j is one 32-bit lane: one group of a panel
// is NV vectors. K is padded with zero weights to whole groups.
// Per element: bf16: acc = 0; acc = vdpbf16ps(acc, w_pair, a_pair), pairs
// ascending; c = acc + bias. int8: exact integer sum of (q_a + 128) w_q, then
// c = ((float(sum - comp[n]) * scale[n]) * s_a) + bias, s_a = max|a_row|/127.
// Rows are converted in blocks that fit a fixed on-stack buffer (K <=
// kDotGemmMaxK, checked at pack time); inside a block, panels run outer so a
// panel streams once per block; MR-row tiles, the row tail as one smaller
// tile, column tails by masked stores: every element sees the same operations
// whatever M, its row position or the block split (SPEC §2 determinism).
#pragma once

#include <immintrin.h>

#include <cassert>
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"
#include "kernels/recurrent_dot_avx512-inl.h"

namespace rnninfer {
namespace dot_impl {

// Converted A rows per call block: 64 KiB on the stack (+ one scale per row).
constexpr std::size_t kGemmBufWords = 16384;
constexpr std::size_t kGemmMaxRows = kGemmBufWords / 16;

// Accumulator vector: fp32 sums for bf16, exact int32 sums for int8.
template <bool kBf16>
struct DotAcc {
  using T = __m512;
};
template <>
struct DotAcc<false> {
  using T = __m512i;
};

template <bool kBf16>
RNNINFER_INLINE typename DotAcc<kBf16>::T dot_zero() {
  if constexpr (kBf16)
    return _mm512_setzero_ps();
  else
    return _mm512_setzero_si512();
}

// The accumulator vector of output columns col..col+15 as values before the
// bias: bf16 sums are already fp32 (comp and scale are null and unused);
// int8 sums lose the zero-point correction, then take the column and row
// scales. Scales and corrections are padded to whole panels, so full loads
// are in bounds. Every gemm path goes through this, so a row gets the same
// bits whichever path ran it.
template <bool kBf16>
RNNINFER_INLINE __m512 dot_value(typename DotAcc<kBf16>::T acc, const int32_t* comp,
                                 const float* scale, int col, float row_scale) {
  if constexpr (kBf16) {
    return acc;
  } else {
    const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_loadu_si512(comp + col)));
    return _mm512_mul_ps(_mm512_mul_ps(d, _mm512_loadu_ps(scale + col)), _mm512_set1_ps(row_scale));
  }
}

template <bool kBf16, int NV, int MR>
inline void gemm_tile(const uint32_t* panel, int groups, const uint32_t* q, std::size_t qs,
                      const float* row_scale, const float* bias, const float* scale,
                      const int32_t* comp, int ncols, float* c, std::size_t ldc) {
  typename DotAcc<kBf16>::T acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = dot_zero<kBf16>();
  for (int p = 0; p < groups; ++p) {
    __m512i wv[NV];
    for (int v = 0; v < NV; ++v)
      wv[v] = _mm512_loadu_si512(panel + (static_cast<std::size_t>(p) * NV + v) * 16);
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(q[static_cast<std::size_t>(r) * qs + p]));
      for (int v = 0; v < NV; ++v) {
        if constexpr (kBf16)
          acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)wv[v], (__m512bh)av);
        else
          acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, wv[v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    const int cols = ncols - v * 16;
    if (cols <= 0) break;
    const __mmask16 mk = mask_of(cols);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mk, bias + v * 16) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
      const __m512 s = dot_value<kBf16>(acc[r][v], comp, scale, v * 16, kBf16 ? 0.0f : row_scale[r]);
      _mm512_mask_storeu_ps(c + static_cast<std::size_t>(r) * ldc + v * 16, mk, _mm512_add_ps(s, b));
    }
  }
}

// One row over PG full panels at once. A panel alone gives one row NV
// accumulator chains, and a dot-product instruction's latency then bounds the
// row (a one-step feed's projection ran at about half the speed of the
// recurrent step over as many bytes). PG panels side by side give PG times as
// many chains; every element goes through gemm_tile's operations, so the bits
// are the same.
template <bool kBf16, int NV, int PG>
inline void gemm_group(const uint32_t* panel, std::size_t panel_stride, int groups,
                       const uint32_t* q, const float* row_scale, const float* bias,
                       const float* scale, const int32_t* comp, float* c) {
  constexpr int NR = NV * 16;
  typename DotAcc<kBf16>::T acc[PG][NV];
  for (int g = 0; g < PG; ++g)
    for (int v = 0; v < NV; ++v) acc[g][v] = dot_zero<kBf16>();
  for (int p = 0; p < groups; ++p) {
    const __m512i av = _mm512_set1_epi32(static_cast<int>(q[p]));
    for (int g = 0; g < PG; ++g)
      for (int v = 0; v < NV; ++v) {
        const __m512i wv = _mm512_loadu_si512(panel + g * panel_stride + (static_cast<std::size_t>(p) * NV + v) * 16);
        if constexpr (kBf16)
          acc[g][v] = _mm512_dpbf16_ps(acc[g][v], (__m512bh)wv, (__m512bh)av);
        else
          acc[g][v] = _mm512_dpbusd_epi32(acc[g][v], av, wv);
      }
  }
  for (int g = 0; g < PG; ++g)
    for (int v = 0; v < NV; ++v) {
      const int col = g * NR + v * 16;
      const __m512 b = bias ? _mm512_loadu_ps(bias + col) : _mm512_setzero_ps();
      const __m512 s = dot_value<kBf16>(acc[g][v], comp, scale, col, kBf16 ? 0.0f : row_scale[0]);
      _mm512_storeu_ps(c + col, _mm512_add_ps(s, b));
    }
}

// Panels per gemm_group (NV = 2: 8 accumulators, like the fp32 gemm's).
constexpr int kDotPanelGroup = 4;

template <bool kBf16, int NV, int R>
inline void gemm_tail(int rows, const uint32_t* panel, int groups, const uint32_t* q,
                      std::size_t qs, const float* row_scale, const float* bias,
                      const float* scale, const int32_t* comp, int ncols, float* c,
                      std::size_t ldc) {
  if constexpr (R > 0) {
    if (rows == R)
      return gemm_tile<kBf16, NV, R>(panel, groups, q, qs, row_scale, bias, scale, comp, ncols, c,
                                     ldc);
    gemm_tail<kBf16, NV, R - 1>(rows, panel, groups, q, qs, row_scale, bias, scale, comp, ncols,
                                c, ldc);
  }
}

template <bool kBf16, int NV, int MR>
void gemm_typed(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c,
                std::size_t ldc) {
  constexpr int NR = NV * 16;
  const RecLayout layout = kBf16 ? RecLayout::kPairs : RecLayout::kQuads;
  const int groups = kBf16 ? (w.k + 1) / 2 : (w.k + 3) / 4;
  const std::size_t qs = hq_words(w.k, layout);
  assert(w.k <= kDotGemmMaxK && qs * MR <= kGemmBufWords);
  const std::size_t fit = kGemmBufWords / qs;
  const int block = static_cast<int>((fit < kGemmMaxRows ? fit : kGemmMaxRows) / MR * MR);
  alignas(64) uint32_t q[kGemmBufWords];
  float row_scale[kGemmMaxRows];
  const uint32_t* wb = kBf16 ? reinterpret_cast<const uint32_t*>(w.bf16)
                             : reinterpret_cast<const uint32_t*>(w.i8);
  const int panels = (w.n + NR - 1) / NR;
  for (int r0 = 0; r0 < m; r0 += block) {
    const int rows = m - r0 < block ? m - r0 : block;
    const float* ar = a + static_cast<std::size_t>(r0) * lda;
    if constexpr (kBf16)
      to_bf16_pairs(ar, lda, rows, w.k, q, qs);
    else
      to_u8(ar, lda, rows, w.k, q, qs, row_scale);
    int p = 0;
    if (rows == 1) {
      const std::size_t stride = static_cast<std::size_t>(groups) * NR;
      for (; p + kDotPanelGroup <= w.n / NR; p += kDotPanelGroup)
        gemm_group<kBf16, NV, kDotPanelGroup>(wb + p * stride, stride, groups, q, row_scale,
                                              w.bias ? w.bias + p * NR : nullptr,
                                              kBf16 ? nullptr : w.scale + p * NR,
                                              kBf16 ? nullptr : w.comp + p * NR,
                                              c + static_cast<std::size_t>(r0) * ldc + p * NR);
    }
    for (; p < panels; ++p) {
      const uint32_t* panel = wb + static_cast<std::size_t>(p) * groups * NR;
      const float* bias = w.bias ? w.bias + p * NR : nullptr;
      const float* scale = kBf16 ? nullptr : w.scale + p * NR;
      const int32_t* comp = kBf16 ? nullptr : w.comp + p * NR;
      const int ncols = w.n - p * NR;
      float* cp = c + static_cast<std::size_t>(r0) * ldc + p * NR;
      int r = 0;
      for (; r + MR <= rows; r += MR)
        gemm_tile<kBf16, NV, MR>(panel, groups, q + r * qs, qs, row_scale + r, bias, scale, comp,
                                 ncols, cp + r * ldc, ldc);
      if (r < rows)
        gemm_tail<kBf16, NV, MR - 1>(rows - r, panel, groups, q + r * qs, qs, row_scale + r, bias,
                                     scale, comp, ncols, cp + r * ldc, ldc);
    }
  }
}

template <int NV, int MR>
void gemm(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c,
          std::size_t ldc) {
  if (w.layout == RecLayout::kPairs)
    gemm_typed<true, NV, MR>(w, a, lda, m, c, ldc);
  else
    gemm_typed<false, NV, MR>(w, a, lda, m, c, ldc);
}

}  // namespace dot_impl
}  // namespace rnninfer
