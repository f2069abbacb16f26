// Recurrent step kernels (lstm_step_<isa>, gru_step_<isa>,
// gru_reset_before_step_<isa>, rnn_step_<isa>): the recurrent product
// W_h h of one step fused with the cell's pointwise update.
//
// Equations: docs/format.md ("Cell equations"). The input projection
// W_x x + b (all biases that are outside the reset gate folded in) arrives
// precomputed in `xp`, so a step only streams the recurrent weights; or, for
// small layers at many rows (StepArgs::wx), each row group computes it per
// unit tile just before the recurrent product, with the gemm's operations,
// so that the gate sums are the same bits either way.
// Layout: PackedRec (kernels.h): unit tiles of kLanes units, each holding all
// G gates for every k, so the update of a tile's units follows its product
// while the gate sums are still in registers. Rows (sequences) are processed
// RB at a time to reuse each loaded weight vector RB times.
// Tails: the last tile uses masked loads/stores; weights past H are zero.
// Determinism: per element acc = 0, acc = fma(w, h_k, acc) for k = 0..K-1,
// (int8 weights: acc = acc * scale of the unit's gate row), then the same
// pointwise code for every row group size and tile position.
// Precision: w is fp32, bf16 or int8 (PackedRec::type); reduced weights are
// widened to fp32 as they are loaded (weights-inl.h), everything else is fp32.
// Each step entry switches on the type once and runs a body instantiated for it.
// Preconditions (checked by the engine, asserted in debug builds): h_prev,
// h_next, c_prev, c_next do not alias; y may be nullptr.
#pragma once

#include <cassert>
#include <cstddef>
#include <type_traits>

#include "kernels/activations-inl.h"
#include "kernels/kernels.h"
#include "kernels/weights-inl.h"
#include "simd/vec.h"

namespace rnninfer {
namespace rec_impl {

// acc[r][g] += W_g(tile)[k0:k1] h_r[k0:k1] for the G gates of one unit tile.
template <Isa I, int G, int RB, WType T>
RNNINFER_INLINE void accumulate(const PackedRec& pw, int tile, int k0, int k1, const float* h,
                                std::size_t ld_h, typename Ops<I>::V (&acc)[RB][G]) {
  using O = Ops<I>;
  using V = typename O::V;
  using W = wload::WeightOps<I, T>;
  constexpr int L = O::kLanes;
  const typename W::E* w =
      W::base(pw) + (static_cast<std::size_t>(tile) * pw.k + k0) * G * L;
  for (int k = k0; k < k1; ++k, w += G * L) {
    V wv[G];
    for (int g = 0; g < G; ++g) wv[g] = W::load(w + g * L);
    for (int r = 0; r < RB; ++r) {
      const V hv = O::set1(h[r * ld_h + k]);
      for (int g = 0; g < G; ++g) acc[r][g] = O::fma(wv[g], hv, acc[r][g]);
    }
  }
}

// acc[r][g] = W_g(tile) h_r for the G gates of one unit tile. With k_begin > 0
// the sums over k < k_begin were computed before (partial_sums) and are read
// from `partial` (G * kLanes floats per row): storing and reloading an
// accumulator does not change it, so the result is bit-identical to one pass.
template <Isa I, int G, int RB, WType T>
RNNINFER_INLINE void product(const PackedRec& pw, int tile, const float* h, std::size_t ld_h,
                             typename Ops<I>::V (&acc)[RB][G], int k_begin, const float* partial) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  for (int r = 0; r < RB; ++r)
    for (int g = 0; g < G; ++g)
      acc[r][g] = k_begin > 0 ? O::load(partial + (r * G + g) * L) : O::zero();
  accumulate<I, G, RB, T>(pw, tile, k_begin, pw.k, h, ld_h, acc);
  if (T == WType::kI8) {
    // Integer weights summed exactly in fp32 products; one scale per gate row.
    const float* sc = pw.scale + static_cast<std::size_t>(tile) * G * L;
    for (int g = 0; g < G; ++g) {
      const V s = O::load(sc + g * L);
      for (int r = 0; r < RB; ++r) acc[r][g] = O::mul(acc[r][g], s);
    }
  }
}

// Independent accumulator chains worth keeping in flight when rows run alone
// (batch 1, a row-group tail): one FMA chain issues once per FMA latency
// (4 cycles on current x86 cores), so the FMA units idle unless latency x
// FMAs issued per cycle chains are in flight. A row of an LSTM tile has 4
// (one per gate), a GRU tile 3, an RNN tile 1; a pass over K then takes
// several unit tiles (tiles_per_pass). Each element still has its own single
// accumulator summed in increasing k, so the bits are those of one tile per
// pass. Measured on Zen 4 (one 512-bit FMA per cycle, two 256-bit): 4 chains
// of zmm saturate it, and a pass over 2-4 LSTM(64) tiles at once (8-16
// chains) was 15-35 % slower than one tile at a time (more concurrent L2
// streams for no more FMA throughput); AVX2 issues two ymm FMAs per cycle,
// hence 8 there.
template <Isa I>
constexpr int chains() {
  return Ops<I>::kLanes == 8 ? 8 : 4;
}

// Most unit tiles in one pass (each remainder count gets its own instance).
constexpr int kMaxTilesPerPass = 8;

// Unit tiles per pass for R rows of G gates: enough for chains<I>() accumulators.
template <Isa I, int G, int R>
constexpr int tiles_per_pass() {
  constexpr int t = chains<I>() / (G * R);
  return t < 1 ? 1 : (t > kMaxTilesPerPass ? kMaxTilesPerPass : t);
}

// acc[r][j][g] = W_g(tile0 + j) h_r for TB consecutive unit tiles, all of K
// in one pass (no partial sums): the same per-element operations as product().
template <Isa I, int G, int RB, int TB, WType T>
RNNINFER_INLINE void product_tiles(const PackedRec& pw, int tile0, const float* h, std::size_t ld_h,
                                   typename Ops<I>::V (&acc)[RB][TB][G]) {
  using O = Ops<I>;
  using V = typename O::V;
  using W = wload::WeightOps<I, T>;
  constexpr int L = O::kLanes;
  const std::size_t tile_stride = static_cast<std::size_t>(pw.k) * G * L;
  const typename W::E* w = W::base(pw) + static_cast<std::size_t>(tile0) * tile_stride;
  for (int r = 0; r < RB; ++r)
    for (int j = 0; j < TB; ++j)
      for (int g = 0; g < G; ++g) acc[r][j][g] = O::zero();
  for (int k = 0; k < pw.k; ++k, w += G * L) {
    V hv[RB];
    for (int r = 0; r < RB; ++r) hv[r] = O::set1(h[r * ld_h + k]);
    for (int j = 0; j < TB; ++j)
      for (int g = 0; g < G; ++g) {
        const V wv = W::load(w + j * tile_stride + g * L);
        for (int r = 0; r < RB; ++r) acc[r][j][g] = O::fma(wv, hv[r], acc[r][j][g]);
      }
  }
  if (T == WType::kI8) {
    for (int j = 0; j < TB; ++j) {
      const float* sc = pw.scale + static_cast<std::size_t>(tile0 + j) * G * L;
      for (int g = 0; g < G; ++g) {
        const V s = O::load(sc + g * L);
        for (int r = 0; r < RB; ++r) acc[r][j][g] = O::mul(acc[r][j][g], s);
      }
    }
  }
}

// K steps per chunk when many rows share a step: the chunk of one tile's
// weights (~16 KiB) stays in L1 while every row group passes over it, instead
// of the whole tile being streamed from L2 once per row group.
template <Isa I, int G, WType T>
constexpr int chunk_k() {
  constexpr int bytes = G * Ops<I>::kLanes *
                        static_cast<int>(sizeof(typename wload::WeightOps<I, T>::E));
  return 16384 / bytes < 16 ? 16 : 16384 / bytes;
}

// partial[r] = sums over k < k_end of one tile, for rows [0, n), chunk by chunk.
template <Isa I, int G, int RB, WType T>
inline void partial_sums(const PackedRec& pw, int tile, const float* h, std::size_t ld_h, int n,
                         int k_end, float* partial) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  constexpr int KC = chunk_k<I, G, T>();
  auto group = [&](auto rows_c, int r0, int k0, int k1) {
    constexpr int R = decltype(rows_c)::value;
    V acc[R][G];
    float* p = partial + static_cast<std::size_t>(r0) * G * L;
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) acc[r][g] = k0 > 0 ? O::load(p + (r * G + g) * L) : O::zero();
    accumulate<I, G, R, T>(pw, tile, k0, k1, h + r0 * ld_h, ld_h, acc);
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) O::store(p + (r * G + g) * L, acc[r][g]);
  };
  for (int k0 = 0; k0 < k_end; k0 += KC) {
    const int k1 = k0 + KC < k_end ? k0 + KC : k_end;
    int r0 = 0;
    for (; r0 + RB <= n; r0 += RB) group(std::integral_constant<int, RB>(), r0, k0, k1);
    for (; r0 < n; ++r0) group(std::integral_constant<int, 1>(), r0, k0, k1);
  }
}

template <Isa I>
inline typename Ops<I>::V ld(const float* p, int nu) {
  return nu == Ops<I>::kLanes ? Ops<I>::load(p) : Ops<I>::load_n(p, nu);
}
template <Isa I>
inline void st(float* p, typename Ops<I>::V v, int nu) {
  if (nu == Ops<I>::kLanes)
    Ops<I>::store(p, v);
  else
    Ops<I>::store_n(p, v, nu);
}

// Where an update reads the input projections of its rows: gate g of row r
// (r counted from the group's first row) at p + r * ld_row + g * ld_gate.
// From the block's xp (xp_of), or from the tile-local buffer a fused input
// projection wrote (fused_x).
struct XpRef {
  const float* p;
  std::size_t ld_row;
  std::size_t ld_gate;
};

template <Isa I>
RNNINFER_INLINE XpRef xp_of(const StepArgs& a, int r0, int tile) {
  return XpRef{a.xp + r0 * a.ld_xp + tile * Ops<I>::kLanes, a.ld_xp, static_cast<std::size_t>(a.w->h)};
}

// Gate and candidate activations; the common (sigmoid, tanh) pair skips the
// switch so the compiler can inline and schedule the polynomials.
template <Isa I, bool kDefault>
struct Acts {
  using V = typename Ops<I>::V;
  Act act, ract;
  RNNINFER_INLINE V gate(V x) const {
    return kDefault ? act::Math<I>::sigmoid(x) : act::Math<I>::apply(ract, x);
  }
  RNNINFER_INLINE V cand(V x) const {
    return kDefault ? act::Math<I>::tanh(x) : act::Math<I>::apply(act, x);
  }
};

// The pointwise updates take the gate sums of RB rows x one unit tile (acc,
// the recurrent products without biases) and finish the step for them. They
// are shared by the widen-in-registers products below and the dot-product
// kernels of recurrent_dot_avx512-inl.h.
template <Isa I, int RB, bool kDefault>
RNNINFER_INLINE void lstm_update(const StepArgs& a, int r0, int tile, typename Ops<I>::V (&acc)[RB][4],
                                 XpRef xs) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  const int H = a.w->h;
  const int u0 = tile * L;
  const int nu = H - u0 < L ? H - u0 : L;
  const Acts<I, kDefault> f{a.act, a.ract};
  for (int r = 0; r < RB; ++r) {
    const float* xp = xs.p + r * xs.ld_row;
    const V gf = f.gate(O::add(acc[r][1], ld<I>(xp + xs.ld_gate, nu)));
    const V si = O::add(acc[r][0], ld<I>(xp, nu));
    const V sg = O::add(acc[r][2], ld<I>(xp + 2 * xs.ld_gate, nu));
    const V so = O::add(acc[r][3], ld<I>(xp + 3 * xs.ld_gate, nu));
    const V cp = ld<I>(a.c_prev + (r0 + r) * a.ld_c + u0, nu);
    V c, h;
    if constexpr (kDefault && O::kLanes == 16) {
      // AVX-512: i * g and o * tanh(c) with one reciprocal each (vrcp14ps and
      // a Newton step; activations-inl.h), 6 fewer FMA-pipe operations per
      // unit vector: 2-3 % off a step at 64 rows, 3-8 % at 1-4 rows. AVX2
      // keeps two divisions per product: one shared divisor put them in one
      // chain and made its lone-row step 1.7x slower.
      c = O::fma(gf, cp, act::Math<I>::sigmoid_times_tanh(si, sg));
      h = act::Math<I>::sigmoid_times_tanh(so, c);
    } else {
      c = O::fma(gf, cp, O::mul(f.gate(si), f.cand(sg)));
      h = O::mul(f.gate(so), f.cand(c));
    }
    st<I>(a.c_next + (r0 + r) * a.ld_c + u0, c, nu);
    st<I>(a.h_next + (r0 + r) * a.ld_hn + u0, h, nu);
    if (a.y) st<I>(a.y + (r0 + r) * a.ld_y + u0, h, nu);
  }
}

template <Isa I, int RB, bool kDefault>
RNNINFER_INLINE void gru_update(const StepArgs& a, int r0, int tile, typename Ops<I>::V (&acc)[RB][3],
                                XpRef xs) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  const int H = a.w->h;
  const int u0 = tile * L;
  const int nu = H - u0 < L ? H - u0 : L;
  const Acts<I, kDefault> f{a.act, a.ract};
  const V bhn = a.b_hn ? ld<I>(a.b_hn + u0, nu) : O::zero();
  for (int r = 0; r < RB; ++r) {
    const float* xp = xs.p + r * xs.ld_row;
    const V gr = f.gate(O::add(acc[r][0], ld<I>(xp, nu)));
    const V gz = f.gate(O::add(acc[r][1], ld<I>(xp + xs.ld_gate, nu)));
    const V gn = f.cand(O::fma(gr, O::add(acc[r][2], bhn), ld<I>(xp + 2 * xs.ld_gate, nu)));
    const V hp = ld<I>(a.h_prev + (r0 + r) * a.ld_h + u0, nu);
    const V h = O::fma(gz, hp, O::mul(O::sub(O::set1(1.0f), gz), gn));
    st<I>(a.h_next + (r0 + r) * a.ld_hn + u0, h, nu);
    if (a.y) st<I>(a.y + (r0 + r) * a.ld_y + u0, h, nu);
  }
}

// GRU with the reset gate before the product, pass 1: r and z, then r*h and
// z are parked in scratch (n x H each) for pass 2, which needs r*h of all units.
template <Isa I, int RB, bool kDefault>
RNNINFER_INLINE void gru_rb_update1(const StepArgs& a, int r0, int tile, typename Ops<I>::V (&acc)[RB][2],
                                    XpRef xs) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  const int H = a.w->h;
  const int u0 = tile * L;
  const int nu = H - u0 < L ? H - u0 : L;
  const Acts<I, kDefault> f{a.act, a.ract};
  float* zs = a.scratch;
  float* rh = a.scratch + static_cast<std::size_t>(a.n) * H;
  for (int r = 0; r < RB; ++r) {
    const float* xp = xs.p + r * xs.ld_row;
    const V gr = f.gate(O::add(acc[r][0], ld<I>(xp, nu)));
    const V gz = f.gate(O::add(acc[r][1], ld<I>(xp + xs.ld_gate, nu)));
    const V hp = ld<I>(a.h_prev + (r0 + r) * a.ld_h + u0, nu);
    st<I>(zs + (r0 + r) * H + u0, gz, nu);
    st<I>(rh + (r0 + r) * H + u0, O::mul(gr, hp), nu);
  }
}

template <Isa I, int RB, bool kDefault>
RNNINFER_INLINE void gru_rb_update2(const StepArgs& a, int r0, int tile, typename Ops<I>::V (&acc)[RB][1],
                                    XpRef xs) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  const int H = a.w2->h;
  const int u0 = tile * L;
  const int nu = H - u0 < L ? H - u0 : L;
  const float* zs = a.scratch;
  const Acts<I, kDefault> f{a.act, a.ract};
  for (int r = 0; r < RB; ++r) {
    const float* xp = xs.p + r * xs.ld_row;
    const V gn = f.cand(O::add(acc[r][0], ld<I>(xp + 2 * xs.ld_gate, nu)));
    const V gz = ld<I>(zs + (r0 + r) * H + u0, nu);
    const V hp = ld<I>(a.h_prev + (r0 + r) * a.ld_h + u0, nu);
    const V h = O::fma(gz, hp, O::mul(O::sub(O::set1(1.0f), gz), gn));
    st<I>(a.h_next + (r0 + r) * a.ld_hn + u0, h, nu);
    if (a.y) st<I>(a.y + (r0 + r) * a.ld_y + u0, h, nu);
  }
}

template <Isa I, int RB>
RNNINFER_INLINE void rnn_update(const StepArgs& a, int r0, int tile, typename Ops<I>::V (&acc)[RB][1],
                                XpRef xs) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  const int u0 = tile * L;
  const int nu = a.w->h - u0 < L ? a.w->h - u0 : L;
  for (int r = 0; r < RB; ++r) {
    const float* xp = xs.p + r * xs.ld_row;
    const V h = act::Math<I>::apply(a.act, O::add(acc[r][0], ld<I>(xp, nu)));
    st<I>(a.h_next + (r0 + r) * a.ld_hn + u0, h, nu);
    if (a.y) st<I>(a.y + (r0 + r) * a.ld_y + u0, h, nu);
  }
}

// Floats of the tile-local buffer of a fused input projection (rows_tiles).
template <Isa I, int G, int RB, int TB>
constexpr int fx_floats() {
  return RB * TB * G * Ops<I>::kLanes;
}

// The fused input projection (StepArgs::wx) of RB rows x TB unit tiles from
// `tile`: xb[((r * TB + j) * G + g) * kLanes + lane]. Per element the gemm's
// operations (gemm-inl.h: acc = 0, fma along k = 0..K-1 in order, + bias;
// a missing bias is packed as zeros, and the gemm adds zero then too), so the
// values are bit for bit the xp that gemm() would have written.
template <Isa I, int G, int RB, int TB>
RNNINFER_INLINE void fused_x(const StepArgs& a, int r0, int tile, float* xb) {
  using O = Ops<I>;
  using V = typename O::V;
  constexpr int L = O::kLanes;
  V acc[RB][TB][G];
  product_tiles<I, G, RB, TB, WType::kF32>(*a.wx, tile, a.x + r0 * a.ld_x, a.ld_x, acc);
  for (int j = 0; j < TB; ++j)
    for (int g = 0; g < G; ++g) {
      const V b = O::load(a.bx + ((tile + j) * G + g) * L);
      for (int r = 0; r < RB; ++r) O::store(xb + ((r * TB + j) * G + g) * L, O::add(acc[r][j][g], b));
    }
}

// The product of RB rows x TB unit tiles from `tile` on, then `update` for
// each tile, reading tile j's projections from xs(j). TB == 1 may resume
// from partial sums (k_begin > 0, see product()); several tiles always run
// all of K in one pass (for_rows only asks for them then). Either way each
// element gets the same operations.
template <Isa I, int G, int RB, int TB, WType T, typename Update, typename Xs>
RNNINFER_INLINE void rows_tiles_with(const StepArgs& a, const PackedRec& pw, const float* h,
                                     std::size_t ld_h, int r0, int tile, Update update, Xs xs) {
  using V = typename Ops<I>::V;
  constexpr int L = Ops<I>::kLanes;
  if constexpr (TB == 1) {
    V acc[RB][G];
    // (partial is only read past k_begin > 0; no offset on a null pointer.)
    product<I, G, RB, T>(pw, tile, h + r0 * ld_h, ld_h, acc, a.k_begin,
                         a.k_begin > 0 ? a.partial + static_cast<std::size_t>(r0) * G * L : nullptr);
    update(a, r0, tile, acc, xs(0));
  } else {
    assert(a.k_begin == 0);
    V acc[RB][TB][G];
    product_tiles<I, G, RB, TB, T>(pw, tile, h + r0 * ld_h, ld_h, acc);
    for (int j = 0; j < TB; ++j) {
      V one[RB][G];
      for (int r = 0; r < RB; ++r)
        for (int g = 0; g < G; ++g) one[r][g] = acc[r][j][g];
      update(a, r0, tile + j, one, xs(j));
    }
  }
}

// Where tile j (from a rows_tiles call's first) reads its projections: the
// block's xp, or a fused projection's tile-local buffer (rows_tiles). Plain
// structs, not lambdas, so that RNNINFER_INLINE holds: a call inside the
// step spilled every register (the lone-row path ran ~2x slower).
template <Isa I>
struct XsBlock {
  const StepArgs& a;
  int r0, tile;
  RNNINFER_INLINE XpRef operator()(int j) const { return xp_of<I>(a, r0, tile + j); }
};
template <Isa I, int G, int TB>
struct XsLocal {
  const float* xb;
  RNNINFER_INLINE XpRef operator()(int j) const {
    constexpr int L = Ops<I>::kLanes;
    return XpRef{xb + j * G * L, static_cast<std::size_t>(TB * G * L), static_cast<std::size_t>(L)};
  }
};

// rows_tiles_with the block's xp, or (Update::kFusedX) with this group's
// x W_x^T + b computed first (StepArgs::wx) and parked in L1 for the update.
template <Isa I, int G, int RB, int TB, WType T, typename Update>
RNNINFER_INLINE void rows_tiles(const StepArgs& a, const PackedRec& pw, const float* h,
                                std::size_t ld_h, int r0, int tile, Update update) {
  if constexpr (Update::kFusedX) {
    alignas(64) float xb[fx_floats<I, G, RB, TB>()];
    fused_x<I, G, RB, TB>(a, r0, tile, xb);
    rows_tiles_with<I, G, RB, TB, T>(a, pw, h, ld_h, r0, tile, update, XsLocal<I, G, TB>{xb});
  } else {
    rows_tiles_with<I, G, RB, TB, T>(a, pw, h, ld_h, r0, tile, update, XsBlock<I>{a, r0, tile});
  }
}

template <Isa I>
inline int tiles_of(int h) {
  return (h + Ops<I>::kLanes - 1) / Ops<I>::kLanes;
}

// The last n < TB unit tiles from `tile` in one pass.
template <Isa I, int G, int R, int TB, WType T, typename Update>
RNNINFER_INLINE void tile_tail(int n, const StepArgs& a, const PackedRec& pw, const float* h,
                               std::size_t ld_h, int r0, int tile, Update update) {
  if constexpr (TB > 0) {
    if (n == TB) return rows_tiles<I, G, R, TB, T>(a, pw, h, ld_h, r0, tile, update);
    tile_tail<I, G, R, TB - 1, T>(n, a, pw, h, ld_h, r0, tile, update);
  }
}

// Rows [r0, r0 + R) over the unit tiles [t0, t1), tiles_per_pass() at a time
// and the remaining tiles in one more pass (last to first: a.tiles_backward).
template <Isa I, int G, int R, WType T, typename Update>
RNNINFER_INLINE void row_group(const StepArgs& a, const PackedRec& pw, const float* h,
                               std::size_t ld_h, int r0, int t0, int t1, Update update) {
  constexpr int TB = tiles_per_pass<I, G, R>();
  if (a.tiles_backward) {
    // Passes of TB tiles from the end, the remaining first tiles last.
    int t = t1;
    for (; t - TB >= t0; t -= TB) rows_tiles<I, G, R, TB, T>(a, pw, h, ld_h, r0, t - TB, update);
    if (t > t0) tile_tail<I, G, R, TB - 1, T>(t - t0, a, pw, h, ld_h, r0, t0, update);
    return;
  }
  int t = t0;
  for (; t + TB <= t1; t += TB) rows_tiles<I, G, R, TB, T>(a, pw, h, ld_h, r0, t, update);
  if (t < t1) tile_tail<I, G, R, TB - 1, T>(t1 - t, a, pw, h, ld_h, r0, t, update);
}

// The last n < RB rows from r0 as one group of exactly n rows (each weight
// vector loaded once for all of them).
template <Isa I, int G, int R, WType T, typename Update>
RNNINFER_INLINE void row_tail(int n, const StepArgs& a, const PackedRec& pw, const float* h,
                              std::size_t ld_h, int r0, int t0, int t1, Update update) {
  if constexpr (R > 0) {
    if (n == R) return row_group<I, G, R, T>(a, pw, h, ld_h, r0, t0, t1, update);
    row_tail<I, G, R - 1, T>(n, a, pw, h, ld_h, r0, t0, t1, update);
  }
}

// Hints the cache to fetch [p, p + bytes) (StepArgs::pf_*). A template so
// that each ISA's translation unit keeps its own copy (no ODR merging of
// code built for different targets).
template <Isa I>
RNNINFER_INLINE void prefetch_row(const float* p, std::size_t bytes) {
  const char* c = reinterpret_cast<const char*>(p);
  for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off);
}

// Runs the product of weights pw with rows h (n = a.n rows, stride ld_h) and
// update(args, r0, tile, acc[R][G]) over every (row group, unit tile); every
// element gets the same operations whatever its group, tile order or pass.
//  - At most RB rows: rows outer (groups of RB, the rest as one smaller group),
//    several tiles per pass when a group has too few accumulators to keep the
//    FMA units busy (tiles_per_pass). Each weight vector is loaded once.
//  - More rows: tiles outer, so one tile's weights stay in L1 while every row
//    group passes over them (rows outer would stream all the weights from L2
//    once per row group: twice the FMA time for an LSTM(64) at batch 64).
//    With K longer than a chunk (chunk_k), all but the last K chunk of the
//    tile are summed first for every row (partial_sums), then the row groups
//    finish the last chunk and the update.
template <Isa I, int G, int RB, WType T, typename Update>
inline void for_rows(const StepArgs& a, const PackedRec& pw, const float* h, std::size_t ld_h,
                     Update update) {
  const int t0 = a.tile_begin;
  const int t1 = a.tile_end < 0 ? tiles_of<I>(pw.h) : a.tile_end;
  const int n = a.n;
  constexpr int KC = chunk_k<I, G, T>();
  StepArgs b = a;
  b.k_begin = 0;
  if (n <= RB) {
    if (n == RB) return row_group<I, G, RB, T>(b, pw, h, ld_h, 0, t0, t1, update);
    return row_tail<I, G, RB - 1, T>(n, b, pw, h, ld_h, 0, t0, t1, update);
  }
  const bool chunked = pw.k > KC && a.partial != nullptr;
  if (chunked) b.k_begin = ((pw.k - 1) / KC) * KC;
  // StepArgs::pf_*: spread over the row groups of every tile.
  int pf = 0;
  const int groups = (t1 - t0) * (n / RB);
  const int pf_each = a.pf_rows > 0 && groups > 0 ? (a.pf_rows + groups - 1) / groups : 0;
  for (int i = 0; i < t1 - t0; ++i) {
    const int t = a.tiles_backward ? t1 - 1 - i : t0 + i;
    if (chunked) partial_sums<I, G, RB, T>(pw, t, h, ld_h, n, b.k_begin, a.partial);
    int r = 0;
    for (; r + RB <= n; r += RB) {
      for (int e = 0; e < pf_each && pf < a.pf_rows; ++e, ++pf)
        prefetch_row<I>(a.pf_table + a.pf_tokens[pf] * static_cast<int64_t>(a.pf_stride), a.pf_bytes);
      rows_tiles<I, G, RB, 1, T>(b, pw, h, ld_h, r, t, update);
    }
    if (r < n) row_tail<I, G, RB - 1, T>(n - r, b, pw, h, ld_h, r, t, t + 1, update);
  }
}

// Calls body<T>() for the element type of the packed weights: one switch per
// step call, then a body compiled for that type.
template <typename Body>
inline void with_type(WType t, Body body) {
  switch (t) {
    case WType::kBf16:
      body(std::integral_constant<WType, WType::kBf16>());
      return;
    case WType::kI8:
      body(std::integral_constant<WType, WType::kI8>());
      return;
    case WType::kF32:
      break;
  }
  body(std::integral_constant<WType, WType::kF32>());
}


// The update functions as generic callables for for_rows: update(args, r0,
// tile, acc) with acc[R][G] for any row count R.
template <Isa I, bool kDefault>
struct LstmUpdate {
  static constexpr bool kFusedX = false;
  template <int R>
  RNNINFER_INLINE void operator()(const StepArgs& a, int r0, int tile,
                                  typename Ops<I>::V (&acc)[R][4], XpRef xs) const {
    lstm_update<I, R, kDefault>(a, r0, tile, acc, xs);
  }
};
template <Isa I, bool kDefault>
struct GruUpdate {
  static constexpr bool kFusedX = false;
  template <int R>
  RNNINFER_INLINE void operator()(const StepArgs& a, int r0, int tile,
                                  typename Ops<I>::V (&acc)[R][3], XpRef xs) const {
    gru_update<I, R, kDefault>(a, r0, tile, acc, xs);
  }
};
template <Isa I>
struct GruRbUpdate1 {
  static constexpr bool kFusedX = false;
  template <int R>
  RNNINFER_INLINE void operator()(const StepArgs& a, int r0, int tile,
                                  typename Ops<I>::V (&acc)[R][2], XpRef xs) const {
    gru_rb_update1<I, R, false>(a, r0, tile, acc, xs);
  }
};
template <Isa I>
struct GruRbUpdate2 {
  static constexpr bool kFusedX = false;
  template <int R>
  RNNINFER_INLINE void operator()(const StepArgs& a, int r0, int tile,
                                  typename Ops<I>::V (&acc)[R][1], XpRef xs) const {
    gru_rb_update2<I, R, false>(a, r0, tile, acc, xs);
  }
};
template <Isa I>
struct RnnUpdate {
  static constexpr bool kFusedX = false;
  template <int R>
  RNNINFER_INLINE void operator()(const StepArgs& a, int r0, int tile,
                                  typename Ops<I>::V (&acc)[R][1], XpRef xs) const {
    rnn_update<I, R>(a, r0, tile, acc, xs);
  }
};

// An update whose rows_tiles computes the input projections itself
// (StepArgs::wx): its own instantiation of the whole row/tile walk.
template <typename U>
struct FusedX : U {
  static constexpr bool kFusedX = true;
};

// for_rows fused with the input projection, in a function of its own, so
// that the step entry's plain walk is compiled as it was without it (GCC's
// inliner works to a budget per function; with both walks inlined it left
// product() and product_tiles() out of line, a call per row group, until
// they were marked RNNINFER_INLINE: batch-1 calls were 8-16 % slower).
// Called once per step, the call costs nothing.
template <Isa I, int G, int RB, WType T, typename Update>
RNNINFER_NOINLINE void for_rows_fused(const StepArgs& a, Update update) {
  for_rows<I, G, RB, T>(a, *a.w, a.h_prev, a.ld_h, FusedX<Update>{update});
}

// for_rows with `update`, fused with the input projection when the step has one.
template <Isa I, int G, int RB, WType T, typename Update>
inline void for_rows_x(const StepArgs& a, Update update) {
  if (a.wx != nullptr)
    for_rows_fused<I, G, RB, T>(a, update);
  else
    for_rows<I, G, RB, T>(a, *a.w, a.h_prev, a.ld_h, update);
}

template <Isa I, int RB>
void lstm_step(const StepArgs& a) {
  assert(a.w->layout == RecLayout::kPlain);
  assert(a.h_prev != a.h_next && a.c_prev != a.c_next);
  with_type(a.w->type, [&](auto tc) {
    constexpr WType T = decltype(tc)::value;
    if (a.act == Act::kTanh && a.ract == Act::kSigmoid)
      for_rows_x<I, 4, RB, T>(a, LstmUpdate<I, true>());
    else
      for_rows_x<I, 4, RB, T>(a, LstmUpdate<I, false>());
  });
}

template <Isa I, int RB>
void gru_step(const StepArgs& a) {
  assert(a.w->layout == RecLayout::kPlain);
  assert(a.h_prev != a.h_next);
  with_type(a.w->type, [&](auto tc) {
    constexpr WType T = decltype(tc)::value;
    if (a.act == Act::kTanh && a.ract == Act::kSigmoid)
      for_rows_x<I, 3, RB, T>(a, GruUpdate<I, true>());
    else
      for_rows_x<I, 3, RB, T>(a, GruUpdate<I, false>());
  });
}

template <Isa I, int RB>
void gru_reset_before_step(const StepArgs& a) {
  assert(a.w->layout == RecLayout::kPlain);
  assert(a.h_prev != a.h_next && a.scratch != nullptr && a.w2 != nullptr);
  assert(a.w->type == a.w2->type);
  assert(a.wx == nullptr);  // its xp is read by both passes: not fused
  with_type(a.w->type, [&](auto tc) {
    constexpr WType T = decltype(tc)::value;
    for_rows<I, 2, RB, T>(a, *a.w, a.h_prev, a.ld_h, GruRbUpdate1<I>());
    const float* rh = a.scratch + static_cast<std::size_t>(a.n) * a.w->h;
    for_rows<I, 1, RB, T>(a, *a.w2, rh, static_cast<std::size_t>(a.w->h), GruRbUpdate2<I>());
  });
}

template <Isa I, int RB>
void rnn_step(const StepArgs& a) {
  assert(a.w->layout == RecLayout::kPlain);
  assert(a.h_prev != a.h_next);
  with_type(a.w->type, [&](auto tc) {
    constexpr WType T = decltype(tc)::value;
    for_rows_x<I, 1, RB, T>(a, RnnUpdate<I>());
  });
}

template <Isa I>
void activate(Act a, float* x, int n) {
  using O = Ops<I>;
  constexpr int L = O::kLanes;
  int i = 0;
  for (; i + L <= n; i += L) O::store(x + i, act::Math<I>::apply(a, O::load(x + i)));
  if (i < n) O::store_n(x + i, act::Math<I>::apply(a, O::load_n(x + i, n - i)), n - i);
}

}  // namespace rec_impl
}  // namespace rnninfer
