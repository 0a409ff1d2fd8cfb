#include "chorus/core/host_port.h"

#include <charconv>

#include "chorus/core/str_cat.h"

namespace chorus {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                          std::string_view what) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon != std::string::npos) {
    const char* begin = address.data() + colon + 1;
    const char* end = address.data() + address.size();
    auto r = std::from_chars(begin, end, port);
    if (r.ec != std::errc() || r.ptr != end || begin == end) port = -1;
  }
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(StrCat(what, ": '", address, "' is not HOST:PORT"));
  }
  return std::make_pair(address.substr(0, colon), port);
}

}  // namespace chorus
