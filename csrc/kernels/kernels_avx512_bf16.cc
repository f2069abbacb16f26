// Kernel table "avx512_bf16": AVX-512 F/VL/BW/DQ plus AVX512_BF16 and
// AVX512_VNNI. Compiled with: -mavx512f -mavx512vl -mavx512bw -mavx512dq
// -mavx512bf16 -mavx512vnni -mavx2 -mfma -ffp-contract=off.
// The products with reduced weights run dot-product instructions on reduced
// activations: bf16 weights (packed as K-pairs) take activations rounded to
// bf16 and run vdpbf16ps; int8 weights (packed as K-quads) take activations
// quantised per row to u8 + offset and run vpdpbusd. That holds for the
// recurrent steps (recurrent_dot_avx512-inl.h) and the input-projection gemm
// (gemm_dot_avx512-inl.h). Everything else (fp32 weights, activations, plain
// layouts) calls the "avx512" table's functions, so fp32 models run the same
// machine code as there. docs/precision.md has the measured trade-off.
// The dot kernels and the pointwise updates they call are instantiated for
// Isa::kAvx512Bf16 (own symbols, see simd/vec.h).
// Tiles: dot gemm 2 vectors x 6 rows; dot steps 4 rows at a time, or one row
// with up to 16 accumulators in flight.
#include "simd/vec_avx512.h"

namespace rnninfer {
// Declared before any kernel body is seen, so every instantiation uses it.
template <>
struct Ops<Isa::kAvx512Bf16> : OpsAvx512<Isa::kAvx512Bf16> {};
}  // namespace rnninfer

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

// Entries: the packed layout says which product the weights were packed for;
// plain layouts are the "avx512" table's.
void gemm(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c, std::size_t ldc) {
  if (w.layout == RecLayout::kPlain) return avx512::table().gemm(w, a, lda, m, c, ldc);
  dot_impl::gemm<kGemmVectors, kGemmRows>(w, a, lda, m, c, ldc);
}
void lstm_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return avx512::table().lstm_step(a);
  dot_impl::lstm_step<kIsa>(a);
}
void gru_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return avx512::table().gru_step(a);
  dot_impl::gru_step<kIsa>(a);
}
void gru_reset_before_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return avx512::table().gru_reset_before_step(a);
  dot_impl::gru_reset_before_step<kIsa>(a);
}
void rnn_step(const StepArgs& a) {
  if (a.w->layout == RecLayout::kPlain) return avx512::table().rnn_step(a);
  dot_impl::rnn_step<kIsa>(a);
}
}  // namespace

const KernelTable& table() {
  // The "avx512" table with the entries above; made on first use (after the
  // CPU check in dispatch.cc), never at static-initialisation time.
  static const KernelTable t = [] {
    KernelTable k = avx512::table();
    k.name = "avx512_bf16";
    k.gemm = &gemm;
    k.lstm_step = &lstm_step;
    k.gru_step = &gru_step;
    k.gru_reset_before_step = &gru_reset_before_step;
    k.rnn_step = &rnn_step;
    k.bf16_rec_layout = RecLayout::kPairs;
    k.i8_rec_layout = RecLayout::kQuads;
    k.bf16_gemm_layout = RecLayout::kPairs;
    k.i8_gemm_layout = RecLayout::kQuads;
    return k;
  }();
  return t;
}

}  // namespace avx512_bf16
}  // namespace kernels
}  // namespace rnninfer
