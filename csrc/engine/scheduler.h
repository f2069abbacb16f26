// The scheduler: turns a call into WorkUnits and runs them.
//
// Units of one (layer, direction) must run in reading order because each
// block continues the state of the previous one. A layer's block k needs
// block k of the layer below (forward-only stacks) or the whole layer below
// (after a bidirectional layer, whose backward half finishes at step 0).
// This version runs everything on the calling thread, layer by layer; the
// wavefront over (layer, block) and parallel directions and shards plug in
// here without touching the kernels or the engine's per-unit code.
#pragma once

#include <functional>
#include <vector>

#include "engine/model_desc.h"
#include "engine/workspace.h"

namespace rnninfer {

// Steps per block: enough rows for the gemm's register tile to be busy at
// batch 1, few enough that one block's projections stay in L2.
constexpr int kTimeBlock = 16;

// All units of one layer, in an order valid for sequential execution.
std::vector<WorkUnit> plan_layer(const LayerDesc& layer, int layer_index, int steps);

// Runs the plan: for each layer, its units, then `finish(layer)`.
void run_plan(const ModelDesc& desc, int steps, const std::function<void(const WorkUnit&)>& unit,
              const std::function<void(int)>& finish);

}  // namespace rnninfer
