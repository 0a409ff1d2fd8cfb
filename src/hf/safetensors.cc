#include "chorus/hf/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "json_util.h"

namespace chorus {
namespace {

using hf::Json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit
constexpr size_t kMaxDims = 8;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  int size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kBool, "BOOL", 1},      {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},          {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1}, {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},        {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},      {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},        {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kI64, "I64", 8},        {SafetensorsDtype::kU64, "U64", 8},
    {SafetensorsDtype::kF64, "F64", 8},
};

absl::Status Corrupt(const std::string& path, std::string_view what) {
  return absl::DataLossError(StrCat("safetensors: ", path, ": ", what));
}

// A non-negative integer that fits in int64 (shape entries and offsets).
bool ToCount(const Json& v, uint64_t* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
  } else {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
  }
  return *out <= static_cast<uint64_t>(INT64_MAX);
}

// One header entry: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, nothing else.
absl::Status ParseEntry(const std::string& path, const std::string& name, const Json& v,
                        SafetensorsTensor* t) {
  auto bad = [&](std::string_view what) {
    return Corrupt(path, StrCat("tensor '", name, "': ", what));
  };
  if (!v.is_object()) return bad("entry is not an object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets") {
      return bad(StrCat("unknown field '", it.key(), "'"));
    }
  }
  if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("dtype missing or not a string");
  const std::string dtype = v["dtype"].get<std::string>();
  const DtypeInfo* info = nullptr;
  for (const DtypeInfo& d : kDtypes) {
    if (dtype == d.name) info = &d;
  }
  if (info == nullptr) return bad(StrCat("unknown dtype '", hf::ShortJson(v["dtype"]), "'"));
  t->name = name;
  t->dtype = info->dtype;
  if (!v.contains("shape") || !v["shape"].is_array()) return bad("shape missing or not an array");
  if (v["shape"].size() > kMaxDims) return bad(StrCat("more than ", kMaxDims, " dimensions"));
  uint64_t elems = 1;
  for (const Json& d : v["shape"]) {
    uint64_t n;
    if (!ToCount(d, &n)) return bad(StrCat("shape entry ", hf::ShortJson(d), " is not a count"));
    if (__builtin_mul_overflow(elems, n, &elems) || elems > static_cast<uint64_t>(INT64_MAX)) {
      return bad("element count overflows");
    }
    t->shape.push_back(static_cast<int64_t>(n));
  }
  t->num_elements = static_cast<int64_t>(elems);
  const Json* offs = v.contains("data_offsets") ? &v["data_offsets"] : nullptr;
  if (offs == nullptr || !offs->is_array() || offs->size() != 2 ||
      !ToCount((*offs)[0], &t->begin) || !ToCount((*offs)[1], &t->end) || t->end < t->begin) {
    return bad("data_offsets must be [begin, end] with 0 <= begin <= end");
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(elems, static_cast<uint64_t>(info->size), &bytes) ||
      bytes != t->end - t->begin) {
    return bad(StrCat("holds ", t->end - t->begin, " bytes but ", info->name, " shape ",
                      hf::ShortJson(v["shape"]), " needs ", elems, " x ", info->size));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view SafetensorsDtypeName(SafetensorsDtype d) {
  for (const DtypeInfo& i : kDtypes) {
    if (i.dtype == d) return i.name;
  }
  return "?";
}

int SafetensorsDtypeSize(SafetensorsDtype d) {
  for (const DtypeInfo& i : kDtypes) {
    if (i.dtype == d) return i.size;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        StrCat("safetensors: cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat("safetensors: ", path, " is not a regular file"));
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return absl::ResourceExhaustedError(
          StrCat("safetensors: cannot map ", path, ": ", std::strerror(errno)));
    }
    f->mapping_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  CHORUS_RETURN_IF_ERROR(f->Parse());
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string_view bytes, const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->owned_.assign(bytes.data(), bytes.size());
  f->base_ = reinterpret_cast<const uint8_t*>(f->owned_.data());
  f->size_ = f->owned_.size();
  CHORUS_RETURN_IF_ERROR(f->Parse());
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::Status SafetensorsFile::Parse() {
  if (size_ < 8) return Corrupt(path_, StrCat("file of ", size_, " bytes has no header length"));
  uint64_t n;
  std::memcpy(&n, base_, 8);
  if (n > kMaxHeaderBytes) {
    return Corrupt(path_, StrCat("header length ", n, " exceeds the limit ", kMaxHeaderBytes));
  }
  if (n > size_ - 8) {
    return Corrupt(path_, StrCat("header length ", n, " runs past the end of the file (", size_,
                                 " bytes): truncated?"));
  }
  const std::string_view text(reinterpret_cast<const char*>(base_) + 8, n);
  if (text.empty() || text[0] != '{') return Corrupt(path_, "header does not start with '{'");
  auto parsed = hf::ParseJson(text, "header");
  if (!parsed.ok()) return Corrupt(path_, std::string(parsed.status().message()));
  const Json& header = *parsed;
  if (!header.is_object()) return Corrupt(path_, "header is not a JSON object");
  const uint64_t data_size = size_ - 8 - n;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Corrupt(path_, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return Corrupt(path_, StrCat("__metadata__ value of '", m.key(), "' is not a string"));
        }
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (it.key().empty()) return Corrupt(path_, "empty tensor name");
    SafetensorsTensor t;
    CHORUS_RETURN_IF_ERROR(ParseEntry(path_, it.key(), *it, &t));
    tensors_.push_back(std::move(t));
  }
  // The tensors must tile the data buffer: sorted by offset, each starts where the last ended.
  std::vector<SafetensorsTensor*> order;
  for (SafetensorsTensor& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expect = 0;
  for (const SafetensorsTensor* t : order) {
    if (t->begin != expect) {
      const char* how = t->begin < expect ? "overlap" : "leave a gap after";
      return Corrupt(path_, StrCat("tensor '", t->name, "' data_offsets [", t->begin, ", ", t->end,
                                   "] ", how, " the previous tensor (which ends at ", expect, ")"));
    }
    expect = t->end;
  }
  if (expect != data_size) {
    return Corrupt(path_, StrCat("the tensors cover ", expect, " bytes but the data buffer has ",
                                 data_size, expect > data_size ? " (truncated file)" : ""));
  }
  for (SafetensorsTensor& t : tensors_) t.data = base_ + 8 + n + t.begin;
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const SafetensorsTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

void SafetensorsWriter::Add(std::string_view name, SafetensorsDtype dtype,
                            std::vector<int64_t> shape, std::string bytes) {
  entries_.push_back({std::string(name), dtype, std::move(shape), std::move(bytes)});
}

void SafetensorsWriter::SetMetadata(std::string_view key, std::string_view value) {
  metadata_[std::string(key)] = std::string(value);
}

std::string SafetensorsWriter::Serialize() const {
  Json header = Json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    header[e.name] = {{"dtype", std::string(SafetensorsDtypeName(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  out += text;
  for (const Entry& e : entries_) out += e.bytes;
  return out;
}

absl::Status SafetensorsWriter::WriteFile(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::string bytes = Serialize();
  if (!out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    return absl::InternalError(StrCat("safetensors: cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace chorus
