// Argument checks for the C++ side of the API. User input is validated in
// Python first; these checks guard the engine's own contract so that a
// caller bypassing the Python layer still gets an exception, never UB.
// std::invalid_argument becomes ValueError in Python, std::out_of_range
// IndexError, std::runtime_error RuntimeError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace rnninfer {

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <typename... Parts>
inline void check_arg(bool ok, const Parts&... parts) {
  if (!ok) throw std::invalid_argument(concat(parts...));
}

}  // namespace rnninfer
