// The compiled module rnninfer._core: only registers the pieces.
#include <pybind11/pybind11.h>

namespace rnninfer {
void register_engine(pybind11::module_& m);
void register_stream(pybind11::module_& m);
void register_testing(pybind11::module_& m);
}  // namespace rnninfer

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnninfer's C++ engine (internal; use the rnninfer package)";
  rnninfer::register_engine(m);
  rnninfer::register_stream(m);
  rnninfer::register_testing(m);
}
