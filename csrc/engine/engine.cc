#include "engine/engine.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cpu/dispatch.h"
#include "engine/errors.h"

namespace rnninfer {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

Engine::Engine(ModelDesc desc, const TensorMap& tensors, int threads, const KernelTable* kernels)
    : model_(pack(std::move(desc), tensors, threads, kernels)), exec_(model_, threads) {}

PackedModel Engine::pack(ModelDesc desc, const TensorMap& tensors, int threads,
                         const KernelTable* kernels) {
  check_arg(threads >= 1, "threads must be >= 1, got ", threads);
  PackedModel m;
  m.desc = std::move(desc);
  m.kernels = kernels != nullptr ? kernels : &default_kernels();
  const ModelDesc& md = m.desc;
  validate_desc(md);
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
  const int nr = m.kernels->gemm_nr;
  const int tile = m.kernels->rec_tile;
  if (md.tokens) {
    const float* e = get("embedding.weight", {md.vocab_size, md.input_width});
    m.embedding = AlignedBuffer(static_cast<std::size_t>(md.vocab_size) * md.input_width);
    std::memcpy(m.embedding.data(), e, m.embedding.size() * sizeof(float));
  }
  int in = md.input_width;
  for (size_t i = 0; i < md.layers.size(); ++i) {
    const LayerDesc& L = md.layers[i];
    const int H = L.units, G = L.gates(), P = L.dir_width(), GH = G * H;
    LayerWeights lw;
    lw.dirs.resize(static_cast<size_t>(L.dirs()));
    std::vector<int> all_gates(static_cast<size_t>(G));
    std::iota(all_gates.begin(), all_gates.end(), 0);
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
      pack_gemm(w_ih, GH, in, L.bias ? folded.data() : nullptr, nr, &dw.wx,
                w_ih.type == WType::kBf16  ? m.kernels->bf16_gemm_layout
                : w_ih.type == WType::kI8 ? m.kernels->i8_gemm_layout
                                          : RecLayout::kPlain);
      // The table says which K layout its step kernels read for reduced weights.
      const RecLayout layout = w_hh.type == WType::kBf16  ? m.kernels->bf16_rec_layout
                               : w_hh.type == WType::kI8 ? m.kernels->i8_rec_layout
                                                         : RecLayout::kPlain;
      if (L.cell == Cell::kGru && !L.reset_after) {
        pack_rec(w_hh, H, P, {0, 1}, tile, &dw.wh, layout);
        pack_rec(w_hh, H, P, {2}, tile, &dw.wh_n, layout);
      } else {
        pack_rec(w_hh, H, P, all_gates, tile, &dw.wh, layout);
      }
      if (L.proj_size > 0) pack_gemm(get(pre + "w_hr", {P, H}), P, H, nullptr, nr, &dw.wr);
      const bool token_table = i == 0 && md.tokens &&
                               static_cast<std::size_t>(md.vocab_size) * GH * L.dirs() * sizeof(float) <=
                                   kMaxTokenProjectionBytes;
      // The plain step kernels can compute the input projection tile by tile
      // (StepArgs::wx), with the gemm's arithmetic: fp32 W_x, every gate's xp
      // read once by one update (not GRU reset-before), small tiles.
      const std::size_t tile_bytes = static_cast<std::size_t>(G) * tile * sizeof(float);
      const bool fuses_input = !token_table && w_ih.type == WType::kF32 && layout == RecLayout::kPlain &&
                               !(L.cell == Cell::kGru && !L.reset_after) &&
                               static_cast<std::size_t>(in) * tile_bytes <= kMaxFusedTileBytes &&
                               static_cast<std::size_t>(P) * tile_bytes <= kMaxFusedTileBytes;
      if (fuses_input) {
        pack_rec(w_ih, H, in, all_gates, tile, &dw.wx_step);
        pack_tile_values(L.bias ? folded.data() : nullptr, H, all_gates, tile, &dw.bx_step);
      }
      if (token_table) {
        dw.token_proj = AlignedBuffer(static_cast<std::size_t>(md.vocab_size) * GH);
        m.kernels->gemm(dw.wx.view, m.embedding.data(), static_cast<std::size_t>(in),
                       md.vocab_size, dw.token_proj.data(), static_cast<std::size_t>(GH));
      }
    }
    m.layers.push_back(std::move(lw));
    in = L.out_width();
  }
  m.max_head_width = in;
  for (const LayerDesc& L : md.layers) m.max_width_p = std::max(m.max_width_p, L.dir_width());
  for (size_t j = 0; j < md.head.size(); ++j) {
    const DenseDesc& D = md.head[j];
    const std::string pre = "head." + std::to_string(j) + ".";
    GemmWeights gw;
    pack_gemm(get(pre + "weight", {D.units, in}), D.units, in,
              D.bias ? get(pre + "bias", {D.units}) : nullptr, nr, &gw);
    m.head.push_back(std::move(gw));
    in = D.units;
    m.max_head_width = std::max(m.max_head_width, in);
  }
  // The carried state of one sequence (streams): forward-only stacks.
  bool forward = true;
  for (const LayerDesc& L : md.layers) forward = forward && L.direction == Direction::kForward;
  if (forward) {
    for (size_t i = 0; i < md.layers.size(); ++i) {
      const LayerDesc& L = md.layers[i];
      const std::string pre = "layers." + std::to_string(i) + ".fwd.";
      m.state_h.push_back(m.state_size);
      m.state.push_back({pre + "h", static_cast<int>(i), false, m.state_size, L.dir_width()});
      m.state_size += L.dir_width();
      m.state_c.push_back(L.cell == Cell::kLstm ? m.state_size : -1);
      if (L.cell == Cell::kLstm) {
        m.state.push_back({pre + "c", static_cast<int>(i), true, m.state_size, L.units});
        m.state_size += L.units;
      }
    }
    if (md.readout == Readout::kMax) {
      const int top = static_cast<int>(md.layers.size()) - 1;
      m.pool_max = m.state_size;
      m.state.push_back({"readout.max", top, false, m.state_size, md.top_width()});
      m.state_size += md.top_width();
      m.pool_steps = m.state_size;
      m.state.push_back({"readout.steps", top, false, m.state_size, 1});
      m.state_size += 1;
    }
  }
  return m;
}

const char* Engine::recurrent_activations() const {
  for (const LayerWeights& lw : model_.layers)
    for (const DirWeights& dw : lw.dirs) {
      if (dw.wh.view.layout == RecLayout::kPairs) return "bf16";
      if (dw.wh.view.layout == RecLayout::kQuads) return "int8";
    }
  return "fp32";
}

int64_t Engine::output_size(int steps) const {
  const int64_t w = model_.desc.output_width();
  return model_.desc.readout == Readout::kSequence ? w * steps : w;
}

namespace {

// The model input rows of a (sub-)call: the embedding rows of its token ids
// (range-checked: std::invalid_argument naming sequence and step), with
// mask_zero's skipped steps marked. at(b, t) is sequence b's id at step t.
template <typename At>
void fill_tokens(const PackedModel& m, Workspace& ws, float* in, At at) {
  const int E = m.desc.input_width;
  // Rows nothing reads are not copied: a one-token feed of a large
  // vocabulary would otherwise wait for a cache miss on the embedding table.
  const bool rows = m.reads_input_rows();
  ws.token.resize(static_cast<size_t>(ws.rows));
  for (int t = 0; t < ws.steps; ++t) {
    for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
      const int b = ws.order[static_cast<size_t>(i)];
      const int64_t tok = at(b, t);
      if (tok < 0 || tok >= m.desc.vocab_size)
        throw std::invalid_argument(concat("token id ", tok, " at sequence ", b, ", step ", t,
                                           " is out of range for the vocabulary [0, ",
                                           m.desc.vocab_size, ")"));
      const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
      if (rows)
        std::memcpy(in + row * E, m.embedding.data() + static_cast<std::size_t>(tok) * E,
                    static_cast<std::size_t>(E) * sizeof(float));
      ws.token[static_cast<size_t>(row)] = static_cast<int32_t>(tok);
      if (m.desc.mask_zero && tok == 0) {
        ws.skip[static_cast<size_t>(row)] = 1;
        ws.any_skip = true;
      }
    }
  }
}

// The same for float features: at(b, t) points at sequence b's F features of step t.
template <typename At>
void fill_features(const PackedModel& m, Workspace& ws, float* in, At at) {
  const int F = m.desc.input_width;
  for (int t = 0; t < ws.steps; ++t) {
    for (int i = 0; i < ws.active[static_cast<size_t>(t)]; ++i) {
      const float* src = at(ws.order[static_cast<size_t>(i)], t);
      const int64_t row = ws.offset[static_cast<size_t>(t)] + i;
      std::memcpy(in + row * F, src, static_cast<std::size_t>(F) * sizeof(float));
      if (m.desc.has_mask_value) {
        bool all = true;
        for (int f = 0; f < F && all; ++f) all = src[f] == m.desc.mask_value;
        if (all) {
          ws.skip[static_cast<size_t>(row)] = 1;
          ws.any_skip = true;
        }
      }
    }
  }
}

int longest(int batch, const int32_t* lengths) {
  int steps = 0;
  for (int b = 0; b < batch; ++b) steps = std::max(steps, lengths[b]);
  return steps;
}

}  // namespace

void Engine::predict_tokens(const int64_t* tokens, int batch, int steps, const int32_t* lengths,
                            float* out, CallTrace* trace) const {
  CallIO io;
  io.out = out;
  io.out_stride = output_size(steps);
  exec_.execute(batch, steps, lengths, io, trace, [&](Workspace& ws, float* in) {
    fill_tokens(model_, ws, in,
                [&](int b, int t) { return tokens[static_cast<std::size_t>(b) * steps + t]; });
  });
}

void Engine::predict_features(const float* x, int batch, int steps, const int32_t* lengths,
                              float* out, CallTrace* trace) const {
  const std::size_t F = static_cast<std::size_t>(model_.desc.input_width);
  CallIO io;
  io.out = out;
  io.out_stride = output_size(steps);
  exec_.execute(batch, steps, lengths, io, trace, [&](Workspace& ws, float* in) {
    fill_features(model_, ws, in,
                  [&](int b, int t) { return x + (static_cast<std::size_t>(b) * steps + t) * F; });
  });
}

void Engine::check_streams() const {
  const ModelDesc& d = model_.desc;
  for (size_t i = 0; i < d.layers.size(); ++i)
    check_arg(d.layers[i].direction == Direction::kForward, "layer ", i, " reads backwards (",
              d.layers[i].dirs() == 2 ? "bidirectional" : "go_backwards",
              "): a stream can only carry the state of layers that run forwards");
  check_arg(d.readout != Readout::kMean,
            "a model with a mean readout cannot stream: predict sums every step in float64, which "
            "a float32 state cannot carry exactly (a max readout streams)");
}

void Engine::feed_tokens(int batch, const int64_t* const* tokens, const int32_t* lengths,
                         const float* const* state_in, float* const* state_out,
                         float* const* out) const {
  check_streams();
  check_arg(model_.desc.tokens, "this model takes float features, not token ids");
  CallIO io;
  io.out_seq = out;
  io.state_in = state_in;
  io.state_out = state_out;
  exec_.execute(batch, longest(batch, lengths), lengths, io, nullptr, [&](Workspace& ws, float* in) {
    fill_tokens(model_, ws, in, [&](int b, int t) { return tokens[b][t]; });
  });
}

void Engine::feed_features(int batch, const float* const* features, const int32_t* lengths,
                           const float* const* state_in, float* const* state_out,
                           float* const* out) const {
  check_streams();
  check_arg(!model_.desc.tokens, "this model takes token ids, not float features");
  const std::size_t F = static_cast<std::size_t>(model_.desc.input_width);
  CallIO io;
  io.out_seq = out;
  io.state_in = state_in;
  io.state_out = state_out;
  exec_.execute(batch, longest(batch, lengths), lengths, io, nullptr, [&](Workspace& ws, float* in) {
    fill_features(model_, ws, in, [&](int b, int t) { return features[b] + static_cast<std::size_t>(t) * F; });
  });
}

}  // namespace rnninfer
