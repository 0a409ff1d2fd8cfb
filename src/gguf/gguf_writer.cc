#include "chorus/gguf/gguf_writer.h"

#include <cstdio>

#include "chorus/core/str_cat.h"

namespace chorus {

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment != 32) SetU32("general.alignment", alignment);
}

void GgufWriter::Str(std::string_view s) {
  Raw(static_cast<uint64_t>(s.size()));
  kv_bytes_.append(s);
}

void GgufWriter::Key(std::string_view key, GgufType type) {
  ++num_kv_;
  Str(key);
  Raw(static_cast<uint32_t>(type));
}

void GgufWriter::SetU8(std::string_view k, uint8_t v) {
  Key(k, GgufType::kU8);
  Raw(v);
}
void GgufWriter::SetI8(std::string_view k, int8_t v) {
  Key(k, GgufType::kI8);
  Raw(v);
}
void GgufWriter::SetU16(std::string_view k, uint16_t v) {
  Key(k, GgufType::kU16);
  Raw(v);
}
void GgufWriter::SetI16(std::string_view k, int16_t v) {
  Key(k, GgufType::kI16);
  Raw(v);
}
void GgufWriter::SetU32(std::string_view k, uint32_t v) {
  Key(k, GgufType::kU32);
  Raw(v);
}
void GgufWriter::SetI32(std::string_view k, int32_t v) {
  Key(k, GgufType::kI32);
  Raw(v);
}
void GgufWriter::SetU64(std::string_view k, uint64_t v) {
  Key(k, GgufType::kU64);
  Raw(v);
}
void GgufWriter::SetI64(std::string_view k, int64_t v) {
  Key(k, GgufType::kI64);
  Raw(v);
}
void GgufWriter::SetF32(std::string_view k, float v) {
  Key(k, GgufType::kF32);
  Raw(v);
}
void GgufWriter::SetF64(std::string_view k, double v) {
  Key(k, GgufType::kF64);
  Raw(v);
}
void GgufWriter::SetBool(std::string_view k, bool v) {
  Key(k, GgufType::kBool);
  Raw(static_cast<uint8_t>(v ? 1 : 0));
}
void GgufWriter::SetString(std::string_view k, std::string_view v) {
  Key(k, GgufType::kString);
  Str(v);
}

void GgufWriter::SetStringArray(std::string_view k, const std::vector<std::string>& v) {
  Key(k, GgufType::kArray);
  Raw(static_cast<uint32_t>(GgufType::kString));
  Raw(static_cast<uint64_t>(v.size()));
  for (const auto& s : v) Str(s);
}

void GgufWriter::SetF32Array(std::string_view k, const std::vector<float>& v) {
  Key(k, GgufType::kArray);
  Raw(static_cast<uint32_t>(GgufType::kF32));
  Raw(static_cast<uint64_t>(v.size()));
  kv_bytes_.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

void GgufWriter::SetI32Array(std::string_view k, const std::vector<int32_t>& v) {
  Key(k, GgufType::kArray);
  Raw(static_cast<uint32_t>(GgufType::kI32));
  Raw(static_cast<uint64_t>(v.size()));
  kv_bytes_.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

void GgufWriter::CopyValue(std::string_view k, const GgufValue& v) {
  Key(k, v.type);
  if (v.type == GgufType::kString) {
    Str(v.str);
  } else if (v.type == GgufType::kArray) {
    Raw(static_cast<uint32_t>(v.elem_type));
    Raw(v.count);
    if (v.elem_type == GgufType::kString) {
      for (auto s : v.strings) Str(s);
    } else {
      kv_bytes_.append(reinterpret_cast<const char*>(v.array_data),
                       v.count * GgufScalarSize(v.elem_type));
    }
  } else if (v.type == GgufType::kF32) {
    Raw(static_cast<float>(v.f64));
  } else if (v.type == GgufType::kF64) {
    Raw(v.f64);
  } else {
    kv_bytes_.append(reinterpret_cast<const char*>(&v.u64), GgufScalarSize(v.type));
  }
}

void GgufWriter::AddTensor(std::string_view name, GgmlType type, const std::vector<int64_t>& ne,
                           std::string data) {
  tensors_.push_back({std::string(name), type, ne, std::move(data)});
}

std::string GgufWriter::Serialize() const {
  std::string out;
  auto raw = [&out](const auto& v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  raw(static_cast<uint32_t>(0x46554747));
  raw(static_cast<uint32_t>(3));
  raw(static_cast<uint64_t>(tensors_.size()));
  raw(num_kv_);
  out += kv_bytes_;
  auto pad = [&out, this] { out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_); };
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    raw(static_cast<uint64_t>(t.name.size()));
    out += t.name;
    raw(static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) raw(static_cast<uint64_t>(n));
    raw(static_cast<uint32_t>(t.type));
    raw(offset);
    offset = (offset + t.data.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  pad();
  for (const auto& t : tensors_) {
    out += t.data;
    pad();
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string bytes = Serialize();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(StrCat("cannot write ", path));
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) return absl::DataLossError(StrCat("short write to ", path));
  return absl::OkStatus();
}

}  // namespace chorus
