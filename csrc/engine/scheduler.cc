#include "engine/scheduler.h"

namespace rnninfer {

std::vector<WorkUnit> plan_layer(const LayerDesc& layer, int layer_index, int steps) {
  std::vector<WorkUnit> units;
  for (int d = 0; d < layer.dirs(); ++d) {
    const bool reverse = (d == 1) || layer.direction == Direction::kBackward;
    if (!reverse) {
      for (int t = 0; t < steps; t += kTimeBlock)
        units.push_back({layer_index, d, false, t, t + kTimeBlock < steps ? t + kTimeBlock : steps});
    } else {
      for (int t = steps; t > 0; t -= kTimeBlock)
        units.push_back({layer_index, d, true, t - kTimeBlock > 0 ? t - kTimeBlock : 0, t});
    }
  }
  return units;
}

void run_plan(const ModelDesc& desc, int steps, const std::function<void(const WorkUnit&)>& unit,
              const std::function<void(int)>& finish) {
  for (int l = 0; l < static_cast<int>(desc.layers.size()); ++l) {
    for (const WorkUnit& u : plan_layer(desc.layers[static_cast<size_t>(l)], l, steps)) unit(u);
    finish(l);
  }
}

}  // namespace rnninfer
