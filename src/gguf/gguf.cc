// GgufFile: opening (mmap or an in-memory copy) and the parser that validates the header, the
// metadata, the tensor infos and the data section (metadata lookups are in gguf_metadata.cc).
#include "chorus/gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint64_t kMaxKeyBytes = 1 << 16;
constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr uint64_t kMaxTensorNameBytes = 256;
constexpr uint64_t kMaxAlignment = 1 << 24;

absl::Status Corrupt(uint64_t offset, std::string_view what) {
  return absl::DataLossError(StrCat("gguf: ", what, " at byte offset ", offset));
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
bool AddOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_add_overflow(a, b, out);
}

// Bounds-checked little-endian reader over [base, base + size).
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Bytes(uint64_t n, const uint8_t** out, std::string_view what) {
    if (n > remaining()) {
      return Corrupt(pos_,
                     StrCat("truncated ", what, " (needs ", n, " bytes, ", remaining(), " left)"));
    }
    *out = base_ + pos_;
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Read(T* out, std::string_view what) {
    const uint8_t* p = nullptr;
    CHORUS_RETURN_IF_ERROR(Bytes(sizeof(T), &p, what));
    std::memcpy(out, p, sizeof(T));
    return absl::OkStatus();
  }
  absl::Status String(std::string_view* out, uint64_t max_len, std::string_view what) {
    const uint64_t at = pos_;
    uint64_t len;
    CHORUS_RETURN_IF_ERROR(Read(&len, what));
    if (len > max_len) {
      return Corrupt(at, StrCat(what, " length ", len, " exceeds the limit ", max_len));
    }
    const uint8_t* p = nullptr;
    CHORUS_RETURN_IF_ERROR(Bytes(len, &p, what));
    *out = std::string_view(reinterpret_cast<const char*>(p), len);
    return absl::OkStatus();
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

bool IsKnownType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kF64); }

absl::Status ReadScalar(Cursor& c, GgufType type, GgufValue* v) {
  const uint64_t at = c.pos();
  const uint8_t* p = nullptr;
  CHORUS_RETURN_IF_ERROR(c.Bytes(GgufScalarSize(type), &p, "metadata value"));
  auto set_int = [v](int64_t x) {
    v->i64 = x;
    v->u64 = static_cast<uint64_t>(x);
    v->is_negative = x < 0;
    v->f64 = static_cast<double>(x);
  };
  switch (type) {
    case GgufType::kU8:
      set_int(p[0]);
      break;
    case GgufType::kI8:
      set_int(static_cast<int8_t>(p[0]));
      break;
    case GgufType::kU16: {
      uint16_t x;
      std::memcpy(&x, p, 2);
      set_int(x);
      break;
    }
    case GgufType::kI16: {
      int16_t x;
      std::memcpy(&x, p, 2);
      set_int(x);
      break;
    }
    case GgufType::kU32: {
      uint32_t x;
      std::memcpy(&x, p, 4);
      set_int(x);
      break;
    }
    case GgufType::kI32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      set_int(x);
      break;
    }
    case GgufType::kI64: {
      int64_t x;
      std::memcpy(&x, p, 8);
      set_int(x);
      break;
    }
    case GgufType::kU64: {
      uint64_t x;
      std::memcpy(&x, p, 8);
      v->u64 = x;
      v->i64 = static_cast<int64_t>(x);
      v->is_negative = false;
      v->f64 = static_cast<double>(x);
      break;
    }
    case GgufType::kF32: {
      float x;
      std::memcpy(&x, p, 4);
      v->f64 = x;
      break;
    }
    case GgufType::kF64:
      std::memcpy(&v->f64, p, 8);
      break;
    case GgufType::kBool:
      if (p[0] > 1) return Corrupt(at, StrCat("bool value ", int{p[0]}, " is not 0 or 1"));
      v->u64 = p[0];
      break;
    default:
      return Corrupt(at, "internal: not a scalar type");
  }
  return absl::OkStatus();
}

absl::Status ReadValue(Cursor& c, GgufType type, GgufValue* v) {
  v->type = type;
  if (type == GgufType::kString) return c.String(&v->str, kMaxStringBytes, "string value");
  if (type != GgufType::kArray) return ReadScalar(c, type, v);
  const uint64_t at = c.pos();
  uint32_t elem;
  CHORUS_RETURN_IF_ERROR(c.Read(&elem, "array element type"));
  if (!IsKnownType(elem)) return Corrupt(at, StrCat("unknown array element type ", elem));
  v->elem_type = static_cast<GgufType>(elem);
  if (v->elem_type == GgufType::kArray) return Corrupt(at, "nested arrays are not supported");
  CHORUS_RETURN_IF_ERROR(c.Read(&v->count, "array count"));
  if (v->elem_type == GgufType::kString) {
    // Each string takes at least its 8-byte length: bound the count before allocating.
    if (v->count > c.remaining() / 8) {
      return Corrupt(at, StrCat("string array count ", v->count, " exceeds the file"));
    }
    v->strings.resize(v->count);
    for (uint64_t i = 0; i < v->count; ++i) {
      CHORUS_RETURN_IF_ERROR(c.String(&v->strings[i], kMaxStringBytes, "array string"));
    }
    return absl::OkStatus();
  }
  uint64_t bytes;
  if (MulOverflows(v->count, GgufScalarSize(v->elem_type), &bytes) || bytes > c.remaining()) {
    return Corrupt(
        at, StrCat("array of ", v->count, " ", GgufTypeName(v->elem_type), " exceeds the file"));
  }
  return c.Bytes(bytes, &v->array_data, "array data");
}

// n_kv key-value pairs: keys non-empty and unique, values well-formed.
absl::Status ReadMetadata(Cursor& c, uint64_t n_kv, std::vector<GgufKeyValue>* kvs) {
  kvs->resize(n_kv);
  std::unordered_set<std::string_view> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKeyValue& kv = (*kvs)[i];
    kv.offset = c.pos();
    std::string_view key;
    CHORUS_RETURN_IF_ERROR(c.String(&key, kMaxKeyBytes, "metadata key"));
    if (key.empty()) return Corrupt(kv.offset, "empty metadata key");
    if (!keys.insert(key).second) {
      return Corrupt(kv.offset, StrCat("duplicate metadata key '", key, "'"));
    }
    kv.key = std::string(key);
    const uint64_t type_at = c.pos();
    uint32_t type;
    CHORUS_RETURN_IF_ERROR(c.Read(&type, "metadata value type"));
    if (!IsKnownType(type)) {
      return Corrupt(type_at, StrCat("unknown value type ", type, " for key '", key, "'"));
    }
    absl::Status s = ReadValue(c, static_cast<GgufType>(type), &kv.value);
    if (!s.ok()) return absl::Status(s.code(), StrCat(s.message(), " (key '", key, "')"));
  }
  return absl::OkStatus();
}

// general.alignment, when present (`a` not null): a u32 power of two up to kMaxAlignment.
absl::Status ReadAlignment(const GgufValue* a, uint64_t* alignment) {
  if (a == nullptr) return absl::OkStatus();
  if (a->type != GgufType::kU32) {
    return absl::FailedPreconditionError(
        StrCat("gguf: general.alignment has type ", GgufTypeName(a->type), ", expected u32"));
  }
  if (a->u64 == 0 || (a->u64 & (a->u64 - 1)) != 0 || a->u64 > kMaxAlignment) {
    return absl::FailedPreconditionError(StrCat(
        "gguf: general.alignment ", a->u64, " is not a power of two in [1, ", kMaxAlignment, "]"));
  }
  *alignment = a->u64;
  return absl::OkStatus();
}

// n_dims and ne[] of tensor `name` (its record starts at `at`): 1..4 nonzero dimensions whose
// product fits in int64; sets n_dims, ne and num_elements.
absl::Status ReadTensorShape(Cursor& c, uint64_t at, std::string_view name, GgufTensorInfo* t) {
  uint32_t n_dims;
  CHORUS_RETURN_IF_ERROR(c.Read(&n_dims, "tensor n_dims"));
  if (n_dims < 1 || n_dims > 4) {
    return Corrupt(at, StrCat("tensor '", name, "' has ", n_dims, " dims (1..4 allowed)"));
  }
  t->n_dims = static_cast<int>(n_dims);
  uint64_t elems = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t ne;
    CHORUS_RETURN_IF_ERROR(c.Read(&ne, "tensor dimension"));
    if (ne == 0 || ne > static_cast<uint64_t>(INT64_MAX)) {
      return Corrupt(at, StrCat("tensor '", name, "' dimension ", d, " is ", ne));
    }
    if (MulOverflows(elems, ne, &elems) || elems > static_cast<uint64_t>(INT64_MAX)) {
      return Corrupt(at, StrCat("tensor '", name, "' element count overflows"));
    }
    t->ne[d] = static_cast<int64_t>(ne);
  }
  t->num_elements = static_cast<int64_t>(elems);
  return absl::OkStatus();
}

// One tensor info record: a unique name (added to `names`), the shape, a known type whose
// blocks divide the rows, and an offset that is a multiple of `alignment`.
absl::Status ReadTensorInfo(Cursor& c, uint64_t alignment,
                            std::unordered_set<std::string_view>* names, GgufTensorInfo* t) {
  const uint64_t at = c.pos();
  std::string_view name;
  CHORUS_RETURN_IF_ERROR(c.String(&name, kMaxTensorNameBytes, "tensor name"));
  if (name.empty()) return Corrupt(at, "empty tensor name");
  t->name = std::string(name);
  CHORUS_RETURN_IF_ERROR(ReadTensorShape(c, at, name, t));
  const uint64_t elems = static_cast<uint64_t>(t->num_elements);
  uint32_t type;
  CHORUS_RETURN_IF_ERROR(c.Read(&type, "tensor type"));
  auto traits = GetTypeTraits(type);
  if (!traits) {
    return Corrupt(at, StrCat("tensor '", name, "' has unknown type id ", type));
  }
  t->type = static_cast<GgmlType>(type);
  if (t->ne[0] % traits->block_size != 0) {
    return Corrupt(at, StrCat("tensor '", name, "' row of ", t->ne[0], " is not a multiple of the ",
                              traits->name, " block size ", traits->block_size));
  }
  uint64_t bytes;
  if (MulOverflows(elems / traits->block_size, traits->type_size, &bytes) ||
      bytes > static_cast<uint64_t>(INT64_MAX)) {
    return Corrupt(at, StrCat("tensor '", name, "' byte size overflows"));
  }
  t->num_bytes = static_cast<int64_t>(bytes);
  CHORUS_RETURN_IF_ERROR(c.Read(&t->offset, "tensor offset"));
  if (t->offset % alignment != 0) {
    return Corrupt(at, StrCat("tensor '", name, "' offset ", t->offset,
                              " is not a multiple of the alignment ", alignment));
  }
  if (!names->insert(name).second) {
    return Corrupt(at, StrCat("duplicate tensor name '", name, "'"));
  }
  return absl::OkStatus();
}

// Data section: starts at the first multiple of `alignment` at or after `header_end`; every
// tensor inside the file (`size` bytes at `base`; sets each tensor's data), no two overlapping.
absl::Status PlaceTensorData(const uint8_t* base, uint64_t size, uint64_t alignment,
                             uint64_t header_end, uint64_t* data_offset,
                             std::vector<GgufTensorInfo>* tensors) {
  uint64_t data = header_end;
  if (AddOverflows(data, alignment - 1, &data)) return Corrupt(header_end, "data offset overflows");
  *data_offset = data / alignment * alignment;
  std::vector<const GgufTensorInfo*> by_offset;
  for (GgufTensorInfo& t : *tensors) {
    uint64_t begin, end;
    if (AddOverflows(*data_offset, t.offset, &begin) ||
        AddOverflows(begin, static_cast<uint64_t>(t.num_bytes), &end) || end > size) {
      return absl::DataLossError(StrCat("gguf: tensor '", t.name, "' data [offset ", t.offset, ", ",
                                        t.num_bytes, " bytes] lies past the end of the file (",
                                        size, " bytes)"));
    }
    t.data = base + begin;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    if (prev->offset + static_cast<uint64_t>(prev->num_bytes) > by_offset[i]->offset) {
      return absl::DataLossError(StrCat("gguf: tensor '", by_offset[i]->name,
                                        "' data overlaps tensor '", prev->name, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(StrCat("gguf: cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(StrCat("gguf: ", path, " is not a regular file"));
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return absl::ResourceExhaustedError(
          StrCat("gguf: cannot map ", path, ": ", std::strerror(errno)));
    }
    f->mapping_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  absl::Status s = f->Parse();
  if (!s.ok()) return absl::Status(s.code(), StrCat(path, ": ", s.message()));
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(std::string_view bytes) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->owned_.assign(bytes.data(), bytes.size());
  f->base_ = reinterpret_cast<const uint8_t*>(f->owned_.data());
  f->size_ = f->owned_.size();
  CHORUS_RETURN_IF_ERROR(f->Parse());
  return f;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::Status GgufFile::Parse() {
  Cursor c(base_, size_);
  uint32_t magic;
  CHORUS_RETURN_IF_ERROR(c.Read(&magic, "header magic"));
  if (magic != kMagic) return Corrupt(0, "bad magic (not a GGUF file)");
  CHORUS_RETURN_IF_ERROR(c.Read(&version_, "header version"));
  if (version_ != 2 && version_ != 3) {
    return absl::FailedPreconditionError(
        StrCat("gguf: unsupported version ", version_, " at byte offset 4 (need 2 or 3)"));
  }
  uint64_t n_tensors, n_kv;
  CHORUS_RETURN_IF_ERROR(c.Read(&n_tensors, "tensor count"));
  CHORUS_RETURN_IF_ERROR(c.Read(&n_kv, "metadata count"));
  // A key-value takes >= 13 bytes (key length, type, 1-byte value), a tensor info >= 24.
  if (n_kv > c.remaining() / 13) {
    return Corrupt(16, StrCat("metadata count ", n_kv, " exceeds the file"));
  }
  if (n_tensors > c.remaining() / 24) {
    return Corrupt(8, StrCat("tensor count ", n_tensors, " exceeds the file"));
  }
  CHORUS_RETURN_IF_ERROR(ReadMetadata(c, n_kv, &kvs_));
  CHORUS_RETURN_IF_ERROR(ReadAlignment(Find("general.alignment"), &alignment_));
  tensors_.resize(n_tensors);
  std::unordered_set<std::string_view> names;
  for (GgufTensorInfo& t : tensors_) {
    CHORUS_RETURN_IF_ERROR(ReadTensorInfo(c, alignment_, &names, &t));
  }
  return PlaceTensorData(base_, size_, alignment_, c.pos(), &data_offset_, &tensors_);
}

}  // namespace chorus
