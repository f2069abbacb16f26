// Kernel table "avx512_bf16": AVX-512 F/VL/BW/DQ plus AVX512_BF16 and
// AVX512_VNNI. Compiled with: -mavx512f -mavx512vl -mavx512bw -mavx512dq
// -mavx512bf16 -mavx512vnni -mavx2 -mfma -ffp-contract=off.
// Everything the "avx512" table does, instantiated again here for
// Isa::kAvx512Bf16 (own symbols, see simd/vec.h), except the products with
// reduced weights, which run dot-product instructions on reduced activations:
// bf16 weights (packed as K-pairs) take activations rounded to bf16 and run
// vdpbf16ps; int8 weights (packed as K-quads) take activations quantised per
// row to u8 + offset and run vpdpbusd. That holds for the recurrent steps
// (recurrent_dot_avx512-inl.h) and the input-projection gemm
// (gemm_dot_avx512-inl.h); fp32 weights take the widen/fp32 bodies, exactly
// as "avx512". docs/precision.md has the measured trade-off.
// Tiles: gemm 2 vectors x 6 rows; fp32 steps 4 rows at a time; dot steps
// 4 rows at a time, or one row with up to 16 accumulators in flight.
#include "simd/vec_avx512.h"

namespace rnninfer {
// Declared before any kernel body is seen, so every instantiation uses it.
template <>
struct Ops<Isa::kAvx512Bf16> : OpsAvx512<Isa::kAvx512Bf16> {};
}  // namespace rnninfer

#include "kernels/gemm-inl.h"
#include "kernels/kernels.h"
#include "kernels/recurrent-inl.h"
#include "kernels/gemm_dot_avx512-inl.h"
#include "kernels/recurrent_dot_avx512-inl.h"

namespace rnninfer {
namespace kernels {
namespace avx512_bf16 {
namespace {
constexpr Isa kIsa = Isa::kAvx512Bf16;
constexpr int kGemmVectors = 2;
constexpr int kGemmRows = 6;
constexpr int kStepRows = 4;

// Gemm entry: kPairs / kQuads operands run the dot-product gemm.
void gemm(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c, std::size_t ldc) {
  if (w.layout == RecLayout::kPlain)
    return gemm_impl::gemm<kIsa, kGemmVectors, kGemmRows>(w, a, lda, m, c, ldc);
  dot_impl::gemm<kGemmVectors, kGemmRows>(w, a, lda, m, c, ldc);
}

// Step entries: the packed layout says which product the weights were packed for.
void lstm_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return rec_impl::lstm_step<kIsa, kStepRows>(a);
  dot_impl::lstm_step<kIsa>(a);
}
void gru_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return rec_impl::gru_step<kIsa, kStepRows>(a);
  dot_impl::gru_step<kIsa>(a);
}
void gru_reset_before_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return rec_impl::gru_reset_before_step<kIsa, kStepRows>(a);
  dot_impl::gru_reset_before_step<kIsa>(a);
}
void rnn_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return rec_impl::rnn_step<kIsa, kStepRows>(a);
  dot_impl::rnn_step<kIsa>(a);
}
}  // namespace

const KernelTable& table() {
  static const KernelTable t = {
      "avx512_bf16",
      kGemmVectors * Ops<kIsa>::kLanes,
      Ops<kIsa>::kLanes,
      &gemm,
      &lstm_step,
      &gru_step,
      &gru_reset_before_step,
      &rnn_step,
      &rec_impl::activate<kIsa>,
      RecLayout::kPairs,
      RecLayout::kQuads,
      RecLayout::kPairs,
      RecLayout::kQuads,
  };
  return t;
}

}  // namespace avx512_bf16
}  // namespace kernels
}  // namespace rnninfer
