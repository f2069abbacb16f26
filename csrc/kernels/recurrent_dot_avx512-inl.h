// Recurrent step kernels on reduced activations, AVX-512 dot-product
// instructions (lstm_step_avx512_bf16 & co. for kPairs / kQuads weights).
//
// Include only from kernels_avx512_bf16.cc (-mavx512bf16 -mavx512vnni); the
// Isa parameter is Isa::kAvx512Bf16 there.
//
// Equations: as recurrent-inl.h; the pointwise updates are the same functions
// (lstm_update & co.), only the recurrent product W_h h differs:
//   bf16 (kPairs weights, vdpbf16ps): every row of h is rounded to bf16 (to
//     nearest even, _mm512_cvtne2ps_pbh) once per step into StepArgs::hq;
//     per element acc = 0, then for each k-pair p ascending acc =
//     vdpbf16ps(acc, W[u][2p..2p+1], hb[2p..2p+1]). The instruction computes
//     both products exactly and adds them to acc in fp32 (denormals flushed).
//   int8 (kQuads weights, vpdpbusd): every row of h is quantised once per step
//     with its own scale s_h = max_k |h_k| / 127 (a row never sees another
//     row's values): q_k = round_half_even(h_k / s_h) in [-127, 127], stored
//     as q_k + 128 (u8). Integer sums are exact and independent of order:
//     acc_i = sum_k (q_k + 128) W_q[u][k] - 128 sum_k W_q[u][k] (precomputed,
//     PackedRec::comp), then acc = (float(acc_i) * s_w[u]) * s_h.
// Layout: PackedRec (kernels.h) with K grouped in pairs / quads: tile t,
// group p, gate g, lane u is one 32-bit lane; one (p, g) is one zmm.
// Tiles, rows, tails: unit tiles of 16 lanes (weights past H are zero, the
// update masks the stores); rows are processed 4 at a time, tiles outer; a
// step with fewer rows runs them all at once with TT tiles in flight (more
// independent accumulation chains at batch 1).
// Determinism: every element's operations are the ones above whatever R, TT,
// the loop order or the row's position; quantisation is per row.
// Preconditions: as recurrent-inl.h, plus a.hq has hq_floats_per_row(K)
// floats per row for n rows.
#pragma once

#include <immintrin.h>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/kernels.h"
#include "kernels/recurrent-inl.h"
#include "simd/vec_avx512.h"

namespace rnninfer {
namespace dot_impl {

// Rows per group when many rows share a step (G gates x R rows accumulators).
constexpr int kRows = 4;
// Accumulators in flight when rows run one at a time (TT = kChains / G tiles).
constexpr int kChains = 16;
constexpr int kQ8Max = 127;
constexpr int kU8Offset = 128;

// 32-bit words of one converted row (bf16 pairs or u8 quads, whole vectors).
inline std::size_t hq_words(int k, RecLayout layout) {
  return layout == RecLayout::kPairs ? static_cast<std::size_t>((k + 31) / 32) * 16
                                     : static_cast<std::size_t>((k + 63) / 64) * 16;
}

inline __mmask16 mask_of(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff)
                 : static_cast<__mmask16>((1u << (n < 0 ? 0 : n)) - 1u);
}

// Rows of x (n x k, stride ld) as bf16 pairs: word j of a row = (x[2j], x[2j+1]).
inline void to_bf16_pairs(const float* x, std::size_t ld, int n, int k, uint32_t* q,
                          std::size_t qs) {
  for (int r = 0; r < n; ++r) {
    const float* xr = x + static_cast<std::size_t>(r) * ld;
    uint32_t* qr = q + static_cast<std::size_t>(r) * qs;
    for (int k0 = 0; k0 < k; k0 += 32) {
      const __m512 lo = _mm512_maskz_loadu_ps(mask_of(k - k0), xr + k0);
      const __m512 hi = _mm512_maskz_loadu_ps(mask_of(k - k0 - 16), xr + k0 + 16);
      _mm512_storeu_si512(qr + k0 / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
}

// Rows of x quantised to u8 (q + 128) with one scale per row, stored after the
// n rows (scales[r] = max|x_r| / 127; 0 for an all-zero row).
inline void to_u8(const float* x, std::size_t ld, int n, int k, uint32_t* q, std::size_t qs,
                  float* scales) {
  const __m512 lim = _mm512_set1_ps(static_cast<float>(kQ8Max));
  const __m512i off = _mm512_set1_epi32(kU8Offset);
  for (int r = 0; r < n; ++r) {
    const float* xr = x + static_cast<std::size_t>(r) * ld;
    uint8_t* qr = reinterpret_cast<uint8_t*>(q + static_cast<std::size_t>(r) * qs);
    __m512 mx = _mm512_setzero_ps();
    for (int k0 = 0; k0 < k; k0 += 16)
      mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask_of(k - k0), xr + k0)));
    const float m = _mm512_reduce_max_ps(mx);  // max is exact whatever the order
    const float inv = m > 0.0f ? static_cast<float>(kQ8Max) / m : 0.0f;
    scales[r] = m / static_cast<float>(kQ8Max);
    const __m512 vinv = _mm512_set1_ps(inv);
    const int kp = (k + 63) / 64 * 64;
    for (int k0 = 0; k0 < kp; k0 += 16) {
      __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask_of(k - k0), xr + k0), vinv);
      v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-static_cast<float>(kQ8Max))), lim);
      const __m512i qi = _mm512_add_epi32(
          _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), off);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + k0), _mm512_cvtepi32_epi8(qi));
    }
  }
}

// Sums of TT consecutive tiles x R rows x G gates over all K groups.
// Bf16: float accumulators (vdpbf16ps); int8: int32 accumulators (vpdpbusd).
// Acc is __m512 for bf16, __m512i for int8.
template <int G, int R, int TT, bool kBf16, typename Acc>
inline void dot_sums(const PackedRec& pw, int t0, const uint32_t* q, std::size_t qs,
                     Acc (&acc)[TT][R][G]) {
  const int groups = kBf16 ? (pw.k + 1) / 2 : (pw.k + 3) / 4;
  const uint32_t* wb = kBf16 ? reinterpret_cast<const uint32_t*>(pw.bf16)
                             : reinterpret_cast<const uint32_t*>(pw.i8);
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) {
        if constexpr (kBf16)
          acc[t][r][g] = _mm512_setzero_ps();
        else
          acc[t][r][g] = _mm512_setzero_si512();
      }
  const std::size_t tile_words = static_cast<std::size_t>(groups) * G * 16;
  const uint32_t* w0 = wb + static_cast<std::size_t>(t0) * tile_words;
  for (int p = 0; p < groups; ++p) {
    __m512i hv[R];
    for (int r = 0; r < R; ++r)
      hv[r] = _mm512_set1_epi32(static_cast<int>(q[static_cast<std::size_t>(r) * qs + p]));
    for (int t = 0; t < TT; ++t) {
      const uint32_t* w = w0 + t * tile_words + static_cast<std::size_t>(p) * G * 16;
      __m512i wv[G];
      for (int g = 0; g < G; ++g) wv[g] = _mm512_loadu_si512(w + g * 16);
      for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) {
          if constexpr (kBf16)
            acc[t][r][g] = _mm512_dpbf16_ps(acc[t][r][g], (__m512bh)wv[g], (__m512bh)hv[r]);
          else
            acc[t][r][g] = _mm512_dpbusd_epi32(acc[t][r][g], hv[r], wv[g]);
        }
    }
  }
}

// Products of TT tiles (from t0) x R rows (from r0) as fp32 gate sums.
template <int G, int R, int TT, bool kBf16>
inline void dot_product(const PackedRec& pw, int t0, const uint32_t* q, std::size_t qs,
                        const float* row_scale, __m512 (&out)[TT][R][G]) {
  if constexpr (kBf16) {
    dot_sums<G, R, TT, true>(pw, t0, q, qs, out);
  } else {
    __m512i acc[TT][R][G];
    dot_sums<G, R, TT, false>(pw, t0, q, qs, acc);
    for (int t = 0; t < TT; ++t)
      for (int g = 0; g < G; ++g) {
        const std::size_t at = (static_cast<std::size_t>(t0 + t) * G + g) * 16;
        const __m512i comp = _mm512_loadu_si512(pw.comp + at);
        const __m512 sw = _mm512_loadu_ps(pw.scale + at);
        for (int r = 0; r < R; ++r) {
          const __m512 s = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[t][r][g], comp));
          out[t][r][g] = _mm512_mul_ps(_mm512_mul_ps(s, sw), _mm512_set1_ps(row_scale[r]));
        }
      }
  }
}

// Runs the product + update(args, r0, tile, acc) over every row and tile of
// one step for weights pw and the converted rows q (n rows, stride qs).
// Few rows: one row at a time with TT tiles in flight; many rows: tiles outer
// (a tile's weights stay in L1 while every row group passes), R rows at a time.
template <int G, bool kBf16, typename Update>
inline void dot_rows(const StepArgs& a, const PackedRec& pw, const uint32_t* q, std::size_t qs,
                     const float* scales, Update update) {
  // Unit tiles [tb, te): all, or this thread's slice in a split plan.
  const int tb = a.tile_begin;
  const int te = a.tile_end < 0 ? (pw.h + 15) / 16 : a.tile_end;
  assert(a.wx == nullptr);  // fused input projections are the plain kernels' (kernels.h)
  const int n = a.n;
  auto run = [&](auto rows_c, auto tiles_c, int r0, int t0) {
    constexpr int R = decltype(rows_c)::value;
    constexpr int T = decltype(tiles_c)::value;
    __m512 acc[T][R][G];
    dot_product<G, R, T, kBf16>(pw, t0, q + static_cast<std::size_t>(r0) * qs, qs,
                                kBf16 ? nullptr : scales + r0, acc);
    for (int t = 0; t < T; ++t) update(a, r0, t0 + t, acc[t]);
  };
  using One = std::integral_constant<int, 1>;
  // Fewer rows than a group: all of them at once (each weight vector loaded
  // once per step), with as many tiles in flight as keep ~kChains accumulators.
  auto few = [&](auto rows_c) {
    constexpr int R = decltype(rows_c)::value;
    constexpr int TT = kChains / (G * R) > 0 ? kChains / (G * R) : 1;
    int t = tb;
    for (; t + TT <= te; t += TT) run(rows_c, std::integral_constant<int, TT>(), 0, t);
    for (; t < te; ++t) run(rows_c, One(), 0, t);
  };
  static_assert(kRows == 4, "the cases below cover 1..kRows-1 rows");
  if (n < kRows) {
    if (n == 1) few(One());
    if (n == 2) few(std::integral_constant<int, 2>());
    if (n == 3) few(std::integral_constant<int, 3>());
    return;
  }
  for (int t = tb; t < te; ++t) {
    int r = 0;
    for (; r + kRows <= n; r += kRows) run(std::integral_constant<int, kRows>(), One(), r, t);
    for (; r < n; ++r) run(One(), One(), r, t);
  }
}

// Converts rows of x for the layout of pw into a.hq; returns the row stride
// (words) and sets *scales (int8 only).
inline std::size_t convert(const StepArgs& a, const PackedRec& pw, const float* x,
                           std::size_t ld, uint32_t** q, float** scales) {
  const std::size_t qs = hq_words(pw.k, pw.layout);
  // Within hq_floats_per_row(K) (kernels.h; not called here: ISA units share
  // no non-template inline functions with the rest, STYLE.md §3).
  assert(qs <= static_cast<std::size_t>(pw.k + 31) / 32 * 16 + 16);
  *q = reinterpret_cast<uint32_t*>(a.hq);
  *scales = a.hq + static_cast<std::size_t>(a.n) * qs;
  if (pw.layout == RecLayout::kPairs)
    to_bf16_pairs(x, ld, a.n, pw.k, *q, qs);
  else
    to_u8(x, ld, a.n, pw.k, *q, qs, *scales);
  return qs;
}

template <typename Body>
inline void with_layout(bool bf16, Body body) {
  if (bf16)
    body(std::true_type());
  else
    body(std::false_type());
}

template <Isa I>
void lstm_step(const StepArgs& a) {
  assert(a.w->layout != RecLayout::kPlain && a.hq != nullptr);
  uint32_t* q;
  float* sc;
  const std::size_t qs = convert(a, *a.w, a.h_prev, a.ld_h, &q, &sc);
  const bool dflt = a.act == Act::kTanh && a.ract == Act::kSigmoid;
  with_layout(a.w->layout == RecLayout::kPairs, [&](auto bc) {
    constexpr bool B = decltype(bc)::value;
    auto up = [dflt](const StepArgs& b, int r0, int t, auto& acc) {
      constexpr int R = static_cast<int>(sizeof(acc) / sizeof(acc[0]));
      if (dflt)
        rec_impl::lstm_update<I, R, true>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
      else
        rec_impl::lstm_update<I, R, false>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
    };
    dot_rows<4, B>(a, *a.w, q, qs, sc, up);
  });
}

template <Isa I>
void gru_step(const StepArgs& a) {
  assert(a.w->layout != RecLayout::kPlain && a.hq != nullptr);
  uint32_t* q;
  float* sc;
  const std::size_t qs = convert(a, *a.w, a.h_prev, a.ld_h, &q, &sc);
  const bool dflt = a.act == Act::kTanh && a.ract == Act::kSigmoid;
  with_layout(a.w->layout == RecLayout::kPairs, [&](auto bc) {
    constexpr bool B = decltype(bc)::value;
    auto up = [dflt](const StepArgs& b, int r0, int t, auto& acc) {
      constexpr int R = static_cast<int>(sizeof(acc) / sizeof(acc[0]));
      if (dflt)
        rec_impl::gru_update<I, R, true>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
      else
        rec_impl::gru_update<I, R, false>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
    };
    dot_rows<3, B>(a, *a.w, q, qs, sc, up);
  });
}

template <Isa I>
void gru_reset_before_step(const StepArgs& a) {
  assert(a.w->layout != RecLayout::kPlain && a.w2->layout == a.w->layout && a.hq != nullptr);
  with_layout(a.w->layout == RecLayout::kPairs, [&](auto bc) {
    constexpr bool B = decltype(bc)::value;
    uint32_t* q;
    float* sc;
    std::size_t qs = convert(a, *a.w, a.h_prev, a.ld_h, &q, &sc);
    dot_rows<2, B>(a, *a.w, q, qs, sc, [](const StepArgs& b, int r0, int t, auto& acc) {
      constexpr int R = static_cast<int>(sizeof(acc) / sizeof(acc[0]));
      rec_impl::gru_rb_update1<I, R, false>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
    });
    // Pass 2 reads r*h of every unit, complete now; converted like h.
    const int H = a.w->h;
    qs = convert(a, *a.w2, a.scratch + static_cast<std::size_t>(a.n) * H,
                 static_cast<std::size_t>(H), &q, &sc);
    dot_rows<1, B>(a, *a.w2, q, qs, sc, [](const StepArgs& b, int r0, int t, auto& acc) {
      constexpr int R = static_cast<int>(sizeof(acc) / sizeof(acc[0]));
      rec_impl::gru_rb_update2<I, R, false>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
    });
  });
}

template <Isa I>
void rnn_step(const StepArgs& a) {
  assert(a.w->layout != RecLayout::kPlain && a.hq != nullptr);
  uint32_t* q;
  float* sc;
  const std::size_t qs = convert(a, *a.w, a.h_prev, a.ld_h, &q, &sc);
  with_layout(a.w->layout == RecLayout::kPairs, [&](auto bc) {
    constexpr bool B = decltype(bc)::value;
    dot_rows<1, B>(a, *a.w, q, qs, sc, [](const StepArgs& b, int r0, int t, auto& acc) {
      constexpr int R = static_cast<int>(sizeof(acc) / sizeof(acc[0]));
      rec_impl::rnn_update<I, R>(b, r0, t, acc, rec_impl::xp_of<I>(b, r0, t));
    });
  });
}

}  // namespace dot_impl
}  // namespace rnninfer
