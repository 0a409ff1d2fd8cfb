#include "chorus/core/secret_file.h"

#include <fstream>
#include <iterator>

#include "chorus/core/str_cat.h"

namespace chorus {

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, int64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("cannot read ", path));
  std::string out;
  char buf[4096];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    out.append(buf, static_cast<size_t>(in.gcount()));
    if (static_cast<int64_t>(out.size()) > max_bytes) {
      return absl::InvalidArgumentError(
          StrCat(path, " is larger than ", max_bytes, " bytes: not a secret or certificate file"));
    }
  }
  return out;
}

}  // namespace chorus
