// Vector activation functions, written once for every ISA on top of Ops<I>.
//
// Numerical contract (float32 in, float32 out), measured against float64 in
// tests/kernels/test_activations.py for every compiled ISA:
//   exp:      relative error <= 2 ulp on [-87.3, 88.3]; inputs are clamped to
//             that range, so exp(+inf) = 2.4e38 (finite) and exp(-inf) ~ 1e-38.
//   sigmoid:  absolute error <= 1e-7 (measured 9.6e-8 on a dense grid), relative
//             error <= 4e-7 down to x = -88 (scalar: <= 5e-6 below x = -8, where
//             its unfused reduction rounds n ln2 first); sigmoid(+inf) = 1,
//             sigmoid(x <= -88) = sigmoid(-88) = 6.1e-39 (absolute error < 1e-38).
//   tanh:     absolute error <= 2e-7 (measured 1.8e-7), relative error <= 3e-7;
//             tanh(+-inf) = +-1; odd, exact at 0.
//   sigmoid_times_tanh(y, x) = sigmoid(y) * tanh(x) (the AVX-512 LSTM
//             cell's i * g and o * tanh(c)): absolute error <= 3e-7
//             (measured 2.4e-7), relative error <= 5e-7;
//             tests/kernels/test_small_steps.py.
//   sigmoid and tanh are the recurrent gates' functions, so they have no
//   division (a refined reciprocal estimate, Ops::recip) and no branch; the
//   estimate's bits are fixed per CPU and ISA, as the determinism contract
//   (SPEC §2) allows, and every path of an ISA uses the same functions.
//   gelu/erf: absolute error <= 2e-7 (Abramowitz & Stegun 7.1.26).
//   log (softplus, mish): relative error <= 2 ulp for normal inputs.
//   NaN in gives NaN out for every function here. Unbounded products at
//   infinities follow IEEE (swish(-inf) = -inf * 0 = NaN), as in the frameworks.
// Cephes single-precision polynomials (public domain algorithms) are used for
// exp and log; sigmoid's and tanh's are minimax fits of this project.
#pragma once

#include "kernels/kernels.h"
#include "simd/vec.h"

namespace rnninfer {
namespace act {

template <Isa I>
struct Math {
  using O = Ops<I>;
  using V = typename O::V;

  static RNNINFER_INLINE V exp(V x) {
    // Clamp keeps 2^n representable; max(lo, x) keeps NaN (Ops::max contract).
    x = O::min(O::set1(88.3762626647949f), x);
    x = O::max(O::set1(-87.3365447504f), x);
    const V n = O::round(O::mul(x, O::set1(1.44269504088896341f)));
    // Cody-Waite: ln2 split in two so r = x - n ln2 stays exact to ~1 ulp.
    V r = O::fma(n, O::set1(-0.693359375f), x);
    r = O::fma(n, O::set1(2.12194440e-4f), r);
    V p = O::set1(1.9875691500e-4f);
    p = O::fma(p, r, O::set1(1.3981999507e-3f));
    p = O::fma(p, r, O::set1(8.3334519073e-3f));
    p = O::fma(p, r, O::set1(4.1665795894e-2f));
    p = O::fma(p, r, O::set1(1.6666665459e-1f));
    p = O::fma(p, r, O::set1(5.0000001201e-1f));
    const V r2 = O::mul(r, r);
    p = O::fma(p, r2, O::add(r, O::set1(1.0f)));
    return O::mul(p, O::pow2i(n));
  }

  // Natural log for x > 0 (x <= 0 gives garbage; callers only pass 1 + e^y).
  static RNNINFER_INLINE V log(V x) {
    V e;
    V m = O::frexp(x, &e);
    // Bring m into [sqrt(1/2), sqrt(2)) for the polynomial.
    const auto small = O::lt(m, O::set1(0.707106781186547524f));
    e = O::select(small, O::sub(e, O::set1(1.0f)), e);
    m = O::select(small, O::add(m, m), m);
    const V f = O::sub(m, O::set1(1.0f));
    const V z = O::mul(f, f);
    V p = O::set1(7.0376836292e-2f);
    p = O::fma(p, f, O::set1(-1.1514610310e-1f));
    p = O::fma(p, f, O::set1(1.1676998740e-1f));
    p = O::fma(p, f, O::set1(-1.2420140846e-1f));
    p = O::fma(p, f, O::set1(1.4249322787e-1f));
    p = O::fma(p, f, O::set1(-1.6668057665e-1f));
    p = O::fma(p, f, O::set1(2.0000714765e-1f));
    p = O::fma(p, f, O::set1(-2.4999993993e-1f));
    p = O::fma(p, f, O::set1(3.3333331174e-1f));
    V y = O::mul(O::mul(p, f), z);
    y = O::fma(e, O::set1(-2.12194440e-4f), y);
    y = O::fma(z, O::set1(-0.5f), y);
    V r = O::add(f, y);
    r = O::fma(e, O::set1(0.693359375f), r);
    return r;
  }

  // sigmoid(x) = 1 / (1 + e), e = exp(-x) = 2^n exp(-r), with x clamped to
  // [-88, 88] so that e stays finite (and 1 + e a normal number for the
  // refined reciprocal estimate, Ops::recip, that replaces the division).
  // Relative accuracy holds in both tails (1 + e never cancels); below -88
  // the result stays sigmoid(-88) = 6.1e-39 instead of the true, smaller value.
  static RNNINFER_INLINE V sigmoid(V x) { return O::recip(sigmoid_den(x)); }

  // 1 + exp(-x) for sigmoid (x clamped to [-88, 88]): in [1, 1.66e38].
  static RNNINFER_INLINE V sigmoid_den(V x) {
    // max(lo, min(hi, x)) keeps NaN (Ops::min/max contract).
    const V xc = O::max(O::set1(-88.0f), O::min(O::set1(88.0f), x));
    const V n = O::round(O::mul(xc, O::set1(-1.44269504088896341f)));
    // r = x + n ln2 in [-ln2/2, ln2/2]; one rounded ln2 is enough: its error
    // (|n| * 1.9e-9) shows only where e or 1/(1 + e) is tiny.
    const V r = O::fma(n, O::set1(0.693147182464599609375f), xc);
    // Degree-5 minimax fit of exp(-r) on that range: relative error 7.5e-8.
    V p = O::set1(-8.297640830e-03f);
    p = O::fma(p, r, O::set1(4.191548005e-02f));
    p = O::fma(p, r, O::set1(-1.666757613e-01f));
    p = O::fma(p, r, O::set1(4.999889433e-01f));
    p = O::fma(p, r, O::set1(-9.999997020e-01f));
    p = O::fma(p, r, O::set1(1.000000119e+00f));
    return O::add(O::scale2(p, n), O::set1(1.0f));
  }

  // tanh(|x|) = -m / (2 + m) with m = expm1(-2|x|) in (-1, 0], computed as
  // 2^n expm1(-r) + (2^n - 1) so that it keeps its relative accuracy near 0
  // (n = 0 there): no cancellation, no separate small-argument branch. The
  // denominator lies in [1, 2] (Ops::recip); |x| is clamped to 44, where
  // m = -1 exactly. copysign makes it odd, including tanh(-0) = -0.
  static RNNINFER_INLINE V tanh(V x) {
    const V m = tanh_m(x);
    return O::copysign(O::mul(m, O::recip(O::add(m, O::set1(2.0f)))), x);
  }

  // sigmoid(y) * tanh(x), the products an LSTM cell takes (i * g and
  // o * tanh(c)), with one reciprocal instead of two: |m| / (d (2 + m)) with
  // d = sigmoid_den(y) and m from tanh_m(x). The denominator lies in
  // [1, 3.3e38], finite; the sign is x's, as in tanh().
  static RNNINFER_INLINE V sigmoid_times_tanh(V y, V x) {
    const V m = tanh_m(x);
    return O::copysign(O::mul(m, O::recip(O::mul(sigmoid_den(y), O::add(m, O::set1(2.0f))))), x);
  }

  // m = expm1(-2|x|) in (-1, 0] for tanh (see there); |x| clamped to 44.
  static RNNINFER_INLINE V tanh_m(V x) {
    const V a = O::min(O::set1(44.0f), O::abs(x));  // keeps NaN
    const V u = O::add(a, a);
    const V n = O::round(O::mul(u, O::set1(-1.44269504088896341f)));
    const V r = O::fma(n, O::set1(0.693147182464599609375f), u);
    // expm1(-r) = r * P(r), P a degree-5 minimax fit (relative error 1.1e-8).
    V p = O::set1(1.388887293e-03f);
    p = O::fma(p, r, O::set1(-8.369082585e-03f));
    p = O::fma(p, r, O::set1(4.166713730e-02f));
    p = O::fma(p, r, O::set1(-1.666650623e-01f));
    p = O::fma(p, r, O::set1(4.999999702e-01f));
    p = O::fma(p, r, O::set1(-1.0f));
    const V pow2n = O::scale2(O::set1(1.0f), n);
    return O::fma(pow2n, O::mul(p, r), O::sub(pow2n, O::set1(1.0f)));
  }

  static RNNINFER_INLINE V softplus(V x) {
    // max(x, 0) + log(1 + e^{-|x|}): never overflows.
    const V t = exp(O::neg(O::abs(x)));
    return O::add(O::max(O::zero(), x), log(O::add(O::set1(1.0f), t)));
  }

  static RNNINFER_INLINE V erf(V x) {
    const V ax = O::abs(x);
    const V t = O::div(O::set1(1.0f), O::fma(O::set1(0.3275911f), ax, O::set1(1.0f)));
    V p = O::set1(1.061405429f);
    p = O::fma(p, t, O::set1(-1.453152027f));
    p = O::fma(p, t, O::set1(1.421413741f));
    p = O::fma(p, t, O::set1(-0.284496736f));
    p = O::fma(p, t, O::set1(0.254829592f));
    p = O::mul(p, t);
    const V y = O::sub(O::set1(1.0f), O::mul(p, exp(O::neg(O::mul(ax, ax)))));
    return O::copysign(y, x);
  }

  static RNNINFER_INLINE V hard_sigmoid(V x, float slope) {
    const V y = O::fma(x, O::set1(slope), O::set1(0.5f));
    return O::min(O::set1(1.0f), O::max(O::zero(), y));
  }

  static inline V apply(Act a, V x) {
    switch (a) {
      case Act::kLinear:
        return x;
      case Act::kRelu:
        return O::max(O::zero(), x);
      case Act::kTanh:
        return tanh(x);
      case Act::kSigmoid:
        return sigmoid(x);
      case Act::kHardSigmoid:
        return hard_sigmoid(x, 1.0f / 6.0f);
      case Act::kHardSigmoidKeras2:
        return hard_sigmoid(x, 0.2f);
      case Act::kElu: {
        const V neg = O::sub(exp(x), O::set1(1.0f));
        return O::select(O::gt(x, O::zero()), x, neg);
      }
      case Act::kSelu: {
        const V neg = O::mul(O::set1(1.6732632423543772f), O::sub(exp(x), O::set1(1.0f)));
        return O::mul(O::set1(1.0507009873554805f), O::select(O::gt(x, O::zero()), x, neg));
      }
      case Act::kSoftplus:
        return softplus(x);
      case Act::kSoftsign:
        return O::div(x, O::add(O::set1(1.0f), O::abs(x)));
      case Act::kSwish:
        // 0 below -88 (sigmoid keeps 6e-39 there, times a huge |x|); -inf * 0 = NaN.
        return O::mul(x, O::select(O::lt(x, O::set1(-88.0f)), O::zero(), sigmoid(x)));
      case Act::kGelu:
        return O::mul(O::mul(O::set1(0.5f), x),
                      O::add(O::set1(1.0f), erf(O::mul(x, O::set1(0.70710678118654752f)))));
      case Act::kExponential:
        return exp(x);
      case Act::kRelu6:
        return O::min(O::set1(6.0f), O::max(O::zero(), x));
      case Act::kLeakyRelu:
        return O::select(O::lt(x, O::zero()), O::mul(x, O::set1(0.2f)), x);
      case Act::kMish:
        return O::mul(x, tanh(softplus(x)));
      case Act::kHardSwish:
        return O::mul(x, hard_sigmoid(x, 1.0f / 6.0f));
      case Act::kSoftmax:
      case Act::kLogSoftmax:
        break;  // vector activations are applied by apply_row, never per element
    }
    return x;
  }
};

}  // namespace act
}  // namespace rnninfer
