#include "engine/model_desc.h"

#include "engine/errors.h"

namespace rnninfer {

namespace {

template <typename E, size_t N>
E parse_name(const std::string& s, const std::array<const char*, N>& names, const char* what) {
  for (size_t i = 0; i < N; ++i)
    if (s == names[i]) return static_cast<E>(i);
  throw std::invalid_argument(std::string("unknown ") + what + " '" + s + "'");
}

}  // namespace

Cell parse_cell(const std::string& s) { return parse_name<Cell>(s, kCellNames, "layer kind (cell)"); }
Direction parse_direction(const std::string& s) {
  return parse_name<Direction>(s, kDirectionNames, "direction");
}
Merge parse_merge(const std::string& s) { return parse_name<Merge>(s, kMergeNames, "merge mode"); }
Readout parse_readout(const std::string& s) { return parse_name<Readout>(s, kReadoutNames, "readout"); }
Act parse_act(const std::string& s) { return parse_name<Act>(s, kActNames, "activation"); }

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
