#include "launch/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/json.h"  // ParseJson, JsonQuote

namespace openmoe {
namespace {

constexpr int64_t kMaxHeaderBytes = int64_t{100} << 20;  // the reference implementation's limit

int64_t DtypeBytes(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}

absl::StatusOr<int64_t> JsonInt(const JsonValue& v, const std::string& what) {
  int64_t x = 0;
  if (v.type != JsonValue::kNumber || !absl::SimpleAtoi(v.text, &x) || x < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a non-negative integer"));
  }
  return x;
}

absl::Status ParseEntry(const std::string& name, const JsonValue& v, SafetensorsEntry* e) {
  const std::string what = absl::StrCat("tensor ", name);
  if (v.type != JsonValue::kObject)
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a JSON object"));
  e->name = name;
  bool has_dtype = false, has_shape = false, has_offsets = false;
  for (const auto& [key, field] : v.fields) {
    if (key == "dtype") {
      if (field.type != JsonValue::kString)
        return absl::InvalidArgumentError(absl::StrCat(what, ": dtype is not a string"));
      e->dtype = field.text;
      has_dtype = true;
    } else if (key == "shape") {
      if (field.type != JsonValue::kArray)
        return absl::InvalidArgumentError(absl::StrCat(what, ": shape is not an array"));
      for (const JsonValue& d : field.items) {
        absl::StatusOr<int64_t> dim = JsonInt(d, absl::StrCat(what, ": a shape entry"));
        if (!dim.ok()) return dim.status();
        e->shape.push_back(*dim);
      }
      has_shape = true;
    } else if (key == "data_offsets") {
      if (field.type != JsonValue::kArray || field.items.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": data_offsets is not [begin, end]"));
      }
      absl::StatusOr<int64_t> b = JsonInt(field.items[0], absl::StrCat(what, ": data_offsets[0]"));
      absl::StatusOr<int64_t> end =
          JsonInt(field.items[1], absl::StrCat(what, ": data_offsets[1]"));
      if (!b.ok()) return b.status();
      if (!end.ok()) return end.status();
      e->begin = *b;
      e->end = *end;
      has_offsets = true;
    }
  }
  if (!has_dtype || !has_shape || !has_offsets) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": needs dtype, shape and data_offsets"));
  }
  const int64_t elem = DtypeBytes(e->dtype);
  if (elem == 0)
    return absl::InvalidArgumentError(absl::StrCat(what, ": unknown dtype ", e->dtype));
  int64_t n = 1;
  for (int64_t d : e->shape) n *= d;
  if (e->end < e->begin || e->end - e->begin != n * elem) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: data_offsets [%d, %d] do not hold %d %s values", what, e->begin, e->end, n, e->dtype));
  }
  return absl::OkStatus();
}

absl::Status ErrnoError(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, " (", std::strerror(errno), ")"));
}

}  // namespace

// ---------------- writer ----------------

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path,
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      absl::StrAppend(&header, first ? "" : ",", JsonQuote(k), ":", JsonQuote(v));
      first = false;
    }
    header += "}";
  }
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, shape] = tensors[i];
    int64_t n = 1;
    std::string dims;
    for (size_t d = 0; d < shape.size(); ++d) {
      n *= shape[d];
      absl::StrAppend(&dims, d ? "," : "", shape[d]);
    }
    absl::StrAppend(&header, metadata.empty() && i == 0 ? "" : ",", JsonQuote(name),
                    ":{\"dtype\":\"F32\",\"shape\":[", dims, "],\"data_offsets\":[", offset, ",",
                    offset + 4 * n, "]}");
    offset += 4 * n;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  w->tmp_ = path + ".tmp";
  w->expected_bytes_ = offset;
  w->file_ = std::fopen(w->tmp_.c_str(), "wb");
  if (w->file_ == nullptr) return ErrnoError(absl::StrCat(w->tmp_, ": cannot create"));
  unsigned char length[8];
  for (int b = 0; b < 8; ++b)
    length[b] = static_cast<unsigned char>(static_cast<uint64_t>(header.size()) >> (8 * b));
  if (std::fwrite(length, 1, 8, w->file_) != 8 ||
      std::fwrite(header.data(), 1, header.size(), w->file_) != header.size()) {
    return ErrnoError(absl::StrCat(w->tmp_, ": write failed"));
  }
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_.c_str());
  }
}

absl::Status SafetensorsWriter::Append(const float* data, int64_t count) {
  if (written_bytes_ + 4 * count > expected_bytes_) {
    return absl::InternalError(absl::StrCat(path_, ": more data than the header describes"));
  }
  if (count > 0 && std::fwrite(data, sizeof(float), static_cast<size_t>(count), file_) !=
                       static_cast<size_t>(count)) {
    return ErrnoError(absl::StrCat(tmp_, ": write failed"));
  }
  written_bytes_ += 4 * count;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Close() {
  if (written_bytes_ != expected_bytes_) {
    return absl::InternalError(absl::StrFormat("%s: %d data bytes written, the header describes %d",
                                               path_, written_bytes_, expected_bytes_));
  }
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0)
    return ErrnoError(absl::StrCat(tmp_, ": write failed"));
  const int closed = std::fclose(file_);
  file_ = nullptr;
  if (closed != 0) {
    std::remove(tmp_.c_str());
    return ErrnoError(absl::StrCat(tmp_, ": close failed"));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const absl::Status s = ErrnoError(absl::StrCat(tmp_, ": cannot rename to ", path_));
    std::remove(tmp_.c_str());
    return s;
  }
  return absl::OkStatus();
}

// ---------------- reader ----------------

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  struct stat st {};
  ::fstat(fd, &st);
  const int64_t file_size = st.st_size;
  unsigned char length[8] = {};
  std::string header;
  int64_t n = 0;
  bool ok = file_size >= 8 && ::pread(fd, length, 8, 0) == 8;
  if (ok) {
    for (int b = 7; b >= 0; --b) n = (n << 8) | length[b];
    ok = n >= 2 && n <= kMaxHeaderBytes && 8 + n <= file_size;
    if (ok) {
      header.resize(static_cast<size_t>(n));
      ok = ::pread(fd, header.data(), header.size(), 8) == static_cast<ssize_t>(n);
    }
  }
  ::close(fd);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: not a safetensors file (header length %d, file size %d)", path, n, file_size));
  }
  absl::StatusOr<JsonValue> json = ParseJson(header);
  if (!json.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": bad JSON header: ", json.status().message()));
  }
  if (json->type != JsonValue::kObject)
    return absl::InvalidArgumentError(absl::StrCat(path, ": the header is not a JSON object"));

  SafetensorsFile f;
  f.path_ = path;
  f.data_start_ = 8 + n;
  const int64_t data_size = file_size - f.data_start_;
  for (const auto& [key, value] : json->fields) {
    if (key == "__metadata__") {
      if (value.type != JsonValue::kObject)
        return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ is not an object"));
      for (const auto& [mk, mv] : value.fields) {
        if (mv.type != JsonValue::kString) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": __metadata__ value ", mk, " is not a string"));
        }
        f.metadata_[mk] = mv.text;
      }
      continue;
    }
    SafetensorsEntry e;
    const absl::Status parsed = ParseEntry(key, value, &e);
    if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.message()));
    if (e.end > data_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor %s ends at data byte %d, the file holds %d (truncated?)",
                          path, e.name, e.end, data_size));
    }
    f.tensors_.push_back(std::move(e));
  }
  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& e : f.tensors_) by_offset.push_back(&e);
  std::sort(
      by_offset.begin(), by_offset.end(),
      [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensors ", by_offset[i - 1]->name,
                                                     " and ", by_offset[i]->name, " overlap"));
    }
  }
  return f;
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  for (const SafetensorsEntry& e : tensors_)
    if (e.name == name) return &e;
  return nullptr;
}

absl::Status SafetensorsFile::ReadF32(const SafetensorsEntry& entry, int64_t first, int64_t count,
                                      float* out) const {
  if (entry.dtype != "F32") {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor ", entry.name, " is ", entry.dtype, "; only F32 is read"));
  }
  if (first < 0 || count < 0 || entry.begin + 4 * (first + count) > entry.end) {
    return absl::OutOfRangeError(absl::StrFormat("%s: tensor %s: elements [%d, %d) out of range",
                                                 path_, entry.name, first, first + count));
  }
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat(path_, ": cannot open (", std::strerror(errno), ")"));
  char* dst = reinterpret_cast<char*>(out);
  int64_t remaining = 4 * count;
  int64_t offset = data_start_ + entry.begin + 4 * first;
  while (remaining > 0) {
    const ssize_t r = ::pread(fd, dst, static_cast<size_t>(remaining), offset);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(fd);
      return absl::DataLossError(
          absl::StrCat(path_, ": tensor ", entry.name, ": read failed (truncated file?)"));
    }
    dst += r;
    remaining -= r;
    offset += r;
  }
  ::close(fd);
  return absl::OkStatus();
}

}  // namespace openmoe
