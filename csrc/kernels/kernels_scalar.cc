// Kernel table for the portable scalar fallback. Compiled with: baseline flags and -ffp-contract=off (no FMA contraction, so results do not depend on the compiler's choices).
// Instantiates the ISA-generic bodies of gemm-inl.h and recurrent-inl.h;
// see those files for equations, layouts, tails and the numerical contract.
// Tiles: gemm 4 vectors x 2 rows; recurrent steps 2 rows at a time.
#include "simd/vec.h"
#include "kernels/gemm-inl.h"
#include "kernels/kernels.h"
#include "kernels/probe-inl.h"
#include "kernels/recurrent-inl.h"

namespace rnninfer {
namespace kernels {
namespace scalar {
namespace {
constexpr Isa kIsa = Isa::kScalar;
constexpr int kGemmVectors = 4;
constexpr int kGemmRows = 2;
constexpr int kStepRows = 2;
}  // namespace

const KernelTable& table() {
  static const KernelTable t = {
      "scalar",
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

}  // namespace scalar
}  // namespace kernels
}  // namespace rnninfer
