// Plain structs mirroring the manifest's model section (docs/format.md).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace rnninfer {

enum class Cell { kLstm, kGru, kRnn };
enum class Direction { kForward, kBackward, kBidirectional };
enum class Merge { kConcat, kSum, kMul, kAve };
enum class Readout { kLast, kSequence, kMean, kMax };

// The manifest's name of each enum value, indexed by the value. The same
// lists, in the same order, are python/rnninfer/format/kinds.py (the one
// table of names); tests/format/test_kinds.py compares them through
// _core._testing.desc_names().
constexpr std::array<const char*, 3> kCellNames = {"lstm", "gru", "rnn"};
constexpr std::array<const char*, 3> kDirectionNames = {"forward", "backward", "bidirectional"};
constexpr std::array<const char*, 4> kMergeNames = {"concat", "sum", "mul", "ave"};
constexpr std::array<const char*, 4> kReadoutNames = {"last", "sequence", "mean", "max"};
constexpr std::array<const char*, 19> kActNames = {
    "linear", "relu",  "tanh",  "sigmoid", "hard_sigmoid", "hard_sigmoid_keras2", "elu",
    "selu",   "softplus", "softsign", "swish", "gelu", "exponential", "relu6", "leaky_relu",
    "mish",   "hard_swish", "softmax", "log_softmax"};
static_assert(kActNames.size() == static_cast<size_t>(Act::kLogSoftmax) + 1,
              "kActNames must name every Act value");
static_assert(kReadoutNames.size() == static_cast<size_t>(Readout::kMax) + 1, "kReadoutNames");
static_assert(kMergeNames.size() == static_cast<size_t>(Merge::kAve) + 1, "kMergeNames");
static_assert(kCellNames.size() == static_cast<size_t>(Cell::kRnn) + 1, "kCellNames");
static_assert(kDirectionNames.size() == static_cast<size_t>(Direction::kBidirectional) + 1,
              "kDirectionNames");

constexpr int kNoResidual = -2;  // residual_from value meaning "none"

struct LayerDesc {
  Cell cell = Cell::kLstm;
  int units = 0;
  Direction direction = Direction::kForward;
  Merge merge = Merge::kConcat;
  Act act = Act::kTanh;
  Act ract = Act::kSigmoid;
  bool reset_after = true;
  int proj_size = 0;
  bool bias = true;
  int residual_from = kNoResidual;  // -1 = model input, i = output of layer i

  int dirs() const { return direction == Direction::kBidirectional ? 2 : 1; }
  int gates() const { return cell == Cell::kLstm ? 4 : (cell == Cell::kGru ? 3 : 1); }
  int dir_width() const { return proj_size > 0 ? proj_size : units; }
  int out_width() const {
    return (dirs() == 2 && merge == Merge::kConcat) ? 2 * dir_width() : dir_width();
  }
};

struct DenseDesc {
  int units = 0;
  Act act = Act::kLinear;
  bool bias = true;
};

struct ModelDesc {
  bool tokens = true;
  int vocab_size = 0;
  int input_width = 0;  // embedding dim or feature count
  bool mask_zero = false;
  bool has_mask_value = false;
  float mask_value = 0.0f;
  std::vector<LayerDesc> layers;
  Readout readout = Readout::kLast;
  std::vector<DenseDesc> head;

  int stream_width(int index) const {
    return index < 0 ? input_width : layers[static_cast<size_t>(index)].out_width();
  }
  int top_width() const { return stream_width(static_cast<int>(layers.size()) - 1); }
  int output_width() const { return head.empty() ? top_width() : head.back().units; }
};

// Parsers for the manifest's strings; throw std::invalid_argument naming the value.
Cell parse_cell(const std::string& s);
Direction parse_direction(const std::string& s);
Merge parse_merge(const std::string& s);
Readout parse_readout(const std::string& s);
Act parse_act(const std::string& s);

// The invariants the engine's memory safety rests on (sizes, residual
// widths, row activations only in heads); throws std::invalid_argument. The
// user-facing rules, with their messages, are Python's
// (rnninfer/format/checked.py), applied once before a model reaches here;
// these are cheap (per layer, never per weight) and guard direct callers.
void validate_desc(const ModelDesc& d);

}  // namespace rnninfer
