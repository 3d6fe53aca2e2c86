// Internal: the runtime's argument errors. Every message starts with the function's name and
// names the offending argument and its value.
#pragma once

#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace edgeqat::runtime::detail {

template <class... Parts>
[[noreturn]] void fail(const char* function, const Parts&... parts) {
  std::ostringstream os;
  os.precision(std::numeric_limits<double>::max_digits10);
  os << "edgeqat::runtime::" << function << ": ";
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

}  // namespace edgeqat::runtime::detail
