// safetensors reader (Hugging Face's weight format), memory-mapped and validated before use.
//
// Layout: u64 little-endian N | N bytes of JSON header | data buffer. The header is one object:
//   {"__metadata__": {string: string}, "NAME": {"dtype": "BF16", "shape": [rows, cols],
//    "data_offsets": [begin, end]}, ...}    offsets relative to the data buffer, row-major.
// Checked as strictly as the format's reference implementation: N <= 100 MiB and inside the
// file, the header a JSON object (trailing spaces allowed) with unique names, known dtypes,
// non-negative shapes whose byte size (overflow-checked) equals end - begin, and the tensors
// tiling the data buffer exactly (sorted by offset: no gap, no overlap, ending at the file's
// end). Errors are DATA_LOSS naming the file and the tensor, never a crash.
// Immutable after Open: safe for concurrent const use.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace chorus {

enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kI64,
  kU64,
  kF64,
};
std::string_view SafetensorsDtypeName(SafetensorsDtype d);
int SafetensorsDtypeSize(SafetensorsDtype d);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // outermost first (PyTorch order); [] is a scalar
  int64_t num_elements = 0;
  uint64_t begin = 0, end = 0;    // byte range in the data buffer
  const uint8_t* data = nullptr;  // inside the mapping
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Validates an in-memory image (copied; for tests and fuzzing). `name` is used in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::string_view bytes, const std::string& name = "<memory>");
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  // Tensors in header order... as nlohmann orders objects: by name.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* Find(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;
  std::string owned_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors image (tests and tools): tensors in the given order, contiguous, the
// header padded with spaces to a multiple of 8 bytes as the reference writer does.
class SafetensorsWriter {
 public:
  void Add(std::string_view name, SafetensorsDtype dtype, std::vector<int64_t> shape,
           std::string bytes);
  void SetMetadata(std::string_view key, std::string_view value);
  std::string Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    SafetensorsDtype dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace chorus
