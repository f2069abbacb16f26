// Kernel table for AVX-512 F/VL/BW/DQ (16 lanes). Compiled with: -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma -ffp-contract=off.
// Instantiates the ISA-generic bodies of gemm-inl.h and recurrent-inl.h;
// see those files for equations, layouts, tails and the numerical contract.
// Tiles: gemm 2 vectors x 6 rows; recurrent steps 4 rows at a time.
#include "simd/vec_avx512.h"
#include "kernels/gemm-inl.h"
#include "kernels/kernels.h"
#include "kernels/probe-inl.h"
#include "kernels/recurrent-inl.h"

namespace rnninfer {
namespace kernels {
namespace avx512 {
namespace {
constexpr Isa kIsa = Isa::kAvx512;
constexpr int kGemmVectors = 2;
constexpr int kGemmRows = 6;
constexpr int kStepRows = 4;
}  // namespace

const KernelTable& table() {
  static const KernelTable t = {
      "avx512",
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

}  // namespace avx512
}  // namespace kernels
}  // namespace rnninfer
