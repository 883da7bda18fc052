// safetensors: strict header validation (outside input, fuzzed), ranged pread of one tensor at a
// time (a trillion-parameter shard never fits in memory), and an atomic, aligned writer.
//
// File layout (all integers little-endian):
//   [0, 8)                 u64 N, the header length in bytes
//   [8, 8 + N)             JSON object, UTF-8, optionally right-padded with spaces
//   [8 + N, file size)     data section; data_offsets in the header are relative to 8 + N
#include "storage/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/atomic_file.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace quant::storage {
namespace {

using nlohmann::json;

// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// which StrCat and friends take; std::string_view arguments go through this.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Names from a file may hold anything; escape and cap them so every error stays one short line.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  std::string out = absl::StrCat("\"", absl::CHexEscape(Absl(s.substr(0, kMaxShown))), "\"");
  if (s.size() > kMaxShown) absl::StrAppend(&out, "...");
  return out;
}

absl::Status Invalid(std::string_view file_label, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(Absl(file_label), ": ", Absl(problem)));
}

// One JSON value's type, for "expected X, got Y" messages.
absl::string_view JsonTypeName(const json& v) {
  if (v.is_number_integer()) return v.is_number_unsigned() ? "non-negative integer" : "integer";
  return v.type_name();
}

// Parses one tensor entry of the header. `data_bytes` is the size of the data section.
absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name, const json& entry,
                                            uint64_t data_start, uint64_t data_bytes,
                                            std::string_view file_label) {
  const std::string where = absl::StrCat("tensor ", Quote(name));
  if (name.empty()) return Invalid(file_label, "a tensor has an empty name");
  if (!entry.is_object()) {
    return Invalid(file_label,
                   absl::StrCat(where, ": expected an object, got ", JsonTypeName(entry)));
  }
  for (const auto& [key, unused] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return Invalid(file_label, absl::StrCat(where, ": unexpected key ", Quote(key)));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) {
      return Invalid(file_label, absl::StrCat(where, ": missing \"", key, "\""));
    }
  }

  TensorInfo info;
  info.name = name;
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return Invalid(file_label,
                   absl::StrCat(where, ": \"dtype\" must be a string, got ", JsonTypeName(dtype)));
  }
  absl::StatusOr<DType> parsed = ParseDType(dtype.get_ref<const std::string&>());
  if (!parsed.ok()) {
    return Invalid(file_label, absl::StrCat(where, ": ", parsed.status().message()));
  }
  info.dtype = *parsed;

  const json& shape = entry["shape"];
  if (!shape.is_array()) {
    return Invalid(file_label,
                   absl::StrCat(where, ": \"shape\" must be an array, got ", JsonTypeName(shape)));
  }
  int64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_integer()) {
      return Invalid(file_label, absl::StrCat(where, ": shape entries must be integers, got ",
                                              JsonTypeName(d)));
    }
    if (!d.is_number_unsigned()) {  // nlohmann stores only negative integers as signed
      return Invalid(file_label,
                     absl::StrCat(where, ": negative dimension ", d.get<int64_t>(), " in shape"));
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(dim), &numel)) {
      return Invalid(file_label, absl::StrCat(where, ": shape ", shape.dump(),
                                              " has more elements than fit in 64 bits"));
    }
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  int64_t expected_bytes = 0;
  if (__builtin_mul_overflow(numel, DTypeSize(info.dtype), &expected_bytes)) {
    return Invalid(file_label,
                   absl::StrCat(where, ": shape ", shape.dump(), " overflows 64-bit byte sizes"));
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return Invalid(file_label, absl::StrCat(where,
                                            ": \"data_offsets\" must be two non-negative "
                                            "integers [begin, end], got ",
                                            offsets.dump()));
  }
  const uint64_t begin = offsets[0].get<uint64_t>();
  const uint64_t end = offsets[1].get<uint64_t>();
  if (begin > end) {
    return Invalid(file_label,
                   absl::StrCat(where, ": data_offsets [", begin, ", ", end, "] end before begin"));
  }
  if (end > data_bytes) {
    return Invalid(file_label,
                   absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                "] run past the end of the data section (", data_bytes, " bytes)"));
  }
  if (end - begin != static_cast<uint64_t>(expected_bytes)) {
    return Invalid(file_label, absl::StrCat(where, ": shape ", shape.dump(), " of ",
                                            Absl(DTypeName(info.dtype)), " needs ", expected_bytes,
                                            " bytes but data_offsets [", begin, ", ", end,
                                            "] hold ", end - begin));
  }
  info.begin = data_start + begin;
  info.end = data_start + end;
  return info;
}

}  // namespace

absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(const uint8_t (&prefix)[8],
                                                      uint64_t file_size,
                                                      std::string_view file_label) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];  // little-endian, whatever the host
  if (n < 2) {
    return Invalid(file_label, absl::StrCat("header length ", n,
                                            " is too small for a JSON object (at least 2)"));
  }
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(file_label, absl::StrCat("header length ", n, " exceeds the limit of ",
                                            kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (file_size < 8 || n > file_size - 8) {
    return absl::DataLossError(absl::StrCat(Absl(file_label), ": header length ", n,
                                            " runs past the end of the file (", file_size,
                                            " bytes; truncated?)"));
  }
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                         uint64_t file_size,
                                                         std::string_view file_label) {
  if (header_json.size() > kMaxSafetensorsHeaderBytes) {
    return Invalid(file_label,
                   absl::StrCat("header of ", header_json.size(), " bytes exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes));
  }
  SafetensorsHeader header;
  header.data_start = 8 + header_json.size();
  if (header.data_start > file_size) {
    return absl::DataLossError(absl::StrCat(Absl(file_label), ": header of ", header_json.size(),
                                            " bytes runs past the end of the file (", file_size,
                                            " bytes)"));
  }
  const uint64_t data_bytes = file_size - header.data_start;
  // The Hugging Face reader insists on this too; it also rejects byte-order marks and junk.
  if (header_json.empty() || header_json.front() != '{') {
    return Invalid(file_label, "header does not start with '{'");
  }

  // nlohmann keeps the last of duplicate keys silently; a file naming a tensor twice is
  // ambiguous, so the parse callback spots duplicates among the top-level keys.
  std::set<std::string, std::less<>> top_keys;
  std::string duplicate;
  bool has_duplicate = false;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!top_keys.insert(parsed.get<std::string>()).second && !has_duplicate) {
        has_duplicate = true;
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  json root;
  try {
    root = json::parse(header_json.begin(), header_json.end(), on_event);
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 7: ...";
    // its last-read token is already escaped by nlohmann, so the line stays one line.
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    // The last-read token can be as long as the file; a message stays short.
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return Invalid(file_label, absl::StrCat("header is not valid JSON: ", what));
  }
  if (!root.is_object()) {
    return Invalid(file_label,
                   absl::StrCat("header must be a JSON object, got ", JsonTypeName(root)));
  }
  if (has_duplicate) {
    return Invalid(file_label, absl::StrCat("header names ", Quote(duplicate), " twice"));
  }

  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return Invalid(file_label,
                       absl::StrCat("__metadata__ must be an object, got ", JsonTypeName(value)));
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return Invalid(file_label, absl::StrCat("__metadata__ ", Quote(mkey),
                                                  " must be a string, got ", JsonTypeName(mvalue)));
        }
        header.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(TensorInfo info,
                     ParseTensorEntry(key, value, header.data_start, data_bytes, file_label));
    header.tensors.push_back(std::move(info));
  }

  // Data-offset order, ties by name so the result does not depend on JSON key order.
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  for (size_t i = 1; i < header.tensors.size(); ++i) {
    const TensorInfo& prev = header.tensors[i - 1];
    const TensorInfo& cur = header.tensors[i];
    if (cur.begin < prev.end) {
      return Invalid(file_label, absl::StrCat("tensors ", Quote(prev.name), " [",
                                              prev.begin - header.data_start, ", ",
                                              prev.end - header.data_start, ") and ",
                                              Quote(cur.name), " [", cur.begin - header.data_start,
                                              ", ", cur.end - header.data_start, ") overlap"));
    }
  }
  return header;
}

SafetensorsFile::SafetensorsFile(std::unique_ptr<ByteSource> source, SafetensorsHeader header)
    : source_(std::move(source)), header_(std::move(header)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<ByteSource> source, OpenLocalFile(path));
  return Open(std::move(source));
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    std::unique_ptr<ByteSource> source) {
  const std::string& path = source->label();
  const uint64_t file_size = source->size();
  if (file_size < 8) {
    return absl::DataLossError(absl::StrCat(path, ": file is ", file_size,
                                            " bytes, shorter than the 8-byte header length"));
  }
  uint8_t prefix[8];
  RETURN_IF_ERROR(source->ReadAt(0, sizeof(prefix), prefix));
  ASSIGN_OR_RETURN(const uint64_t header_bytes,
                   ParseSafetensorsHeaderLength(prefix, file_size, path));
  std::string header_json(header_bytes, '\0');
  RETURN_IF_ERROR(source->ReadAt(8, header_bytes, reinterpret_cast<uint8_t*>(header_json.data())));
  ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensorsHeader(header_json, file_size, path));
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(std::move(source), std::move(header)));
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<HostTensor> SafetensorsFile::Read(const TensorInfo& info) const {
  // `info` normally comes from header(); a hand-made one is checked rather than trusted.
  const std::string& path = source_->label();
  const uint64_t file_size = source_->size();
  if (info.begin > info.end || info.end > file_size || info.begin < header_.data_start) {
    return Invalid(path, absl::StrCat("tensor ", Quote(info.name), ": byte range [", info.begin,
                                      ", ", info.end, ") is outside the data section [",
                                      header_.data_start, ", ", file_size, ")"));
  }
  for (int64_t d : info.shape) {
    if (d < 0) return Invalid(path, absl::StrCat("tensor ", Quote(info.name), ": negative dim"));
  }
  const uint64_t size = info.end - info.begin;
  if (size != static_cast<uint64_t>(NumElements(info.shape) * DTypeSize(info.dtype))) {
    return Invalid(path, absl::StrCat("tensor ", Quote(info.name),
                                      ": byte range does not match its shape and dtype"));
  }
  HostTensor t;
  t.dtype = info.dtype;
  t.shape = info.shape;
  t.bytes.resize(size);
  RETURN_IF_ERROR(source_->ReadAt(info.begin, size, t.bytes.data()));
  bytes_read_.fetch_add(size, std::memory_order_relaxed);
  return t;
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

absl::Status SafetensorsWriter::Add(std::string name, HostTensor tensor) {
  if (name.empty() || name == "__metadata__") {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors writer: invalid tensor name ", Quote(name)));
  }
  if (names_.count(name) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors writer: tensor ", Quote(name), " added twice"));
  }
  int64_t numel = 1;
  for (int64_t d : tensor.shape) {
    if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors writer: tensor ", Quote(name), " has an invalid shape"));
    }
  }
  const uint64_t want = static_cast<uint64_t>(numel) * DTypeSize(tensor.dtype);
  if (tensor.bytes.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors writer: tensor ", Quote(name), " holds ", tensor.bytes.size(),
        " bytes but its shape and dtype ", Absl(DTypeName(tensor.dtype)), " need ", want));
  }
  names_.insert(name);
  tensors_.emplace_back(std::move(name), std::move(tensor));
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  // ordered_json keeps insertion order: __metadata__ first, then tensors as added.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    const uint64_t size = t.bytes.size();
    header[name] = {{"dtype", DTypeName(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string header_json;
  try {
    header_json = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {  // invalid UTF-8 in a name or value
    return Invalid(path, absl::StrCat("cannot encode the header: ", e.what()));
  }
  // Spaces after the JSON make 8 + N a multiple of 8, so the data section (and every tensor
  // whose offset is a multiple of its element size) is aligned for readers that mmap the file.
  header_json.append((8 - header_json.size() % 8) % 8, ' ');
  uint8_t prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(header_json.size() >> (8 * i));

  // Written beside its name and renamed over it, fsynced (common/atomic_file.h).
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  RETURN_IF_ERROR(file->Write(prefix, sizeof(prefix)));
  RETURN_IF_ERROR(file->Write(header_json));
  for (const auto& [name, t] : tensors_) RETURN_IF_ERROR(file->Write(t.bytes.data(), t.bytes.size()));
  return file->Commit();
}

}  // namespace quant::storage
