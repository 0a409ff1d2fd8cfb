// GGUF metadata values and lookups: type names and sizes, array elements, and the typed getters
// of GgufFile (the parser that fills them is gguf.cc).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "chorus/core/str_cat.h"
#include "chorus/gguf/gguf.h"

namespace chorus {
namespace {

absl::Status WrongType(std::string_view key, const GgufValue& v, std::string_view want) {
  return absl::FailedPreconditionError(StrCat("gguf: metadata key '", key, "' has type ",
                                              GgufTypeName(v.type), ", expected ", want));
}

}  // namespace

std::string_view GgufTypeName(GgufType type) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                "i32", "f32", "bool", "string", "array",
                                                "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kNames) ? kNames[i] : std::string_view("unknown");
}

int64_t GgufScalarSize(GgufType type) {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    default:
      return 0;
  }
}

int64_t GgufValue::ArrayInt(uint64_t i) const {
  const uint8_t* p = array_data + i * GgufScalarSize(elem_type);
  switch (elem_type) {
    case GgufType::kU8:
    case GgufType::kBool:
      return p[0];
    case GgufType::kI8:
      return static_cast<int8_t>(p[0]);
    case GgufType::kU16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      return x;
    }
    case GgufType::kI16: {
      int16_t x;
      std::memcpy(&x, p, 2);
      return x;
    }
    case GgufType::kU32: {
      uint32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case GgufType::kI32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case GgufType::kU64:
    case GgufType::kI64: {
      int64_t x;
      std::memcpy(&x, p, 8);
      return x;
    }
    default:
      return static_cast<int64_t>(ArrayFloat(i));
  }
}

double GgufValue::ArrayFloat(uint64_t i) const {
  const uint8_t* p = array_data + i * GgufScalarSize(elem_type);
  if (elem_type == GgufType::kF32) {
    float x;
    std::memcpy(&x, p, 4);
    return x;
  }
  if (elem_type == GgufType::kF64) {
    double x;
    std::memcpy(&x, p, 8);
    return x;
  }
  return static_cast<double>(ArrayInt(i));
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  for (const auto& kv : kvs_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<uint64_t> GgufFile::GetUint(std::string_view key, uint64_t max_value) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(StrCat("gguf: missing key '", key, "'"));
  const bool is_int = GgufScalarSize(v->type) > 0 && v->type != GgufType::kF32 &&
                      v->type != GgufType::kF64 && v->type != GgufType::kBool;
  if (!is_int) return WrongType(key, *v, "an unsigned integer");
  if (v->is_negative || v->u64 > max_value) {
    const std::string shown = v->is_negative ? std::to_string(v->i64) : std::to_string(v->u64);
    return absl::FailedPreconditionError(StrCat("gguf: metadata key '", key, "' = ", shown,
                                                " is out of range [0, ", max_value, "]"));
  }
  return v->u64;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(StrCat("gguf: missing key '", key, "'"));
  if (v->type != GgufType::kF32 && v->type != GgufType::kF64) return WrongType(key, *v, "f32");
  return v->f64;
}

absl::StatusOr<std::string_view> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(StrCat("gguf: missing key '", key, "'"));
  if (v->type != GgufType::kString) return WrongType(key, *v, "string");
  return v->str;
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(StrCat("gguf: missing key '", key, "'"));
  if (v->type != GgufType::kBool) return WrongType(key, *v, "bool");
  return v->u64 != 0;
}

absl::StatusOr<const GgufValue*> GgufFile::GetArray(std::string_view key, GgufType want) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(StrCat("gguf: missing key '", key, "'"));
  if (v->type != GgufType::kArray) return WrongType(key, *v, "array");
  const bool any_int = want == GgufType::kI32 && v->elem_type != GgufType::kString &&
                       v->elem_type != GgufType::kF32 && v->elem_type != GgufType::kF64 &&
                       v->elem_type != GgufType::kBool;
  if (v->elem_type != want && !any_int) {
    return absl::FailedPreconditionError(StrCat("gguf: metadata key '", key, "' is an array of ",
                                                GgufTypeName(v->elem_type),
                                                ", expected an array of ", GgufTypeName(want)));
  }
  return v;
}

}  // namespace chorus
