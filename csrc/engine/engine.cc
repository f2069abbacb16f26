#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "cpu/dispatch.h"
#include "engine/errors.h"
#include "engine/scheduler.h"
#include "engine/workspace.h"

namespace rnninfer {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

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

}  // namespace

Engine::Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels)
    : desc_(std::move(desc)),
      kernels_(kernels != nullptr ? kernels : &default_kernels()),
      threads_(threads) {
  check_arg(threads >= 1, "threads must be >= 1, got ", threads);
  validate_desc(desc_);
  auto find = [&](const std::string& name, const std::vector<int64_t>& shape) -> const TensorView& {
    auto it = tensors.find(name);
    check_arg(it != tensors.end(), "missing tensor '", name, "'");
    check_arg(it->second.shape == shape, "tensor '", name, "' has shape ",
              shape_str(it->second.shape), ", expected ", shape_str(shape));
    check_arg(it->second.data != nullptr, "tensor '", name, "' has no data");
    return it->second;
  };
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> const float* {
    const TensorView& v = find(name, shape);
    check_arg(v.dtype == WType::kF32, "tensor '", name, "' must be float32");
    return static_cast<const float*>(v.data);
  };
  // w_ih / w_hh: fp32, bf16 or int8 (+ "<name>_scale", one per row). The
  // packed operand keeps the element type; the kernels follow it.
  auto get_w = [&](const std::string& name, std::vector<int64_t> shape) -> WeightSrc {
    const TensorView& v = find(name, shape);
    WeightSrc w{v.dtype, v.data, nullptr};
    if (v.dtype == WType::kI8) w.scale = get(name + "_scale", {shape[0]});
    return w;
  };
  const int nr = kernels_->gemm_nr;
  const int tile = kernels_->rec_tile;
  if (desc_.tokens) {
    const float* e = get("embedding.weight", {desc_.vocab_size, desc_.input_width});
    embedding_ = AlignedBuffer(static_cast<std::size_t>(desc_.vocab_size) * desc_.input_width);
    std::memcpy(embedding_.data(), e, embedding_.size() * sizeof(float));
  }
  int in = desc_.input_width;
  for (size_t i = 0; i < desc_.layers.size(); ++i) {
    const LayerDesc& L = desc_.layers[i];
    const int H = L.units, G = L.gates(), P = L.dir_width(), GH = G * H;
    LayerWeights lw;
    lw.dirs.resize(static_cast<size_t>(L.dirs()));
    for (int d = 0; d < L.dirs(); ++d) {
      const std::string pre = "layers." + std::to_string(i) + (d == 0 ? ".fwd." : ".bwd.");
      DirWeights& dw = lw.dirs[static_cast<size_t>(d)];
      const WeightSrc w_ih = get_w(pre + "w_ih", {GH, in});
      const WeightSrc w_hh = get_w(pre + "w_hh", {GH, P});
      std::vector<float> folded;
      if (L.bias) {
        const float* b_ih = get(pre + "b_ih", {GH});
        const float* b_hh = get(pre + "b_hh", {GH});
        folded.assign(b_ih, b_ih + GH);
        // b_hh joins the projection bias wherever it is not multiplied by the
        // reset gate: everywhere except GRU(reset_after)'s candidate block.
        const bool keep_hn = L.cell == Cell::kGru && L.reset_after;
        for (int j = 0; j < GH; ++j)
          if (!(keep_hn && j >= 2 * H)) folded[static_cast<size_t>(j)] += b_hh[j];
        if (keep_hn) {
          dw.b_hn = AlignedBuffer(static_cast<std::size_t>(H));
          std::memcpy(dw.b_hn.data(), b_hh + 2 * H, static_cast<std::size_t>(H) * sizeof(float));
        }
      }
      pack_gemm(w_ih, GH, in, L.bias ? folded.data() : nullptr, nr, &dw.wx);
      if (L.cell == Cell::kGru && !L.reset_after) {
        pack_rec(w_hh, H, P, {0, 1}, tile, &dw.wh);
        pack_rec(w_hh, H, P, {2}, tile, &dw.wh_n);
      } else {
        std::vector<int> gates(static_cast<size_t>(G));
        std::iota(gates.begin(), gates.end(), 0);
        pack_rec(w_hh, H, P, gates, tile, &dw.wh);
      }
      if (L.proj_size > 0) pack_gemm(get(pre + "w_hr", {P, H}), P, H, nullptr, nr, &dw.wr);
    }
    layers_.push_back(std::move(lw));
    in = L.out_width();
  }
  max_head_width_ = in;
  for (size_t j = 0; j < desc_.head.size(); ++j) {
    const DenseDesc& D = desc_.head[j];
    const std::string pre = "head." + std::to_string(j) + ".";
    GemmWeights gw;
    pack_gemm(get(pre + "weight", {D.units, in}), D.units, in,
              D.bias ? get(pre + "bias", {D.units}) : nullptr, nr, &gw);
    head_.push_back(std::move(gw));
    in = D.units;
    max_head_width_ = std::max(max_head_width_, in);
  }
}

int64_t Engine::output_size(int steps) const {
  const int64_t w = desc_.output_width();
  return desc_.readout == Readout::kSequence ? w * steps : w;
}

void Engine::check_call(int batch, int steps, const int32_t* lengths) const {
  check_arg(batch > 0, "empty batch: no sequences to run");
  check_arg(steps > 0, "zero-length input: no steps to run");
  for (int b = 0; b < batch; ++b)
    check_arg(lengths[b] >= 1 && lengths[b] <= steps, "lengths[", b, "] = ", lengths[b],
              " is outside [1, ", steps, "]");
}

namespace {

// Sorts the batch by length (longest first, stable) and lays out packed rows.
void plan_rows(Workspace& ws, int batch, int steps, const int32_t* lengths) {
  ws.batch = batch;
  ws.order.resize(static_cast<size_t>(batch));
  std::iota(ws.order.begin(), ws.order.end(), 0);
  std::stable_sort(ws.order.begin(), ws.order.end(),
                   [&](int a, int b) { return lengths[a] > lengths[b]; });
  ws.lengths.resize(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) ws.lengths[static_cast<size_t>(i)] = lengths[ws.order[static_cast<size_t>(i)]];
  ws.steps = ws.lengths[0];
  ws.width = steps;
  ws.active.assign(static_cast<size_t>(ws.steps) + 1, 0);
  ws.offset.assign(static_cast<size_t>(ws.steps) + 1, 0);
  int n = batch;
  for (int t = 0; t < ws.steps; ++t) {
    while (n > 0 && ws.lengths[static_cast<size_t>(n) - 1] <= t) --n;
    ws.active[static_cast<size_t>(t)] = n;
    ws.offset[static_cast<size_t>(t) + 1] = ws.offset[static_cast<size_t>(t)] + n;
  }
  ws.rows = ws.offset[static_cast<size_t>(ws.steps)];
  ws.skip.assign(static_cast<size_t>(ws.rows), 0);
  ws.any_skip = false;
}

}  // namespace

void Engine::plan_streams(Workspace& ws) const {
  const int nl = static_cast<int>(desc_.layers.size());
  ws.last_use.assign(static_cast<size_t>(nl) + 1, -1);
  for (int l = 0; l < nl; ++l) {
    ws.last_use[static_cast<size_t>(l)] = std::max(ws.last_use[static_cast<size_t>(l)], l);
    const int r = desc_.layers[static_cast<size_t>(l)].residual_from;
    if (r != kNoResidual) ws.last_use[static_cast<size_t>(r) + 1] = l;
  }
  ws.last_use[static_cast<size_t>(nl)] = nl;  // the top stream lives to the readout
  ws.stream_slot.assign(static_cast<size_t>(nl) + 1, -1);
}

void Engine::open_stream(Workspace& ws, int s, std::size_t floats) const {
  std::vector<bool> busy(ws.slots.size(), false);
  for (int o : ws.stream_slot)
    if (o >= 0) busy[static_cast<size_t>(o)] = true;
  size_t slot = 0;
  while (slot < busy.size() && busy[slot]) ++slot;
  if (slot == ws.slots.size()) ws.slots.emplace_back();
  ws.slots[slot].ensure(floats);
  ws.stream_slot[static_cast<size_t>(s)] = static_cast<int>(slot);
}

void Engine::close_stream(Workspace& ws, int s) const { ws.stream_slot[static_cast<size_t>(s)] = -1; }

Engine::Lease::Lease(const Engine& e) : engine_(e) {
  {
    std::lock_guard<std::mutex> lock(e.pool_mu_);
    if (!e.pool_.empty()) {
      ws_ = std::move(e.pool_.back());
      e.pool_.pop_back();
    }
  }
  if (!ws_) ws_ = std::make_unique<Workspace>();
}

Engine::Lease::~Lease() {
  std::lock_guard<std::mutex> lock(engine_.pool_mu_);
  // Keep a few workspaces for reuse; more than that were only needed by a
  // burst of concurrent calls and are released.
  if (engine_.pool_.size() < kMaxPooledWorkspaces) engine_.pool_.push_back(std::move(ws_));
}

void Engine::predict_tokens(const int64_t* tokens, int batch, int steps, const int32_t* lengths,
                            float* out) const {
  check_call(batch, steps, lengths);
  Lease lease(*this);
  Workspace& ws = lease.ws();
  plan_rows(ws, batch, steps, lengths);
  const int E = desc_.input_width;
  plan_streams(ws);
  open_stream(ws, 0, static_cast<std::size_t>(ws.rows) * E);
  float* in = ws.stream(0);
  for (int t = 0; t < ws.steps; ++t) {
    for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
      const int b = ws.order[static_cast<size_t>(i)];
      const int64_t tok = tokens[static_cast<std::size_t>(b) * steps + t];
      if (tok < 0 || tok >= desc_.vocab_size)
        throw std::invalid_argument(concat("token id ", tok, " at sequence ", b, ", step ", t,
                                           " is out of range for the vocabulary [0, ",
                                           desc_.vocab_size, ")"));
      const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
      std::memcpy(in + row * E, embedding_.data() + static_cast<std::size_t>(tok) * E,
                  static_cast<std::size_t>(E) * sizeof(float));
      if (desc_.mask_zero && tok == 0) {
        ws.skip[static_cast<size_t>(row)] = 1;
        ws.any_skip = true;
      }
    }
  }
  run(ws, out);
}

void Engine::predict_features(const float* x, int batch, int steps, const int32_t* lengths,
                              float* out) const {
  check_call(batch, steps, lengths);
  Lease lease(*this);
  Workspace& ws = lease.ws();
  plan_rows(ws, batch, steps, lengths);
  const int F = desc_.input_width;
  plan_streams(ws);
  open_stream(ws, 0, static_cast<std::size_t>(ws.rows) * F);
  float* in = ws.stream(0);
  for (int t = 0; t < ws.steps; ++t) {
    for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
      const int b = ws.order[static_cast<size_t>(i)];
      const float* src = x + (static_cast<std::size_t>(b) * steps + t) * F;
      const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
      std::memcpy(in + row * F, src, static_cast<std::size_t>(F) * sizeof(float));
      if (desc_.has_mask_value) {
        bool all = true;
        for (int f = 0; f < F && all; ++f) all = src[f] == desc_.mask_value;
        if (all) {
          ws.skip[static_cast<size_t>(row)] = 1;
          ws.any_skip = true;
        }
      }
    }
  }
  run(ws, out);
}

void Engine::run(Workspace& ws, float* out) const {
  std::size_t max_h = 1, max_p = 1, max_gh = 1;
  bool need_merge_tmp = false;
  for (const LayerDesc& L : desc_.layers) {
    max_h = std::max<std::size_t>(max_h, static_cast<std::size_t>(L.units));
    max_p = std::max<std::size_t>(max_p, static_cast<std::size_t>(L.dir_width()));
    max_gh = std::max<std::size_t>(max_gh, static_cast<std::size_t>(L.gates()) * L.units);
    need_merge_tmp |= L.dirs() == 2 && L.merge != Merge::kConcat;
  }
  const std::size_t B = static_cast<std::size_t>(ws.batch);
  const int max_dirs = std::any_of(desc_.layers.begin(), desc_.layers.end(),
                                   [](const LayerDesc& L) { return L.dirs() == 2; })
                           ? 2
                           : 1;
  for (int d = 0; d < max_dirs; ++d) {
    Workspace::DirState& st = ws.dir[d];
    st.xproj.ensure(static_cast<std::size_t>(kTimeBlock) * B * max_gh);
    for (int k = 0; k < 2; ++k) {
      st.h[k].ensure(B * max_p);
      st.c[k].ensure(B * max_h);
    }
    st.m.ensure(B * max_h);
    st.gru_scratch.ensure(2 * B * max_h);
    st.final_state.ensure(B * max_p);
  }
  if (need_merge_tmp) ws.merge_tmp.ensure(static_cast<std::size_t>(ws.rows) * max_p);

  run_plan(
      desc_, ws.steps,
      [&](const WorkUnit& u) {
        if (u.dir == 0 && ((!u.reverse && u.t_begin == 0) || (u.reverse && u.t_end == ws.steps))) {
          // First unit of the layer: its output stream.
          const LayerDesc& L = desc_.layers[static_cast<size_t>(u.layer)];
          open_stream(ws, u.layer + 1, static_cast<std::size_t>(ws.rows) * L.out_width());
        }
        run_unit(ws, u);
      },
      [&](int l) { finish_layer(ws, l); });
  readout_and_head(ws, out);
}

void Engine::run_unit(Workspace& ws, const WorkUnit& u) const {
  const LayerDesc& L = desc_.layers[static_cast<size_t>(u.layer)];
  const DirWeights& dw = layers_[static_cast<size_t>(u.layer)].dirs[static_cast<size_t>(u.dir)];
  Workspace::DirState& st = ws.dir[u.dir];
  const int H = L.units, P = L.dir_width(), GH = L.gates() * H;
  const int in_w = desc_.stream_width(u.layer - 1);
  const std::size_t B = static_cast<std::size_t>(ws.batch);

  const bool first = u.reverse ? u.t_end == ws.steps : u.t_begin == 0;
  if (first) {
    // Sequences start from a zero state. Rows that join later (backward
    // direction, shorter sequences) are still zero when they join, because a
    // row is only written while it is active.
    for (int k = 0; k < 2; ++k) {
      std::memset(st.h[k].data(), 0, B * P * sizeof(float));
      std::memset(st.c[k].data(), 0, B * H * sizeof(float));
    }
    st.cur = 0;
  }

  const float* in = ws.stream(u.layer);
  const int64_t r0 = ws.offset[static_cast<size_t>(u.t_begin)];
  const int64_t r1 = ws.offset[static_cast<size_t>(u.t_end)];
  kernels_->gemm(dw.wx.view, in + r0 * in_w, static_cast<std::size_t>(in_w),
                 static_cast<int>(r1 - r0), st.xproj.data(), static_cast<std::size_t>(GH));

  float* y_base;
  std::size_t ld_y;
  const bool separate_half = L.dirs() == 2 && L.merge != Merge::kConcat && u.dir == 1;
  if (separate_half) {
    y_base = ws.merge_tmp.data();
    ld_y = static_cast<std::size_t>(P);
  } else {
    y_base = ws.stream(u.layer + 1) +
             ((L.dirs() == 2 && L.merge == Merge::kConcat && u.dir == 1) ? P : 0);
    ld_y = static_cast<std::size_t>(L.out_width());
  }

  StepArgs a;
  a.w = &dw.wh.view;
  a.w2 = &dw.wh_n.view;
  a.ld_h = static_cast<std::size_t>(P);
  a.ld_xp = static_cast<std::size_t>(GH);
  a.b_hn = dw.b_hn.size() ? dw.b_hn.data() : nullptr;
  a.ld_c = static_cast<std::size_t>(H);
  a.scratch = st.gru_scratch.data();
  a.act = L.act;
  a.ract = L.ract;
  const bool proj = L.proj_size > 0;

  const int nsteps = u.t_end - u.t_begin;
  for (int s = 0; s < nsteps; ++s) {
    const int t = u.reverse ? u.t_end - 1 - s : u.t_begin + s;
    const int n = ws.active[static_cast<size_t>(t)];
    const int64_t row0 = ws.offset[static_cast<size_t>(t)];
    float* h_prev = st.h[st.cur].data();
    float* h_next = st.h[1 - st.cur].data();
    float* c_prev = st.c[st.cur].data();
    float* c_next = st.c[1 - st.cur].data();
    float* y = y_base + row0 * ld_y;
    a.n = n;
    a.h_prev = h_prev;
    a.xp = st.xproj.data() + (row0 - r0) * GH;
    a.c_prev = c_prev;
    a.c_next = c_next;
    if (proj) {
      a.h_next = st.m.data();
      a.ld_hn = static_cast<std::size_t>(H);
      a.y = nullptr;
    } else {
      a.h_next = h_next;
      a.ld_hn = static_cast<std::size_t>(P);
      a.y = y;
      a.ld_y = ld_y;
    }
    switch (L.cell) {
      case Cell::kLstm:
        kernels_->lstm_step(a);
        break;
      case Cell::kGru:
        (L.reset_after ? kernels_->gru_step : kernels_->gru_reset_before_step)(a);
        break;
      case Cell::kRnn:
        kernels_->rnn_step(a);
        break;
    }
    if (proj) {
      kernels_->gemm(dw.wr.view, st.m.data(), static_cast<std::size_t>(H), n, h_next,
                     static_cast<std::size_t>(P));
      copy_rows(h_next, static_cast<std::size_t>(P), y, ld_y, n, P);
    }
    if (ws.any_skip) {
      // A masked step keeps the state and outputs zeros (docs/format.md).
      for (int i = 0; i < n; ++i) {
        if (!ws.skip[static_cast<size_t>(row0 + i)]) continue;
        std::memcpy(h_next + i * P, h_prev + i * P, static_cast<std::size_t>(P) * sizeof(float));
        std::memcpy(c_next + i * H, c_prev + i * H, static_cast<std::size_t>(H) * sizeof(float));
        std::memset(y + i * ld_y, 0, static_cast<std::size_t>(P) * sizeof(float));
      }
    }
    // Sequences whose reading ends at this step keep their final state.
    const int done_from = u.reverse ? (t == 0 ? 0 : n) : ws.active[static_cast<size_t>(t) + 1];
    if (done_from < n)
      copy_rows(h_next + done_from * P, static_cast<std::size_t>(P),
                st.final_state.data() + done_from * P, static_cast<std::size_t>(P), n - done_from, P);
    st.cur = 1 - st.cur;
  }
}

void Engine::finish_layer(Workspace& ws, int l) const {
  const LayerDesc& L = desc_.layers[static_cast<size_t>(l)];
  float* out = ws.stream(l + 1);
  const int W = L.out_width();
  if (L.dirs() == 2 && L.merge != Merge::kConcat) {
    const float* bwd = ws.merge_tmp.data();
    const int64_t n = ws.rows * W;
    for (int64_t i = 0; i < n; ++i) out[i] = merge_one(L.merge, out[i], bwd[i]);
  }
  if (L.residual_from != kNoResidual) {
    const float* src = ws.stream(L.residual_from + 1);
    for (int64_t r = 0; r < ws.rows; ++r) {
      if (ws.skip[static_cast<size_t>(r)]) continue;
      for (int j = 0; j < W; ++j) out[r * W + j] += src[r * W + j];
    }
  }
  for (size_t s = 0; s < ws.last_use.size(); ++s)
    if (ws.last_use[s] == l) close_stream(ws, static_cast<int>(s));
}

void Engine::dense_head(Workspace& ws, float* z, int rows, float* tmp) const {
  (void)ws;
  float* cur = z;
  float* other = tmp;
  int width = desc_.top_width();
  for (size_t j = 0; j < desc_.head.size(); ++j) {
    const DenseDesc& D = desc_.head[j];
    kernels_->gemm(head_[j].view, cur, static_cast<std::size_t>(width), rows, other,
                   static_cast<std::size_t>(D.units));
    if (D.act == Act::kSoftmax || D.act == Act::kLogSoftmax) {
      for (int r = 0; r < rows; ++r)
        row_softmax(other + static_cast<std::size_t>(r) * D.units, D.units, D.act == Act::kLogSoftmax);
    } else if (D.act != Act::kLinear) {
      kernels_->activate(D.act, other, rows * D.units);
    }
    std::swap(cur, other);
    width = D.units;
  }
  if (cur != z) std::memcpy(z, cur, static_cast<std::size_t>(rows) * width * sizeof(float));
}

void Engine::readout_and_head(Workspace& ws, float* out) const {
  const LayerDesc& top = desc_.layers.back();
  const int W = top.out_width();
  const int P = top.dir_width();
  const int OW = desc_.output_width();
  const int B = ws.batch;
  const float* seq = ws.stream(static_cast<int>(desc_.layers.size()));

  if (desc_.readout == Readout::kSequence) {
    const std::size_t rows = static_cast<std::size_t>(ws.rows);
    const std::size_t wmax = static_cast<std::size_t>(std::max(max_head_width_, W));
    AlignedBuffer& za = ws.head_a;
    AlignedBuffer& zb = ws.head_b;
    za.ensure(rows * wmax);
    zb.ensure(rows * wmax);
    copy_rows(seq, static_cast<std::size_t>(W), za.data(), static_cast<std::size_t>(W),
              static_cast<int>(rows), W);
    dense_head(ws, za.data(), static_cast<int>(rows), zb.data());
    const std::size_t T = static_cast<std::size_t>(ws.width);
    std::memset(out, 0, static_cast<std::size_t>(B) * T * OW * sizeof(float));
    for (int t = 0; t < ws.steps; ++t)
      for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        if (ws.skip[static_cast<size_t>(row)]) continue;
        const int b = ws.order[static_cast<size_t>(i)];
        std::memcpy(out + (static_cast<std::size_t>(b) * T + t) * OW, za.data() + row * OW,
                    static_cast<std::size_t>(OW) * sizeof(float));
      }
    return;
  }

  const std::size_t wmax = static_cast<std::size_t>(std::max(max_head_width_, W));
  ws.head_a.ensure(static_cast<std::size_t>(B) * wmax);
  ws.head_b.ensure(static_cast<std::size_t>(B) * wmax);
  float* z = ws.head_a.data();
  if (desc_.readout == Readout::kLast) {
    const float* f0 = ws.dir[0].final_state.data();
    if (top.dirs() == 1) {
      copy_rows(f0, static_cast<std::size_t>(P), z, static_cast<std::size_t>(W), B, P);
    } else {
      const float* f1 = ws.dir[1].final_state.data();
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
    const bool mean = desc_.readout == Readout::kMean;
    std::vector<double> acc(static_cast<size_t>(W));
    for (int i = 0; i < B; ++i) {
      std::fill(acc.begin(), acc.end(), mean ? 0.0 : -std::numeric_limits<double>::infinity());
      int count = 0;
      for (int t = 0; t < ws.lengths[static_cast<size_t>(i)]; ++t) {
        const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
        if (ws.skip[static_cast<size_t>(row)]) continue;
        ++count;
        const float* v = seq + row * W;
        for (int j = 0; j < W; ++j)
          acc[static_cast<size_t>(j)] = mean ? acc[static_cast<size_t>(j)] + v[j]
                                             : std::max<double>(acc[static_cast<size_t>(j)], v[j]);
      }
      for (int j = 0; j < W; ++j)
        z[i * W + j] = count == 0 ? 0.0f
                                  : static_cast<float>(mean ? acc[static_cast<size_t>(j)] / count
                                                            : acc[static_cast<size_t>(j)]);
    }
  }
  dense_head(ws, z, B, ws.head_b.data());
  for (int i = 0; i < B; ++i)
    std::memcpy(out + static_cast<std::size_t>(ws.order[static_cast<size_t>(i)]) * OW,
                z + static_cast<std::size_t>(i) * OW, static_cast<std::size_t>(OW) * sizeof(float));
}

}  // namespace rnninfer
