// Ops<Isa::kAvx512>: 16 float lanes in a zmm register (AVX-512 F/VL/BW/DQ).
// Include only from the AVX-512 translation units. The body is a template on
// the Isa value (OpsAvx512<I>) so that the AVX512_BF16 unit gets its own
// instantiation, Ops<Isa::kAvx512Bf16>, with its own symbols (see vec.h).
#pragma once

#include <immintrin.h>

#include "simd/vec.h"

namespace rnninfer {

template <Isa I>
struct OpsAvx512 {
  using V = __m512;
  using M = __mmask16;
  static constexpr int kLanes = 16;

  static inline __mmask16 tail_mask(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff)
                   : static_cast<__mmask16>((1u << (n < 0 ? 0 : n)) - 1u);
  }
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
  static inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  static inline V load_bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static inline V load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static inline V set1(float x) { return _mm512_set1_ps(x); }
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static inline V div(V a, V b) { return _mm512_div_ps(a, b); }
  static inline V recip(V d) {
    // vrcp14ps (relative error <= 2^-14) and one Newton step r + r (1 - d r).
    const V r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);
  }
  static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V min(V a, V b) { return _mm512_min_ps(a, b); }
  static inline V max(V a, V b) { return _mm512_max_ps(a, b); }
  static inline V abs(V a) { return _mm512_abs_ps(a); }
  static inline V neg(V a) {
    return _mm512_castsi512_ps(
        _mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(static_cast<int>(0x80000000u))));
  }
  static inline M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static inline M ge(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static inline M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static inline V select(M m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
  static inline V round(V a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static inline V copysign(V mag, V sgn) {
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_andnot_si512(sign, _mm512_castps_si512(mag)),
        _mm512_and_si512(sign, _mm512_castps_si512(sgn))));
  }
  static inline V scale2(V p, V n) { return _mm512_scalef_ps(p, n); }
  static inline V pow2i(V n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static inline V frexp(V x, V* e) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i ex = _mm512_sub_epi32(
        _mm512_and_si512(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(0xff)),
        _mm512_set1_epi32(126));
    *e = _mm512_cvtepi32_ps(ex);
    const __m512i m = _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x807fffff)),
                                      _mm512_set1_epi32(0x3f000000));
    return _mm512_castsi512_ps(m);
  }
  static inline float reduce_add(V a) { return _mm512_reduce_add_ps(a); }
  static inline float reduce_max(V a) { return _mm512_reduce_max_ps(a); }
};

template <>
struct Ops<Isa::kAvx512> : OpsAvx512<Isa::kAvx512> {};

}  // namespace rnninfer
