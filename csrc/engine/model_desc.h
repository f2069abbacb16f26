// Plain structs mirroring the manifest's model section (docs/format.md).
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace rnninfer {

enum class Cell { kLstm, kGru, kRnn };
enum class Direction { kForward, kBackward, kBidirectional };
enum class Merge { kConcat, kSum, kMul, kAve };
enum class Readout { kLast, kSequence, kMean, kMax };

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

// Checks a description's internal consistency; throws std::invalid_argument.
void validate_desc(const ModelDesc& d);

}  // namespace rnninfer
