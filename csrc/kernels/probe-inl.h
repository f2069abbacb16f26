// fma_chain_<isa>: a machine probe for benchmarks, not used by the engine.
//
// Equations: x <- fma(x, a, b), n times, on one vector of kLanes floats, each
// FMA depending on the one before; returns lane 0. Timed by
// _core._testing.fma_chain_seconds, it gives the latency of one dependent
// vector FMA of this ISA (scalar: a multiply and an add, unfused, as the
// scalar kernels compute). That latency times K is the shortest time one
// recurrent product of reduction length K can take: the kernels' contract
// (kernels.h) sums each output element in one accumulator in increasing k, so
// its K FMAs form one dependency chain. The batch-1 latency-chain limit of
// the small-models benchmark (rnninfer.bench.small) is built on it.
// Layout, tails, alignment: none (registers only). Numerical contract: none
// (a, b are chosen so that x stays finite and normal).
#pragma once

#include "kernels/kernels.h"
#include "simd/vec.h"

namespace rnninfer {
namespace probe_impl {

template <Isa I>
float fma_chain(float x, long n) {
  using O = Ops<I>;
  // x' = x * 0.5 + 0.5 converges to 1 and stays normal for any start in (0, 2).
  const typename O::V a = O::set1(0.5f), b = O::set1(0.5f);
  typename O::V v = O::set1(x);
  for (long i = 0; i < n; ++i) v = O::fma(v, a, b);
  return O::reduce_add(v) / static_cast<float>(O::kLanes);
}

}  // namespace probe_impl
}  // namespace rnninfer
