// Typed access to packed weights for the ISA-generic kernel bodies.
//
// WeightOps<I, T> gives, for weight element type T (kernels.h WType), the
// element type E, the base pointer of a packed operand and a load of kLanes
// elements widened to fp32 (Ops<I>::load / load_bf16 / load_i8). Kernel
// bodies are templates on T, so each type gets its own instantiation with
// no per-element branch; the entry points switch on PackedRec/PackedGemm
// ::type once per call.
//
// Widening in registers is the path of every ISA: the recurrent product at
// small batch is bound by the bytes of weights streamed per step, which the
// reduced types already halve or quarter; activations, state and
// accumulation stay fp32, so the only error is the weight rounding itself,
// and the per-element operation order (acc = 0; acc = fma(w_k, h_k, acc),
// k ascending) is the fp32 one. Where the CPU has AVX512_BF16 + VNNI, the
// avx512_bf16 table packs recurrent weights for dot-product instructions on
// reduced activations instead (recurrent_dot_avx512-inl.h), which measured
// faster within the accuracy bounds. See docs/precision.md.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"
#include "simd/vec.h"

namespace rnninfer {
namespace wload {

template <Isa I, WType T>
struct WeightOps;

template <Isa I>
struct WeightOps<I, WType::kF32> {
  using E = float;
  static inline typename Ops<I>::V load(const E* p) { return Ops<I>::load(p); }
  template <typename P>
  static inline const E* base(const P& w) { return w.data; }
};

template <Isa I>
struct WeightOps<I, WType::kBf16> {
  using E = uint16_t;
  static inline typename Ops<I>::V load(const E* p) { return Ops<I>::load_bf16(p); }
  template <typename P>
  static inline const E* base(const P& w) { return w.bf16; }
};

template <Isa I>
struct WeightOps<I, WType::kI8> {
  using E = int8_t;
  static inline typename Ops<I>::V load(const E* p) { return Ops<I>::load_i8(p); }
  template <typename P>
  static inline const E* base(const P& w) { return w.i8; }
};

}  // namespace wload
}  // namespace rnninfer
