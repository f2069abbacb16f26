// Layer code: one direction's steps, the finish of a block, projections,
// readout and head (see layer_exec.h).
#include "engine/layer_exec.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace rnninfer {
namespace {

// readout.steps of a stream counts exactly up to 2^24, then stays there.
constexpr float kMaxPoolSteps = 16777216.0f;

// Hints the cache to fetch [p, p + bytes): the gather below reads rows of a
// token table that is usually far larger than L2, one random row per token.
inline void prefetch_bytes(const void* p, std::size_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr std::size_t kLine = 64;
  const char* c = static_cast<const char*>(p);
  for (std::size_t off = 0; off < bytes; off += kLine) __builtin_prefetch(c + off);
#else
  (void)p;
  (void)bytes;
#endif
}

// Rows of the token table requested ahead of the one being copied. A row of
// an LSTM(64) is 1 KiB from a 10 MB table: copied one after another, each
// waited for its misses (16 % of a batch-64 call of the seed model, more than
// its layer-1 projection gemm); requested a few rows ahead, the misses
// overlap.
constexpr int kGatherAhead = 4;

// Fewest sequences for which a layer with packed step input weights
// (DirWeights::wx_step) computes its projections in the step kernels.
constexpr int kFusedMinRows = 8;

void copy_rows(const float* src, std::size_t lds, float* dst, std::size_t ldd, int rows,
               int cols) {
  for (int r = 0; r < rows; ++r)
    std::memcpy(dst + r * ldd, src + r * lds, static_cast<std::size_t>(cols) * sizeof(float));
}

inline float merge_one(Merge m, float a, float b) {
  switch (m) {
    case Merge::kSum:
      return a + b;
    case Merge::kMul:
      return a * b;
    case Merge::kAve:
      return (a + b) * 0.5f;
    case Merge::kConcat:
      break;
  }
  return a;
}

// Softmax / log-softmax over one row. Head rows are short, so this stays
// scalar; max subtraction keeps exp from overflowing.
void row_softmax(float* x, int n, bool log_space) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  if (log_space) {
    const float lse = static_cast<float>(std::log(sum));
    for (int i = 0; i < n; ++i) x[i] = x[i] - mx - lse;
  } else {
    for (int i = 0; i < n; ++i)
      x[i] = static_cast<float>(std::exp(static_cast<double>(x[i] - mx)) / sum);
  }
}


void project_block(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u) {
  // kProject plans have one shard (the whole batch): a block is one row range.
  const LayerDesc& L = m.desc.layers[static_cast<size_t>(u.layer)];
  const DirWeights& dw = m.layers[static_cast<size_t>(u.layer)].dirs[static_cast<size_t>(u.dir)];
  const int GH = L.gates() * L.units;
  const int in_w = m.desc.stream_width(u.layer - 1);
  const int t_begin = plan.block_begin[static_cast<size_t>(u.block)];
  const int t_end = plan.block_begin[static_cast<size_t>(u.block) + 1];
  const int64_t r0 = ws.offset[static_cast<size_t>(t_begin)];
  m.kernels->gemm(dw.wx.view, ws.stream(u.layer) + r0 * in_w, static_cast<std::size_t>(in_w),
                 static_cast<int>(ws.offset[static_cast<size_t>(t_end)] - r0),
                 ws.proj[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)].data() + r0 * GH,
                 static_cast<std::size_t>(GH));
}

void finish_block(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u) {
  const LayerDesc& L = m.desc.layers[static_cast<size_t>(u.layer)];
  float* dst = ws.stream(u.layer + 1);
  const int W = L.out_width();
  const bool merge = L.dirs() == 2 && L.merge != Merge::kConcat;
  const float* bwd = merge ? ws.merge_tmp.data() : nullptr;
  const float* src = L.residual_from != kNoResidual ? ws.stream(L.residual_from + 1) : nullptr;
  const int s0 = plan.shard_begin[static_cast<size_t>(u.shard)];
  const int s1 = plan.shard_begin[static_cast<size_t>(u.shard) + 1];
  const int t_begin = plan.block_begin[static_cast<size_t>(u.block)];
  const int t_end = plan.block_begin[static_cast<size_t>(u.block) + 1];
  for (int t = t_begin; t < t_end; ++t) {
    const int hi = std::min(s1, ws.active[static_cast<size_t>(t)]);
    for (int64_t r = ws.offset[static_cast<size_t>(t)] + s0; r < ws.offset[static_cast<size_t>(t)] + hi; ++r) {
      float* o = dst + r * W;
      if (merge) {
        const float* b = bwd + r * m.max_width_p;
        for (int j = 0; j < W; ++j) o[j] = merge_one(L.merge, o[j], b[j]);
      }
      if (src != nullptr && !ws.skip[static_cast<size_t>(r)])
        for (int j = 0; j < W; ++j) o[j] += src[r * W + j];
    }
  }
}

void dense_head(const PackedModel& m, float* z, int rows, float* tmp) {
  float* cur = z;
  float* other = tmp;
  int width = m.desc.top_width();
  for (size_t j = 0; j < m.desc.head.size(); ++j) {
    const DenseDesc& D = m.desc.head[j];
    m.kernels->gemm(m.head[j].view, cur, static_cast<std::size_t>(width), rows, other,
                   static_cast<std::size_t>(D.units));
    if (D.act == Act::kSoftmax || D.act == Act::kLogSoftmax) {
      for (int r = 0; r < rows; ++r)
        row_softmax(other + static_cast<std::size_t>(r) * D.units, D.units, D.act == Act::kLogSoftmax);
    } else if (D.act != Act::kLinear) {
      m.kernels->activate(D.act, other, rows * D.units);
    }
    std::swap(cur, other);
    width = D.units;
  }
  if (cur != z) std::memcpy(z, cur, static_cast<std::size_t>(rows) * width * sizeof(float));
}

}  // namespace

void run_unit(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u, int tid) {
  switch (u.kind) {
    case Unit::Kind::kFinish:
      return finish_block(m, ws, plan, u);
    case Unit::Kind::kProject:
      return project_block(m, ws, plan, u);
    case Unit::Kind::kDirection:
      return run_direction(m, ws, plan, u, tid, nullptr);
  }
}

void init_state(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u,
                const Slice* slice) {
  const LayerDesc& L = m.desc.layers[static_cast<size_t>(u.layer)];
  Workspace::State& st = ws.state[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)];
  const int H = L.units, P = L.dir_width();
  const int s0 = plan.shard_begin[static_cast<size_t>(u.shard)];
  const int s1 = plan.shard_begin[static_cast<size_t>(u.shard) + 1];
  const int u0 = slice != nullptr ? H / slice->count * slice->index : 0;
  const int u1 = slice != nullptr ? u0 + H / slice->count : H;
  const std::size_t slice_bytes = static_cast<std::size_t>(u1 - u0) * sizeof(float);
  const CallIO& io = *ws.io;
  if (io.state_in != nullptr) {
    // Streams: every sequence starts from its own state (forward layers only,
    // so every row starts at step 0, which reads buffer 0).
    const int64_t h_at = m.state_h[static_cast<size_t>(u.layer)];
    const int64_t c_at = m.state_c[static_cast<size_t>(u.layer)];
    for (int r = s0; r < s1; ++r) {
      const float* src = io.state_in[ws.order[static_cast<size_t>(r)]];
      if (slice == nullptr) {
        std::memcpy(st.h[0].data() + r * P, src + h_at, static_cast<std::size_t>(P) * sizeof(float));
        if (c_at >= 0) std::memcpy(st.c[0].data() + r * H, src + c_at, static_cast<std::size_t>(H) * sizeof(float));
      } else {
        std::memcpy(st.h[0].data() + r * P + u0, src + h_at + u0, slice_bytes);
        if (c_at >= 0) std::memcpy(st.c[0].data() + r * H + u0, src + c_at + u0, slice_bytes);
      }
    }
  } else {
    // Sequences start from a zero state. Rows that join later (backward
    // direction, shorter sequences) are still zero when they join, because a
    // row is only written while it is active.
    for (int k = 0; k < 2; ++k) {
      if (slice == nullptr) {
        std::memset(st.h[k].data() + s0 * P, 0, static_cast<std::size_t>(s1 - s0) * P * sizeof(float));
        std::memset(st.c[k].data() + s0 * H, 0, static_cast<std::size_t>(s1 - s0) * H * sizeof(float));
      } else {
        for (int r = s0; r < s1; ++r) {
          std::memset(st.h[k].data() + r * P + u0, 0, slice_bytes);
          std::memset(st.c[k].data() + r * H + u0, 0, slice_bytes);
        }
      }
    }
  }
}

void run_direction(const PackedModel& m, Workspace& ws, const Plan& plan, const Unit& u, int tid,
                   const Slice* slice) {
  const LayerDesc& L = m.desc.layers[static_cast<size_t>(u.layer)];
  const DirWeights& dw = m.layers[static_cast<size_t>(u.layer)].dirs[static_cast<size_t>(u.dir)];
  Workspace::State& st = ws.state[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)];
  Workspace::Scratch& sc = ws.scratch[static_cast<size_t>(tid)];
  const int H = L.units, P = L.dir_width(), GH = L.gates() * H;
  const int in_w = m.desc.stream_width(u.layer - 1);
  const int s0 = plan.shard_begin[static_cast<size_t>(u.shard)];
  const int s1 = plan.shard_begin[static_cast<size_t>(u.shard) + 1];
  const int t_begin = plan.block_begin[static_cast<size_t>(u.block)];
  const int t_end = plan.block_begin[static_cast<size_t>(u.block) + 1];
  const bool top = u.layer + 1 == static_cast<int>(m.desc.layers.size());
  // Hidden units this thread computes: all, or its slice of a split plan
  // (whose layers have no projection, so P == H, and align with gemm panels).
  const int u0 = slice != nullptr ? H / slice->count * slice->index : 0;
  const int u1 = slice != nullptr ? u0 + H / slice->count : H;
  const std::size_t slice_bytes = static_cast<std::size_t>(u1 - u0) * sizeof(float);

  if (u.first && !(slice != nullptr && slice->state_loaded)) init_state(m, ws, plan, u, slice);

  // Input projections of the block, row r of the block at xproj row r: plans
  // have one shard (large batches run as independent sub-calls), so the rows
  // of consecutive steps are contiguous and the block is one gemm.
  assert(s0 == 0 && s1 == ws.batch);
  const float* in = ws.stream(u.layer);
  const int64_t r0 = ws.offset[static_cast<size_t>(t_begin)];
  const int block_rows = static_cast<int>(ws.offset[static_cast<size_t>(t_end)] - r0);
  const bool projected = plan.projected[static_cast<size_t>(u.layer)];
  // One sequence (a stream's feed, a predict of one sequence): a step has one
  // row, whose projection the step kernel reads straight from the token
  // table; copying it first cost more than the step's reads of it (the copy
  // waited for the whole 4 KiB row of an LSTM(256) at once).
  const bool table_rows = dw.token_proj.size() != 0 && ws.batch == 1;
  // Many rows of a small layer: the steps compute the projections tile by
  // tile themselves (StepArgs::wx), bit-identical to the gemm's, while the
  // tile's weights and the rows are in L1, instead of the block's gemm
  // writing them to L2 for the steps to read back.
  // (Packed only for layers without a token table: engine.cc.)
  const bool fused = dw.wx_step.view.data != nullptr && !projected && ws.batch >= kFusedMinRows;
  if (projected || table_rows || fused) {
    // Done by kProject units into ws.proj, read from the table, or computed
    // by the step kernels (below).
  } else if (dw.token_proj.size() != 0) {
    const std::size_t bytes = static_cast<std::size_t>(GH) * sizeof(float);
    auto row_of = [&](int i) {
      return dw.token_proj.data() + static_cast<std::size_t>(ws.token[static_cast<size_t>(r0 + i)]) * GH;
    };
    for (int i = 0; i < std::min(kGatherAhead, block_rows); ++i) prefetch_bytes(row_of(i), bytes);
    for (int i = 0; i < block_rows; ++i) {
      if (i + kGatherAhead < block_rows) prefetch_bytes(row_of(i + kGatherAhead), bytes);
      const float* src = row_of(i);
      float* dst = sc.xproj.data() + static_cast<std::size_t>(i) * GH;
      if (slice == nullptr) {
        std::memcpy(dst, src, bytes);
      } else {
        for (int g = 0; g < L.gates(); ++g) std::memcpy(dst + g * H + u0, src + g * H + u0, slice_bytes);
      }
    }
  } else if (slice != nullptr) {
    // This slice's columns of every gate block.
    for (int g = 0; g < L.gates(); ++g)
      m.kernels->gemm(gemm_columns(dw.wx.view, g * H + u0, u1 - u0), in + r0 * in_w,
                     static_cast<std::size_t>(in_w), block_rows, sc.xproj.data() + g * H + u0,
                     static_cast<std::size_t>(GH));
  } else {
    m.kernels->gemm(dw.wx.view, in + r0 * in_w, static_cast<std::size_t>(in_w), block_rows,
                   sc.xproj.data(), static_cast<std::size_t>(GH));
  }

  float* y_base;
  std::size_t ld_y;
  if (L.dirs() == 2 && L.merge != Merge::kConcat && u.dir == 1) {
    y_base = ws.merge_tmp.data();
    ld_y = static_cast<std::size_t>(m.max_width_p);
  } else {
    y_base = ws.stream(u.layer + 1) + ((L.dirs() == 2 && L.merge == Merge::kConcat && u.dir == 1) ? P : 0);
    ld_y = static_cast<std::size_t>(L.out_width());
  }

  StepArgs a;
  a.w = &dw.wh.view;
  a.w2 = &dw.wh_n.view;
  a.ld_h = static_cast<std::size_t>(P);
  a.ld_xp = static_cast<std::size_t>(GH);
  a.b_hn = dw.b_hn.size() ? dw.b_hn.data() : nullptr;
  a.ld_c = static_cast<std::size_t>(H);
  a.scratch = sc.gru.data();
  a.partial = sc.partial.data();
  a.hq = sc.hq.data();
  a.act = L.act;
  a.ract = L.ract;
  if (fused) {
    a.wx = &dw.wx_step.view;
    a.bx = dw.bx_step.data();
    a.ld_x = static_cast<std::size_t>(in_w);
  }
  a.tile_begin = u0 / m.kernels->rec_tile;
  a.tile_end = slice != nullptr ? u1 / m.kernels->rec_tile : -1;
  const bool proj = L.proj_size > 0;
  // A last-state readout reads the top layer's final states (final_state),
  // never its rows: a forward top layer without a residual link writes none.
  const bool rows_unread = top && m.desc.readout == Readout::kLast && L.dirs() == 1 &&
                           L.residual_from == kNoResidual;

  // The block this unit gathers next (a token-table layer, whole steps, one
  // shard): its rows are prefetched during this block's steps
  // (StepArgs::pf_*), a share per step. Without it the gather waits for
  // each row's cache misses, ~5 % of an LSTM(64) call at batch 64.
  int64_t pf_begin = 0, pf_end = 0;
  const int nblocks = static_cast<int>(plan.block_begin.size()) - 1;
  const int next_block = u.reverse ? u.block - 1 : u.block + 1;
  if (dw.token_proj.size() != 0 && !projected && !table_rows && slice == nullptr && next_block >= 0 &&
      next_block < nblocks) {
    pf_begin = ws.offset[static_cast<size_t>(plan.block_begin[static_cast<size_t>(next_block)])];
    pf_end = ws.offset[static_cast<size_t>(plan.block_begin[static_cast<size_t>(next_block) + 1])];
    a.pf_table = dw.token_proj.data();
    a.pf_stride = static_cast<std::size_t>(GH);
    a.pf_bytes = static_cast<std::size_t>(GH) * sizeof(float);
  }
  const int block_steps = t_end - t_begin;

  for (int s = 0; s < t_end - t_begin; ++s) {
    const int t = u.reverse ? t_end - 1 - s : t_begin + s;
    if (pf_end > pf_begin) {
      const int64_t lo = pf_begin + (pf_end - pf_begin) * s / block_steps;
      const int64_t hi_pf = pf_begin + (pf_end - pf_begin) * (s + 1) / block_steps;
      a.pf_tokens = ws.token.data() + lo;
      a.pf_rows = static_cast<int>(hi_pf - lo);
    }
    const int hi = std::min(s1, ws.active[static_cast<size_t>(t)]);
    const int n = hi - s0;
    // Every slice of the previous step is written. The first step's inputs
    // were fenced by the barrier that opened the unit, except a starting
    // state loaded by slices inside this call (state_loaded false).
    if (slice != nullptr && (s > 0 || !slice->state_loaded)) slice->barrier->wait();
    if (n <= 0) continue;
    const int done_before = u.reverse ? ws.steps - 1 - t : t;  // steps this direction ran before t
    const int par = done_before & 1;
    float* h_prev = st.h[par].data() + s0 * P;
    float* h_next = st.h[1 - par].data() + s0 * P;
    float* c_prev = st.c[par].data() + s0 * H;
    float* c_next = st.c[1 - par].data() + s0 * H;
    const int64_t row0 = ws.offset[static_cast<size_t>(t)] + s0;
    float* y = y_base + row0 * static_cast<int64_t>(ld_y);
    a.n = n;
    a.h_prev = h_prev;
    a.tiles_backward = par != 0;
    if (projected)
      a.xp = ws.proj[2 * static_cast<size_t>(u.layer) + static_cast<size_t>(u.dir)].data() + row0 * GH;
    else if (table_rows)
      a.xp = dw.token_proj.data() + static_cast<std::size_t>(ws.token[static_cast<size_t>(row0)]) * GH;
    else if (fused)
      a.x = in + row0 * in_w;
    else
      a.xp = sc.xproj.data() + (row0 - r0) * GH;
    a.c_prev = c_prev;
    a.c_next = c_next;
    if (proj) {
      a.h_next = sc.m.data();
      a.ld_hn = static_cast<std::size_t>(H);
      a.y = nullptr;
    } else {
      a.h_next = h_next;
      a.ld_hn = static_cast<std::size_t>(P);
      a.y = rows_unread ? nullptr : y;
      a.ld_y = ld_y;
    }
    switch (L.cell) {
      case Cell::kLstm:
        m.kernels->lstm_step(a);
        break;
      case Cell::kGru:
        (L.reset_after ? m.kernels->gru_step : m.kernels->gru_reset_before_step)(a);
        break;
      case Cell::kRnn:
        m.kernels->rnn_step(a);
        break;
    }
    if (proj) {
      m.kernels->gemm(dw.wr.view, sc.m.data(), static_cast<std::size_t>(H), n, h_next,
                     static_cast<std::size_t>(P));
      if (!rows_unread) copy_rows(h_next, static_cast<std::size_t>(P), y, ld_y, n, P);
    }
    if (ws.any_skip) {
      // A masked step keeps the state and outputs zeros (docs/format.md).
      for (int i = 0; i < n; ++i) {
        if (!ws.skip[static_cast<size_t>(row0 + i)]) continue;
        if (slice == nullptr) {
          std::memcpy(h_next + i * P, h_prev + i * P, static_cast<std::size_t>(P) * sizeof(float));
          std::memcpy(c_next + i * H, c_prev + i * H, static_cast<std::size_t>(H) * sizeof(float));
          if (!rows_unread)
            std::memset(y + i * static_cast<int64_t>(ld_y), 0, static_cast<std::size_t>(P) * sizeof(float));
        } else {
          std::memcpy(h_next + i * P + u0, h_prev + i * P + u0, slice_bytes);
          std::memcpy(c_next + i * H + u0, c_prev + i * H + u0, slice_bytes);
          if (!rows_unread) std::memset(y + i * static_cast<int64_t>(ld_y) + u0, 0, slice_bytes);
        }
      }
    }
    if (top) {
      // Sequences whose reading ends at this step keep their final state.
      const int from = u.reverse ? (t == 0 ? s0 : hi) : std::max(s0, ws.active[static_cast<size_t>(t) + 1]);
      const int col = slice != nullptr ? u0 : 0;
      const int width = slice != nullptr ? u1 - u0 : P;
      if (from < hi)
        copy_rows(h_next + (from - s0) * P + col, static_cast<std::size_t>(P),
                  ws.final_state[u.dir].data() + from * P + col, static_cast<std::size_t>(P), hi - from,
                  width);
    }
  }
}

void readout_and_head(const PackedModel& m, Workspace& ws) {
  const LayerDesc& top = m.desc.layers.back();
  const int W = top.out_width();
  const int P = top.dir_width();
  const int OW = m.desc.output_width();
  const int B = ws.batch;
  const float* seq = ws.stream(static_cast<int>(m.desc.layers.size()));

  if (m.desc.readout == Readout::kSequence) {
    const std::size_t rows = static_cast<std::size_t>(ws.rows);
    const std::size_t wmax = static_cast<std::size_t>(std::max(m.max_head_width, W));
    AlignedBuffer& za = ws.head_a;
    AlignedBuffer& zb = ws.head_b;
    za.ensure(rows * wmax);
    zb.ensure(rows * wmax);
    copy_rows(seq, static_cast<std::size_t>(W), za.data(), static_cast<std::size_t>(W),
              static_cast<int>(rows), W);
    dense_head(m, za.data(), static_cast<int>(rows), zb.data());
    // Rows of skipped steps (masked, or past a sequence's length in a padded
    // output) are zero. Only this call's sequences: shards share the outputs.
    const CallIO& io = *ws.io;
    for (int i = 0; i < B; ++i) {
      const std::size_t T = static_cast<std::size_t>(io.out_seq != nullptr ? ws.lengths[static_cast<size_t>(i)] : ws.width);
      std::memset(io.out_of(ws.order[static_cast<size_t>(i)]), 0, T * OW * sizeof(float));
    }
    for (int t = 0; t < ws.steps; ++t)
      for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        if (ws.skip[static_cast<size_t>(row)]) continue;
        std::memcpy(io.out_of(ws.order[static_cast<size_t>(i)]) + static_cast<std::size_t>(t) * OW,
                    za.data() + row * OW, static_cast<std::size_t>(OW) * sizeof(float));
      }
    return;
  }

  const std::size_t wmax = static_cast<std::size_t>(std::max(m.max_head_width, W));
  ws.head_a.ensure(static_cast<std::size_t>(B) * wmax);
  ws.head_b.ensure(static_cast<std::size_t>(B) * wmax);
  float* z = ws.head_a.data();
  if (m.desc.readout == Readout::kLast) {
    const float* f0 = ws.final_state[0].data();
    if (top.dirs() == 1) {
      copy_rows(f0, static_cast<std::size_t>(P), z, static_cast<std::size_t>(W), B, P);
    } else {
      const float* f1 = ws.final_state[1].data();
      for (int i = 0; i < B; ++i)
        for (int j = 0; j < P; ++j) {
          const float a = f0[i * P + j], b = f1[i * P + j];
          if (top.merge == Merge::kConcat) {
            z[i * W + j] = a;
            z[i * W + P + j] = b;
          } else {
            z[i * W + j] = merge_one(top.merge, a, b);
          }
        }
    }
  } else {
    const bool mean = m.desc.readout == Readout::kMean;
    std::vector<double>& acc = ws.pool_acc;  // kept by the workspace: no allocation per call
    acc.resize(static_cast<size_t>(W));
    const CallIO& io = *ws.io;
    for (int i = 0; i < B; ++i) {
      std::fill(acc.begin(), acc.end(), mean ? 0.0 : -std::numeric_limits<double>::infinity());
      int count = 0;  // steps pooled by this call
      // Streams (max only): the pool so far. A max is one of the values it
      // saw, a float, so carrying it in float32 is exact; besides it, only
      // whether any step was pooled matters (none: the readout is zero).
      const int b = ws.order[static_cast<size_t>(i)];
      const float carried_steps = !mean && io.state_in != nullptr ? io.state_in[b][m.pool_steps] : 0.0f;
      if (carried_steps > 0)
        for (int j = 0; j < W; ++j) acc[static_cast<size_t>(j)] = io.state_in[b][m.pool_max + j];
      for (int t = 0; t < ws.lengths[static_cast<size_t>(i)]; ++t) {
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        if (ws.skip[static_cast<size_t>(row)]) continue;
        ++count;
        const float* v = seq + row * W;
        for (int j = 0; j < W; ++j)
          acc[static_cast<size_t>(j)] = mean ? acc[static_cast<size_t>(j)] + v[j]
                                             : std::max<double>(acc[static_cast<size_t>(j)], v[j]);
      }
      const bool any = count > 0 || carried_steps > 0;
      for (int j = 0; j < W; ++j)
        z[i * W + j] = !any ? 0.0f
                            : static_cast<float>(mean ? acc[static_cast<size_t>(j)] / count
                                                      : acc[static_cast<size_t>(j)]);
      if (!mean && io.state_out != nullptr) {
        float* out = io.state_out[b];
        // Steps pooled so far, saturating where float32 stops counting exactly.
        out[m.pool_steps] = std::min(carried_steps + static_cast<float>(count), kMaxPoolSteps);
        for (int j = 0; j < W; ++j) out[m.pool_max + j] = any ? z[i * W + j] : 0.0f;
      }
    }
  }
  dense_head(m, z, B, ws.head_b.data());
  for (int i = 0; i < B; ++i)
    std::memcpy(ws.io->out_of(ws.order[static_cast<size_t>(i)]),
                z + static_cast<std::size_t>(i) * OW, static_cast<std::size_t>(OW) * sizeof(float));
}

void write_states(const PackedModel& m, Workspace& ws) {
  const CallIO& io = *ws.io;
  if (io.state_out == nullptr) return;
  for (size_t l = 0; l < m.desc.layers.size(); ++l) {
    const LayerDesc& L = m.desc.layers[l];
    const std::size_t P = static_cast<std::size_t>(L.dir_width()), H = static_cast<std::size_t>(L.units);
    Workspace::State& st = ws.state[2 * l];
    const int64_t h_at = m.state_h[l], c_at = m.state_c[l];
    for (int i = 0; i < ws.batch; ++i) {
      // Step t writes buffer (t + 1) % 2, and a row is never written after
      // its sequence's last step.
      const int par = ws.lengths[static_cast<size_t>(i)] & 1;
      float* dst = io.state_out[ws.order[static_cast<size_t>(i)]];
      std::memcpy(dst + h_at, st.h[par].data() + i * P, P * sizeof(float));
      if (c_at >= 0) std::memcpy(dst + c_at, st.c[par].data() + i * H, H * sizeof(float));
    }
  }
}

}  // namespace rnninfer
