// The kernel table: every ISA-specific routine the engine calls, with its
// contract. One table per compiled ISA (kernels_<isa>.cc); cpu/dispatch.cc
// picks one at run time. The engine never calls an ISA-specific symbol
// directly, only through a table, so adding an ISA touches no engine code.
//
// Shared determinism contract: every output element is computed by the same
// sequence of floating-point operations whatever the row count, the row or
// column position in a tile, or the tail handling. Reductions run along K in
// increasing order in a single accumulator per element, starting from 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rnninfer {

enum class Act : int {
  kLinear = 0,
  kRelu,
  kTanh,
  kSigmoid,
  kHardSigmoid,        // Keras 3: clip(x / 6 + 0.5, 0, 1)
  kHardSigmoidKeras2,  // Keras 2: clip(0.2 x + 0.5, 0, 1)
  kElu,
  kSelu,
  kSoftplus,
  kSoftsign,
  kSwish,
  kGelu,
  kExponential,
  kRelu6,
  kLeakyRelu,  // negative slope 0.2 (Keras' default)
  kMish,
  kHardSwish,
  kSoftmax,     // over a whole row (head layers only)
  kLogSoftmax,  // over a whole row (head layers only)
};

// Element type of packed weights (docs/precision.md). In the plain layout,
// reduced types are widened to fp32 in registers right after the load (bf16:
// a 16-bit shift, exact; int8: convert, then one multiply by the output row's
// scale after the K loop), so activations, state and accumulation stay fp32
// and only the bytes streamed per step shrink. RecLayout::kPairs / kQuads
// (below) are the dot-product alternatives for the recurrent weights.
enum class WType : int { kF32 = 0, kBf16 = 1, kI8 = 2 };

// Order of the elements of packed recurrent weights along K (PackedRec).
// kPlain: one k per packed element (read by the widen-in-registers bodies of
// every ISA). kPairs (bf16 only): each 32-bit lane holds (W[u][2k'], W[u][2k'+1]),
// the operand of vdpbf16ps. kQuads (int8 only): each 32-bit lane holds
// W[u][4k'..4k'+3], the operand of vpdpbusd. K is padded with zero weights to
// whole pairs/quads. Which layout a table's step kernels read for each
// element type is in KernelTable::{bf16,i8}_rec_layout; the engine packs
// accordingly, so the layout (and with it the arithmetic) is a property of
// the packed operand.
enum class RecLayout : int { kPlain = 0, kPairs = 1, kQuads = 2 };

// A weight matrix W (N x K, row-major in the file) packed for gemm():
// column panels of `nr` outputs; panel p holds, for k = 0..K-1, the nr values
// W[p*nr + j][k] (zero past N). 64-byte aligned.
struct PackedGemm;
// The columns [col0, col0 + ncols) of a packed gemm operand as an operand of
// its own; col0 must be a multiple of the panel width.
PackedGemm gemm_columns(const PackedGemm& w, int col0, int ncols);

struct PackedGemm {
  const float* data = nullptr;
  const float* bias = nullptr;  // N values or nullptr (= zero)
  int n = 0;                    // outputs
  int k = 0;                    // reduction length
  int nr = 0;                   // panel width (KernelTable::gemm_nr)
  // Reduced precision: same panel order, elements in `bf16` or `i8` instead
  // of `data`; int8 has one scale per output (padded to whole panels).
  WType type = WType::kF32;
  const uint16_t* bf16 = nullptr;
  const int8_t* i8 = nullptr;
  const float* scale = nullptr;
  // K order inside a panel (see RecLayout): kPlain = one k per element;
  // kPairs / kQuads: panel p, k-group q, output j holds W[p*nr + j][q*2 (4) ..].
  RecLayout layout = RecLayout::kPlain;
  const int32_t* comp = nullptr;  // kQuads: 128 * sum_k W[n][k], padded to whole panels
};

// Largest K for which a gemm operand may be packed as kPairs / kQuads: the
// dot-product gemm converts a block of A rows into a fixed on-stack buffer.
constexpr int kDotGemmMaxK = 4096;

// gemm: C[m][n] = (sum_k A[m][k] * W[n][k]) + bias[n] for m < M, n < N.
// A is M x K with row stride lda; C has row stride ldc. Per element the sum
// starts at 0, runs k = 0..K-1 with Ops::fma, then (int8 only) is multiplied
// by scale[n], then adds the bias.
using GemmFn = void (*)(const PackedGemm& w, const float* a, std::size_t lda, int m, float* c,
                        std::size_t ldc);

// Recurrent weights (G gate blocks of H rows, each K wide) packed for the step
// kernels: unit tiles of `tile` hidden units; tile t holds, for k = 0..K-1 and
// gate g = 0..G-1, the `tile` values W[g*H + t*tile + u][k] (zero past H).
// One tile carries every gate of its units, so the pointwise update of those
// units runs right after their product, while the values are in registers.
struct PackedRec {
  const float* data = nullptr;
  int gates = 0;
  int h = 0;     // units
  int k = 0;     // recurrent input width (H, or P for a projected LSTM)
  int tile = 0;  // KernelTable::rec_tile
  // Reduced precision: same order, elements in `bf16` or `i8`; int8 scales
  // are laid out like one k-row of the tile: tile t, gate g, unit u at
  // scale[(t * gates + g) * tile + u] (zero past H).
  WType type = WType::kF32;
  const uint16_t* bf16 = nullptr;
  const int8_t* i8 = nullptr;
  const float* scale = nullptr;
  RecLayout layout = RecLayout::kPlain;
  // kQuads: 128 * sum_k W[row][k] per scale entry (same order as `scale`),
  // the correction for activations stored as unsigned q + 128.
  const int32_t* comp = nullptr;
};

// Arguments of one recurrent step over `n` rows (the sequences active at this
// step). Rows are independent; each row r reads row r of every input.
struct StepArgs {
  const PackedRec* w = nullptr;   // recurrent weights (all gates)
  const PackedRec* w2 = nullptr;  // GRU reset-before: candidate weights (gate n only)
  int n = 0;
  const float* h_prev = nullptr;  // n x K, stride ld_h
  std::size_t ld_h = 0;
  const float* xp = nullptr;      // n x (G*H) input projections + folded biases, stride ld_xp
  std::size_t ld_xp = 0;
  // Fused input projection (plain fp32 kernels only): with wx set, the step
  // computes each row's x W_x^T + b itself, unit tile by unit tile, right
  // before the tile's recurrent product, and xp is not read. Per element the
  // operations are the gemm's (acc = 0, fma along k = 0..K-1, + bias), so the
  // result is bit-identical to xp from gemm(); only the memory traffic and the
  // separate pass over the block go away (small stacked layers, many rows).
  const PackedRec* wx = nullptr;  // W_x packed like w (all G gates, k = input width), fp32
  const float* bx = nullptr;      // folded biases per (tile, gate, lane); zero past H or if none
  const float* x = nullptr;       // n x wx->k layer inputs, stride ld_x
  std::size_t ld_x = 0;
  const float* b_hn = nullptr;    // GRU reset-after: H recurrent candidate biases, or nullptr
  const float* c_prev = nullptr;  // LSTM: n x H cell state, stride ld_c
  float* c_next = nullptr;        // LSTM: n x H
  std::size_t ld_c = 0;
  float* h_next = nullptr;        // n x H new hidden state (LSTM with projection: o*act(c))
  std::size_t ld_hn = 0;
  float* y = nullptr;             // optional copy of h_next (layer output rows), stride ld_y
  std::size_t ld_y = 0;
  float* scratch = nullptr;       // GRU reset-before: 2 * n * H floats (z, r*h)
  float* partial = nullptr;       // n * 4 * kLanes floats for chunked products (or nullptr)
  int k_begin = 0;                // set by the kernels: sums below it come from `partial`
  int tile_begin = 0;             // unit tiles [tile_begin, tile_end) only (-1: to the last):
  int tile_end = -1;              // threads splitting one layer's units each take a range
  // Visit the unit tiles last to first (a hint; each tile's arithmetic is the
  // same either way). Alternated step by step, a step starts with the tiles
  // the previous one read last, still in L1: weights a little larger than L1
  // (an LSTM(64): 64 KiB) are then only partly re-read from L2 each step.
  bool tiles_backward = false;
  // Token-table rows the caller gathers after this step (a hint, no effect on
  // any result): the multi-row kernels prefetch them a few at a time between
  // row groups, so the loads overlap the step's arithmetic instead of
  // stalling the gather that reads them. Row i starts at
  // pf_table + pf_tokens[i] * pf_stride and is pf_bytes long.
  const float* pf_table = nullptr;
  const int32_t* pf_tokens = nullptr;
  int pf_rows = 0;
  std::size_t pf_stride = 0;
  std::size_t pf_bytes = 0;
  // kPairs/kQuads weights: room for the step's activations converted to bf16
  // pairs or quantised to 8 bits, hq_floats_per_row(K) floats per row.
  float* hq = nullptr;
  Act act = Act::kTanh;
  Act ract = Act::kSigmoid;
};

using StepFn = void (*)(const StepArgs& a);

// Floats of StepArgs::hq per row for a recurrent input width K: a row of K
// values as bf16 pairs or bytes, padded to whole 64-byte vectors, plus the
// row's scale (int8).
constexpr std::size_t hq_floats_per_row(std::size_t k) { return (k + 31) / 32 * 16 + 16 + 1; }

struct KernelTable {
  const char* name;
  int gemm_nr;   // panel width of PackedGemm
  int rec_tile;  // unit tile of PackedRec
  GemmFn gemm;
  StepFn lstm_step;
  StepFn gru_step;               // reset_after = true
  StepFn gru_reset_before_step;  // reset_after = false (uses w and w2)
  StepFn rnn_step;
  // Element-wise activation over n floats, in place.
  void (*activate)(Act a, float* x, int n);
  // Packed layout the step kernels expect for bf16 / int8 recurrent weights,
  // and the gemm for bf16 / int8 input projections with K <= kDotGemmMaxK.
  RecLayout bf16_rec_layout;
  RecLayout i8_rec_layout;
  RecLayout bf16_gemm_layout;
  RecLayout i8_gemm_layout;
  // Benchmark probe (probe-inl.h): n dependent vector FMAs from x; not used by the engine.
  float (*fma_chain)(float x, long n);
};

namespace kernels {
namespace scalar {
const KernelTable& table();
}
namespace avx2 {
const KernelTable& table();
}
namespace avx512 {
const KernelTable& table();
}
namespace avx512_bf16 {
const KernelTable& table();
}
}  // namespace kernels

}  // namespace rnninfer
