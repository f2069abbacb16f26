#include "engine/packing.h"

#include <cstddef>
#include <cstdint>

namespace rnninfer {
namespace {

// Offset of the unsigned activations of kQuads kernels (recurrent_dot_avx512-inl.h).
constexpr int32_t kU8Offset = 128;

// An AlignedBuffer (float-granular) large enough for `n` elements of E.
template <typename E>
AlignedBuffer alloc_elems(std::size_t n) {
  return AlignedBuffer((n * sizeof(E) + sizeof(float) - 1) / sizeof(float));
}

template <typename E>
E* elems(AlignedBuffer& b) {
  return reinterpret_cast<E*>(b.data());
}

// Groups of `group` consecutive k per output (1, or 2/4 for kPairs/kQuads);
// K padded with zeros to whole groups.
template <typename E>
void pack_gemm_t(const E* w, int n, int k, int nr, int panels, int group, E* dst) {
  const int groups = (k + group - 1) / group;
  for (int p = 0; p < panels; ++p)
    for (int q = 0; q < groups; ++q)
      for (int j = 0; j < nr; ++j)
        for (int e = 0; e < group; ++e) {
          const int row = p * nr + j;
          const int kk = q * group + e;
          *dst++ = row < n && kk < k ? w[static_cast<std::size_t>(row) * k + kk] : E(0);
        }
}

// Groups of `group` consecutive k (1, or 2/4 for kPairs/kQuads) per lane;
// K padded with zeros to whole groups.
template <typename E>
void pack_rec_t(const E* w, int h, int k, const std::vector<int>& gates, int tile, int group,
                E* dst) {
  const int g = static_cast<int>(gates.size());
  const int tiles = (h + tile - 1) / tile;
  const int groups = (k + group - 1) / group;
  for (int t = 0; t < tiles; ++t)
    for (int p = 0; p < groups; ++p)
      for (int gi = 0; gi < g; ++gi)
        for (int u = 0; u < tile; ++u)
          for (int j = 0; j < group; ++j) {
            const int unit = t * tile + u;
            const int kk = p * group + j;
            const std::size_t row =
                static_cast<std::size_t>(gates[static_cast<std::size_t>(gi)]) * h + unit;
            *dst++ = unit < h && kk < k ? w[row * k + kk] : E(0);
          }
}

// The layouts are defined for one element type each; others pack kPlain.
RecLayout checked_layout(WType type, RecLayout layout) {
  if ((layout == RecLayout::kPairs && type != WType::kBf16) ||
      (layout == RecLayout::kQuads && type != WType::kI8))
    return RecLayout::kPlain;
  return layout;
}

int group_of(RecLayout layout) {
  switch (layout) {
    case RecLayout::kPairs:
      return 2;
    case RecLayout::kQuads:
      return 4;
    case RecLayout::kPlain:
      break;
  }
  return 1;
}

}  // namespace

void pack_gemm(const WeightSrc& w, int n, int k, const float* bias, int nr, GemmWeights* out,
               RecLayout layout) {
  layout = checked_layout(w.type, layout);
  if (k > kDotGemmMaxK) layout = RecLayout::kPlain;
  const int group = group_of(layout);
  const int panels = (n + nr - 1) / nr;
  const std::size_t count =
      static_cast<std::size_t>(panels) * nr * (k > 0 ? (k + group - 1) / group * group : 1);
  out->view = PackedGemm();
  out->view.type = w.type;
  out->view.layout = layout;
  switch (w.type) {
    case WType::kF32:
      out->data = alloc_elems<float>(count);
      pack_gemm_t(static_cast<const float*>(w.data), n, k, nr, panels, group,
                  elems<float>(out->data));
      out->view.data = out->data.data();
      break;
    case WType::kBf16:
      out->data = alloc_elems<uint16_t>(count);
      pack_gemm_t(static_cast<const uint16_t*>(w.data), n, k, nr, panels, group,
                  elems<uint16_t>(out->data));
      out->view.bf16 = elems<uint16_t>(out->data);
      break;
    case WType::kI8:
      out->data = alloc_elems<int8_t>(count);
      pack_gemm_t(static_cast<const int8_t*>(w.data), n, k, nr, panels, group,
                  elems<int8_t>(out->data));
      out->view.i8 = elems<int8_t>(out->data);
      // Padded to whole panels so the kernel loads full vectors of scales.
      out->scale = AlignedBuffer(static_cast<std::size_t>(panels) * nr);
      for (int j = 0; j < n; ++j) out->scale.data()[j] = w.scale[j];
      out->view.scale = out->scale.data();
      if (layout == RecLayout::kQuads) {
        out->comp = AlignedBuffer(static_cast<std::size_t>(panels) * nr);
        int32_t* c = reinterpret_cast<int32_t*>(out->comp.data());
        const int8_t* q = static_cast<const int8_t*>(w.data);
        for (int j = 0; j < n; ++j) {
          int32_t sum = 0;
          for (int kk = 0; kk < k; ++kk) sum += q[static_cast<std::size_t>(j) * k + kk];
          c[j] = kU8Offset * sum;
        }
        out->view.comp = c;
      }
      break;
  }
  if (bias != nullptr) {
    // Padded to whole panels so the kernel's masked bias loads stay in bounds.
    out->bias = AlignedBuffer(static_cast<std::size_t>(panels) * nr);
    for (int j = 0; j < n; ++j) out->bias.data()[j] = bias[j];
  }
  out->view.bias = bias != nullptr ? out->bias.data() : nullptr;
  out->view.n = n;
  out->view.k = k;
  out->view.nr = nr;
}

void pack_rec(const WeightSrc& w, int h, int k, const std::vector<int>& gates, int tile,
              RecWeights* out, RecLayout layout) {
  layout = checked_layout(w.type, layout);
  const int group = group_of(layout);
  const int g = static_cast<int>(gates.size());
  const int tiles = (h + tile - 1) / tile;
  const std::size_t count =
      static_cast<std::size_t>(tiles) * ((k + group - 1) / group) * group * g * tile;
  out->view = PackedRec();
  out->view.type = w.type;
  out->view.layout = layout;
  switch (w.type) {
    case WType::kF32:
      out->data = alloc_elems<float>(count);
      pack_rec_t(static_cast<const float*>(w.data), h, k, gates, tile, group,
                 elems<float>(out->data));
      out->view.data = out->data.data();
      break;
    case WType::kBf16:
      out->data = alloc_elems<uint16_t>(count);
      pack_rec_t(static_cast<const uint16_t*>(w.data), h, k, gates, tile, group,
                 elems<uint16_t>(out->data));
      out->view.bf16 = elems<uint16_t>(out->data);
      break;
    case WType::kI8: {
      out->data = alloc_elems<int8_t>(count);
      pack_rec_t(static_cast<const int8_t*>(w.data), h, k, gates, tile, group,
                 elems<int8_t>(out->data));
      out->view.i8 = elems<int8_t>(out->data);
      // Same order as one k-row of the tile (kernels.h), zero past H.
      pack_tile_values(w.scale, h, gates, tile, &out->scale);
      out->view.scale = out->scale.data();
      if (layout == RecLayout::kQuads) {
        // vpdpbusd reads activations as q + 128: subtract 128 * row sum.
        const int8_t* q = static_cast<const int8_t*>(w.data);
        out->comp = AlignedBuffer(static_cast<std::size_t>(tiles) * g * tile);
        int32_t* c = reinterpret_cast<int32_t*>(out->comp.data());
        for (int t = 0; t < tiles; ++t)
          for (int gi = 0; gi < g; ++gi)
            for (int u = 0; u < tile; ++u) {
              const int unit = t * tile + u;
              int32_t sum = 0;
              if (unit < h) {
                const std::size_t row =
                    static_cast<std::size_t>(gates[static_cast<std::size_t>(gi)]) * h + unit;
                for (int kk = 0; kk < k; ++kk) sum += q[row * k + kk];
              }
              *c++ = kU8Offset * sum;
            }
        out->view.comp = reinterpret_cast<const int32_t*>(out->comp.data());
      }
      break;
    }
  }
  out->view.gates = g;
  out->view.h = h;
  out->view.k = k;
  out->view.tile = tile;
}

void pack_tile_values(const float* values, int h, const std::vector<int>& gates, int tile,
                      AlignedBuffer* out) {
  const int tiles = (h + tile - 1) / tile;
  *out = AlignedBuffer(static_cast<std::size_t>(tiles) * gates.size() * tile);
  float* o = out->data();
  for (int t = 0; t < tiles; ++t)
    for (const int g : gates)
      for (int u = 0; u < tile; ++u) {
        const int unit = t * tile + u;
        *o++ = values != nullptr && unit < h ? values[static_cast<std::size_t>(g) * h + unit] : 0.0f;
      }
}

PackedGemm gemm_columns(const PackedGemm& w, int col0, int ncols) {
  PackedGemm v = w;
  // A panel holds K elements per output, K rounded up to whole k-groups in
  // the paired / quad layouts.
  const int group = w.layout == RecLayout::kPairs ? 2 : (w.layout == RecLayout::kQuads ? 4 : 1);
  const std::size_t k_padded = static_cast<std::size_t>((w.k + group - 1) / group * group);
  const std::size_t skip = static_cast<std::size_t>(col0 / w.nr) * k_padded * w.nr;
  if (v.data != nullptr) v.data += skip;
  if (v.bf16 != nullptr) v.bf16 += skip;
  if (v.i8 != nullptr) v.i8 += skip;
  if (v.bias != nullptr) v.bias += col0;
  if (v.scale != nullptr) v.scale += col0;
  if (v.comp != nullptr) v.comp += col0;
  v.n = ncols;
  return v;
}

}  // namespace rnninfer
