// Kernel table for AVX2 + FMA (8 lanes). Compiled with: -mavx2 -mfma -ffp-contract=off.
// Instantiates the ISA-generic bodies of gemm-inl.h and recurrent-inl.h;
// see those files for equations, layouts, tails and the numerical contract.
// Tiles: gemm 2 vectors x 6 rows; recurrent steps 2 rows at a time.
#include "simd/vec_avx2.h"
#include "kernels/gemm-inl.h"
#include "kernels/kernels.h"
#include "kernels/probe-inl.h"
#include "kernels/recurrent-inl.h"

namespace rnninfer {
namespace kernels {
namespace avx2 {
namespace {
constexpr Isa kIsa = Isa::kAvx2;
constexpr int kGemmVectors = 2;
constexpr int kGemmRows = 6;
constexpr int kStepRows = 2;
}  // namespace

const KernelTable& table() {
  static const KernelTable t = {
      "avx2",
      kGemmVectors * Ops<kIsa>::kLanes,
      Ops<kIsa>::kLanes,
      &gemm_impl::gemm<kIsa, kGemmVectors, kGemmRows>,
      &rec_impl::lstm_step<kIsa, kStepRows>,
      &rec_impl::gru_step<kIsa, kStepRows>,
      &rec_impl::gru_reset_before_step<kIsa, kStepRows>,
      &rec_impl::rnn_step<kIsa, kStepRows>,
      &rec_impl::activate<kIsa>,
      RecLayout::kPlain,
      RecLayout::kPlain,
      RecLayout::kPlain,
      RecLayout::kPlain,
      &probe_impl::fma_chain<kIsa>,
  };
  return t;
}

}  // namespace avx2
}  // namespace kernels
}  // namespace rnninfer
