// Portable SIMD vocabulary shared by every kernel body.
//
// A kernel body (kernels/*-inl.h) is written once as a template on `Isa` and
// only uses the static functions of `Ops<Isa>` below. Each ISA translation
// unit (kernels_<isa>.cc) includes exactly one specialisation header and
// instantiates the bodies, so the compiler flags of that TU (-mavx2 -mfma,
// -mavx512f ...) never leak into code that runs on other CPUs.
//
// Ops<I> contract (V = vector of kLanes floats, M = lane mask):
//   load/store: unaligned; load_n/store_n touch only the first n < kLanes lanes
//   fma(a, b, c) = a * b + c; fused on SIMD ISAs, unfused on the scalar one.
//     Either way it is the same operation in every code path of one ISA, which
//     is what determinism needs (a sequence's bits do not depend on tiling).
//   min/max(a, b): if either is NaN the result is b (x86 semantics); callers
//     put the value to clamp second so that NaN propagates.
//   load_bf16(p): kLanes bfloat16 values (uint16 bit patterns) widened to
//     float exactly (the bf16 bits are the high half of the float's bits).
//   load_i8(p): kLanes int8 values converted to float (exact).
//   pow2i(n): 2^n for integer-valued n in [-126, 127].
//   scale2(p, n): p * 2^n for integer-valued n <= 127 and |p| < 2, exact
//     while the result is normal; below that 0 or the correctly rounded
//     denormal (ISA-dependent, 0 at the latest from n <= -127).
//   recip(d): 1/d for finite d >= 1, relative error <= 2^-21 while 1/d is
//     normal, exact at d = 1 (AVX-512: the vrcp14ps estimate refined by one
//     Newton step; elsewhere a true division); same bits for the same d.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Kernel helpers that must be inlined whatever the compiler's size heuristics
// say: a call boundary inside a step kernel spills every vector register
// (all are caller-saved) and stops the out-of-order core from overlapping one
// tile's activations with the next tile's products. Inlining never changes
// results (the operations and their order are the same).
#if defined(_MSC_VER) && !defined(__clang__)
#define RNNINFER_INLINE __forceinline
#define RNNINFER_NOINLINE __declspec(noinline)
#else
#define RNNINFER_INLINE inline __attribute__((always_inline))
#define RNNINFER_NOINLINE __attribute__((noinline))
#endif

namespace rnninfer {

// kAvx512Bf16: the AVX-512 vocabulary compiled again in the AVX512_BF16 +
// VNNI unit (kernels_avx512_bf16.cc). A distinct value so that every template
// instantiated there (Ops, kernel bodies) has its own symbols: the linker can
// never substitute a copy built with -mavx512bf16 for one the plain AVX-512
// table calls on a CPU without BF16 (the Highway rule, STYLE.md §3).
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3, kAvx512Bf16 = 4 };

template <Isa I>
struct Ops;

template <>
struct Ops<Isa::kScalar> {
  using V = float;
  using M = bool;
  static constexpr int kLanes = 1;

  static inline V load(const float* p) { return *p; }
  static inline void store(float* p, V v) { *p = v; }
  static inline V load_n(const float* p, int n) { return n > 0 ? *p : 0.0f; }
  static inline void store_n(float* p, V v, int n) {
    if (n > 0) *p = v;
  }
  static inline V load_bf16(const uint16_t* p) {
    const uint32_t bits = static_cast<uint32_t>(*p) << 16;
    float r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
  }
  static inline V load_i8(const int8_t* p) { return static_cast<float>(*p); }
  static inline V set1(float x) { return x; }
  static inline V zero() { return 0.0f; }
  static inline V add(V a, V b) { return a + b; }
  static inline V sub(V a, V b) { return a - b; }
  static inline V mul(V a, V b) { return a * b; }
  static inline V div(V a, V b) { return a / b; }
  static inline V recip(V d) { return 1.0f / d; }
  // Unfused on purpose: the scalar TU is built with -ffp-contract=off and the
  // baseline ISA has no FMA instruction (std::fma would be a slow libm call).
  static inline V fma(V a, V b, V c) { return a * b + c; }
  static inline V min(V a, V b) { return (a < b) ? a : b; }
  static inline V max(V a, V b) { return (a > b) ? a : b; }
  static inline V abs(V a) { return std::fabs(a); }
  static inline V neg(V a) { return -a; }
  static inline M gt(V a, V b) { return a > b; }
  static inline M ge(V a, V b) { return a >= b; }
  static inline M lt(V a, V b) { return a < b; }
  static inline V select(M m, V a, V b) { return m ? a : b; }
  static inline V round(V a) { return std::nearbyint(a); }
  static inline V copysign(V mag, V sgn) { return std::copysign(mag, sgn); }
  static inline V scale2(V p, V n) { return p * pow2i(n); }
  static inline V pow2i(V n) {
    // NaN (from a NaN input) must not reach the int conversion, which would
    // be undefined behaviour; it propagates through the caller's product.
    if (!(n >= -126.0f && n <= 127.0f)) return n != n ? n : (n > 0.0f ? HUGE_VALF : 0.0f);
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
  }
  static inline V frexp(V x, V* e) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    *e = static_cast<float>(static_cast<int32_t>((bits >> 23) & 0xff) - 126);
    bits = (bits & 0x807fffffu) | 0x3f000000u;
    float m;
    std::memcpy(&m, &bits, sizeof m);
    return m;
  }
  static inline float reduce_add(V a) { return a; }
  static inline float reduce_max(V a) { return a; }
};

}  // namespace rnninfer
