// GGUF reader: memory-maps a file and validates all of it before anything uses it.
//
// File layout (little-endian; v2 and v3):
//   u32 magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value_type | value }      string = u64 length + bytes
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment (default 32) | tensor data (offsets relative to this point)
//
// Every count, length and offset read from the file is bounds-checked with overflow-safe
// arithmetic against the bytes that remain; a malformed file yields a Status naming the problem
// and its byte offset (or key / tensor name), never a crash. Thread-compatible; immutable after
// Open, so concurrent const use is safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/gguf/ggml_types.h"

namespace chorus {

enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view GgufTypeName(GgufType type);
// Bytes of one scalar value; 0 for string and array.
int64_t GgufScalarSize(GgufType type);

// One metadata value. Strings and array payloads point into the file mapping.
struct GgufValue {
  GgufType type = GgufType::kU8;
  // Scalars: integers in i64/u64 (both set when representable), floats in f64, bool in u64.
  uint64_t u64 = 0;
  int64_t i64 = 0;
  double f64 = 0;
  bool is_negative = false;
  std::string_view str;  // kString
  // kArray: element type, count and raw little-endian elements (scalars) or strings.
  GgufType elem_type = GgufType::kU8;
  uint64_t count = 0;
  const uint8_t* array_data = nullptr;
  std::vector<std::string_view> strings;

  // Element i of a scalar array as int64/double (caller checks i < count, elem type numeric).
  int64_t ArrayInt(uint64_t i) const;
  double ArrayFloat(uint64_t i) const;
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
  uint64_t offset = 0;  // byte offset of the key in the file
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the fastest-moving (input-feature) dimension
  uint64_t offset = 0;           // relative to the data section
  int64_t num_elements = 0;
  int64_t num_bytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping
};

class GgufFile {
 public:
  // Maps and validates a file.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Validates an in-memory image (copied; for tests and fuzzing).
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(std::string_view bytes);
  // A file assembled in memory (src/gguf/gguf_parts.cc): `metadata` is a GGUF image without
  // tensors, validated like any file; `tensors` point at data held elsewhere (name, type,
  // n_dims, ne and data are read; element and byte counts are recomputed with the same checks
  // as a file's). `keep_alive` owns that data for the file's lifetime. The Hugging Face
  // directory loader uses it to serve safetensors mappings without copying them.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromParts(
      std::string_view metadata, std::vector<GgufTensorInfo> tensors,
      std::shared_ptr<const void> keep_alive);
  ~GgufFile();

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::vector<GgufKeyValue>& metadata() const { return kvs_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* Find(std::string_view key) const;
  const GgufTensorInfo* FindTensor(std::string_view name) const;

  // Typed getters: NOT_FOUND when absent; FAILED_PRECONDITION naming the key when the stored
  // type does not fit (any integer type is accepted for integers if the value is in range).
  absl::StatusOr<uint64_t> GetUint(std::string_view key, uint64_t max_value) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  // An array whose elements have the given type (or, for want == kI32, any integer type).
  absl::StatusOr<const GgufValue*> GetArray(std::string_view key, GgufType want) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;                 // mmap'd region, or null
  std::string owned_;                       // FromBytes copy
  std::shared_ptr<const void> keep_alive_;  // FromParts: owner of the tensor data
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> kvs_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace chorus
