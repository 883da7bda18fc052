// Lazy safetensors reading and writing: 8-byte little-endian header length, JSON header
// (dtype, shape, data_offsets, optional __metadata__), then the data (DESIGN.md section 7).
// Tensors are read by byte range (pread, or one ranged GET for s3://); a shard is never loaded
// whole.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/object_store.h"
#include "storage/tensor.h"

namespace quant::storage {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // absolute file offset of the first byte
  uint64_t end = 0;    // one past the last byte
};

struct SafetensorsHeader {
  std::map<std::string, std::string> metadata;  // __metadata__ (string to string)
  std::vector<TensorInfo> tensors;              // in data-offset order
  uint64_t data_start = 0;                      // 8 + header length
};

// The Hugging Face library refuses headers above 100,000,000 bytes (its MAX_HEADER_SIZE); so do
// we, so a corrupt length cannot make us allocate gigabytes.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Decodes the 8-byte little-endian header length at the start of a file of `file_size` bytes
// and checks it: at least 2 (the smallest JSON object), at most kMaxSafetensorsHeaderBytes, and
// 8 + length <= file_size. `file_label` names the file in errors. Pure (fuzzed).
absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(const uint8_t (&prefix)[8],
                                                      uint64_t file_size,
                                                      std::string_view file_label);

// Parses and validates the JSON header. `file_size` bounds every offset; `file_label` names the
// file in errors. Checks: valid JSON object, known dtypes, shape x dtype size == byte length,
// offsets inside the data section, no overlaps. Pure function of its inputs (fuzzed).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view header_json,
                                                         uint64_t file_size,
                                                         std::string_view file_label);

// One open safetensors file or object. Thread-safe for concurrent reads.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Reads and validates the header through `source` (a local file or an s3:// object).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(std::unique_ptr<ByteSource> source);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // The path or URL.
  const std::string& path() const { return source_->label(); }
  const SafetensorsHeader& header() const { return header_; }
  // Size of the file when it was opened, in bytes.
  uint64_t file_size() const { return source_->size(); }
  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;
  // Reads exactly the tensor's byte range.
  absl::StatusOr<HostTensor> Read(const TensorInfo& info) const;
  // Total bytes read through this file so far (for benchmarks and metrics).
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  SafetensorsFile(std::unique_ptr<ByteSource> source, SafetensorsHeader header);
  std::unique_ptr<ByteSource> source_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in header_.tensors
  // Atomic because concurrent Read calls each add to it.
  mutable std::atomic<uint64_t> bytes_read_ = 0;
};

// Writes a safetensors file that the Hugging Face library loads: header padded with spaces so
// data starts 8-byte aligned, offsets in insertion order, __metadata__ first. Writes to
// `path + ".tmp"` and renames, so a reader never sees a half-written file.
class SafetensorsWriter {
 public:
  void SetMetadata(std::string key, std::string value);
  // Takes ownership of the tensor; the name must be unique (InvalidArgument otherwise).
  absl::Status Add(std::string name, HostTensor tensor);
  absl::Status Write(const std::string& path) const;

 private:
  std::map<std::string, std::string> metadata_;
  std::vector<std::pair<std::string, HostTensor>> tensors_;
  std::set<std::string, std::less<>> names_;  // for the uniqueness check in Add
};

}  // namespace quant::storage
