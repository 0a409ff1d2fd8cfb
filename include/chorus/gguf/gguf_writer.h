// GGUF v3 writer: metadata of every value type and aligned tensor data. Used by
// chorus-mkmodel, tests (valid files to corrupt) and benchmarks. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "chorus/gguf/gguf.h"

namespace chorus {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32);

  void SetU8(std::string_view key, uint8_t v);
  void SetI8(std::string_view key, int8_t v);
  void SetU16(std::string_view key, uint16_t v);
  void SetI16(std::string_view key, int16_t v);
  void SetU32(std::string_view key, uint32_t v);
  void SetI32(std::string_view key, int32_t v);
  void SetU64(std::string_view key, uint64_t v);
  void SetI64(std::string_view key, int64_t v);
  void SetF32(std::string_view key, float v);
  void SetF64(std::string_view key, double v);
  void SetBool(std::string_view key, bool v);
  void SetString(std::string_view key, std::string_view v);
  void SetStringArray(std::string_view key, const std::vector<std::string>& v);
  void SetF32Array(std::string_view key, const std::vector<float>& v);
  void SetI32Array(std::string_view key, const std::vector<int32_t>& v);
  // Copies a value read by GgufFile (any type, arrays included).
  void CopyValue(std::string_view key, const GgufValue& v);

  // ne[0] is the fastest-moving dimension; `data` holds the encoded bytes of `type`.
  void AddTensor(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                 std::string data);

  std::string Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    std::string data;
  };
  void Key(std::string_view key, GgufType type);
  template <typename T>
  void Raw(const T& v) {
    kv_bytes_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void Str(std::string_view s);

  uint32_t alignment_;
  uint64_t num_kv_ = 0;
  std::string kv_bytes_;
  std::vector<Tensor> tensors_;
};

}  // namespace chorus
