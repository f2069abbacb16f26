#include "engine/packing.h"

#include <cstddef>

namespace rnninfer {

void pack_gemm(const float* w, int n, int k, const float* bias, int nr, GemmWeights* out) {
  const int panels = (n + nr - 1) / nr;
  out->data = AlignedBuffer(static_cast<std::size_t>(panels) * nr * (k > 0 ? k : 1));
  float* dst = out->data.data();
  for (int p = 0; p < panels; ++p)
    for (int kk = 0; kk < k; ++kk)
      for (int j = 0; j < nr; ++j) {
        const int row = p * nr + j;
        *dst++ = row < n ? w[static_cast<std::size_t>(row) * k + kk] : 0.0f;
      }
  if (bias != nullptr) {
    // Padded to whole panels so the kernel's masked bias loads stay in bounds.
    out->bias = AlignedBuffer(static_cast<std::size_t>(panels) * nr);
    for (int j = 0; j < n; ++j) out->bias.data()[j] = bias[j];
  }
  out->view.data = out->data.data();
  out->view.bias = bias != nullptr ? out->bias.data() : nullptr;
  out->view.n = n;
  out->view.k = k;
  out->view.nr = nr;
}

void pack_rec(const float* w, int h, int k, const std::vector<int>& gates, int tile,
              RecWeights* out) {
  const int g = static_cast<int>(gates.size());
  const int tiles = (h + tile - 1) / tile;
  out->data = AlignedBuffer(static_cast<std::size_t>(tiles) * k * g * tile);
  float* dst = out->data.data();
  for (int t = 0; t < tiles; ++t)
    for (int kk = 0; kk < k; ++kk)
      for (int gi = 0; gi < g; ++gi)
        for (int u = 0; u < tile; ++u) {
          const int unit = t * tile + u;
          const std::size_t row = static_cast<std::size_t>(gates[static_cast<std::size_t>(gi)]) * h + unit;
          *dst++ = unit < h ? w[row * k + kk] : 0.0f;
        }
  out->view.data = out->data.data();
  out->view.gates = g;
  out->view.h = h;
  out->view.k = k;
  out->view.tile = tile;
}

}  // namespace rnninfer
