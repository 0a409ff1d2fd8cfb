// GgufFile::FromParts: metadata from a GGUF image, tensors whose data lives elsewhere (the
// Hugging Face loader's safetensors mappings). Tensor infos get the same checks a file's do.
#include <unordered_set>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/gguf/gguf.h"

namespace chorus {
namespace {

absl::Status CheckTensor(GgufTensorInfo& t) {
  if (t.name.empty() || t.name.size() > 256) {
    return absl::InvalidArgumentError(
        StrCat("gguf: tensor name '", t.name, "' is empty or too long"));
  }
  if (t.n_dims < 1 || t.n_dims > 4) {
    return absl::InvalidArgumentError(
        StrCat("gguf: tensor '", t.name, "' has ", t.n_dims, " dims (1..4 allowed)"));
  }
  auto traits = GetTypeTraits(static_cast<uint32_t>(t.type));
  if (!traits) {
    return absl::InvalidArgumentError(StrCat("gguf: tensor '", t.name, "' has an unknown type"));
  }
  uint64_t elems = 1;
  for (int d = 0; d < 4; ++d) {
    if (d >= t.n_dims) {
      t.ne[d] = 1;
      continue;
    }
    if (t.ne[d] <= 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(t.ne[d]), &elems) ||
        elems > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(
          StrCat("gguf: tensor '", t.name, "' dimension ", d, " is ", t.ne[d], " or overflows"));
    }
  }
  if (t.ne[0] % traits->block_size != 0) {
    return absl::InvalidArgumentError(StrCat("gguf: tensor '", t.name, "' row of ", t.ne[0],
                                             " is not a multiple of the block size"));
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(elems / traits->block_size, traits->type_size, &bytes) ||
      bytes > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(StrCat("gguf: tensor '", t.name, "' byte size overflows"));
  }
  if (t.data == nullptr) {
    return absl::InvalidArgumentError(StrCat("gguf: tensor '", t.name, "' has no data"));
  }
  t.num_elements = static_cast<int64_t>(elems);
  t.num_bytes = static_cast<int64_t>(bytes);
  t.offset = 0;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromParts(
    std::string_view metadata, std::vector<GgufTensorInfo> tensors,
    std::shared_ptr<const void> keep_alive) {
  CHORUS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> f, FromBytes(metadata));
  if (!f->tensors_.empty()) {
    return absl::InvalidArgumentError("gguf: FromParts metadata image must hold no tensors");
  }
  std::unordered_set<std::string> names;
  for (GgufTensorInfo& t : tensors) {
    CHORUS_RETURN_IF_ERROR(CheckTensor(t));
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(StrCat("gguf: duplicate tensor name '", t.name, "'"));
    }
  }
  f->tensors_ = std::move(tensors);
  f->keep_alive_ = std::move(keep_alive);
  return f;
}

}  // namespace chorus
