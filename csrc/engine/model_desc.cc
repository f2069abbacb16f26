#include "engine/model_desc.h"

#include "engine/errors.h"

namespace rnninfer {

Cell parse_cell(const std::string& s) {
  if (s == "lstm") return Cell::kLstm;
  if (s == "gru") return Cell::kGru;
  if (s == "rnn") return Cell::kRnn;
  throw std::invalid_argument("unknown layer kind (cell) '" + s + "'");
}

Direction parse_direction(const std::string& s) {
  if (s == "forward") return Direction::kForward;
  if (s == "backward") return Direction::kBackward;
  if (s == "bidirectional") return Direction::kBidirectional;
  throw std::invalid_argument("unknown direction '" + s + "'");
}

Merge parse_merge(const std::string& s) {
  if (s == "concat") return Merge::kConcat;
  if (s == "sum") return Merge::kSum;
  if (s == "mul") return Merge::kMul;
  if (s == "ave") return Merge::kAve;
  throw std::invalid_argument("unknown merge mode '" + s + "'");
}

Readout parse_readout(const std::string& s) {
  if (s == "last") return Readout::kLast;
  if (s == "sequence") return Readout::kSequence;
  if (s == "mean") return Readout::kMean;
  if (s == "max") return Readout::kMax;
  throw std::invalid_argument("unknown readout '" + s + "'");
}

Act parse_act(const std::string& s) {
  static const struct {
    const char* name;
    Act act;
  } kActs[] = {
      {"linear", Act::kLinear},
      {"relu", Act::kRelu},
      {"tanh", Act::kTanh},
      {"sigmoid", Act::kSigmoid},
      {"hard_sigmoid", Act::kHardSigmoid},
      {"hard_sigmoid_keras2", Act::kHardSigmoidKeras2},
      {"elu", Act::kElu},
      {"selu", Act::kSelu},
      {"softplus", Act::kSoftplus},
      {"softsign", Act::kSoftsign},
      {"swish", Act::kSwish},
      {"gelu", Act::kGelu},
      {"exponential", Act::kExponential},
      {"relu6", Act::kRelu6},
      {"leaky_relu", Act::kLeakyRelu},
      {"mish", Act::kMish},
      {"hard_swish", Act::kHardSwish},
      {"softmax", Act::kSoftmax},
      {"log_softmax", Act::kLogSoftmax},
  };
  for (const auto& a : kActs)
    if (s == a.name) return a.act;
  throw std::invalid_argument("unknown activation '" + s + "'");
}

void validate_desc(const ModelDesc& d) {
  check_arg(d.input_width > 0, "input width must be positive, got ", d.input_width);
  check_arg(!d.tokens || d.vocab_size > 0, "vocab_size must be positive, got ", d.vocab_size);
  check_arg(!d.layers.empty(), "a model needs at least one recurrent layer");
  for (size_t i = 0; i < d.layers.size(); ++i) {
    const LayerDesc& l = d.layers[i];
    check_arg(l.units > 0, "layer ", i, ": units must be positive, got ", l.units);
    check_arg(l.proj_size >= 0 && l.proj_size < l.units, "layer ", i, ": proj_size ", l.proj_size,
              " must be in [0, units)");
    check_arg(l.proj_size == 0 || l.cell == Cell::kLstm, "layer ", i,
              ": proj_size is only valid for LSTM");
    check_arg(l.act != Act::kSoftmax && l.act != Act::kLogSoftmax && l.ract != Act::kSoftmax &&
                  l.ract != Act::kLogSoftmax,
              "layer ", i, ": softmax is not an element-wise activation");
    const int r = l.residual_from;
    if (r != kNoResidual) {
      check_arg(r >= -1 && r < static_cast<int>(i), "layer ", i, ": residual_from ", r,
                " must be -1 or an earlier layer");
      check_arg(d.stream_width(r) == l.out_width(), "layer ", i, ": residual width ",
                d.stream_width(r), " differs from the layer's output width ", l.out_width());
    }
  }
  check_arg(!(d.readout == Readout::kLast && d.layers.back().residual_from != kNoResidual),
            "readout 'last' cannot follow a residual top layer");
  for (size_t j = 0; j < d.head.size(); ++j)
    check_arg(d.head[j].units > 0, "head ", j, ": units must be positive");
}

}  // namespace rnninfer
