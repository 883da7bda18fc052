// Where checkpoints live (DESIGN.md sections 3 and 7): a local directory (a path or file://) or
// an s3:// prefix, behind one interface that the checkpoint reader (lazy ranged reads of
// safetensors) and the shard writer (whole files, uploaded) use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/s3_client.h"

namespace quant::storage {

// Random-access reads of one file or object. Thread-safe.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // The path or URL, for errors.
  virtual const std::string& label() const = 0;
  // Size when opened.
  virtual uint64_t size() const = 0;
  // Exactly `length` bytes from `offset` (a pread, or one ranged GET); DataLoss when fewer come.
  virtual absl::Status ReadAt(uint64_t offset, uint64_t length, uint8_t* dst) const = 0;
};

// A regular local file: NotFound / "cannot open" / "not a regular file" name the path.
absl::StatusOr<std::unique_ptr<ByteSource>> OpenLocalFile(const std::string& path);

// True for "s3://..." (the only remote scheme).
bool IsS3Location(std::string_view location);
// "file:///data/m" -> "/data/m"; anything else as it is. Locations given by users pass through
// this before they are used as paths.
std::string LocalPathOf(std::string_view location);

// Endpoint and region for every s3:// location this process opens, from flags (--s3-endpoint,
// --s3-region); what they leave empty, and the credentials, come from the standard AWS
// variables and files (ResolveS3Config). Call before opening s3:// locations.
void SetS3Defaults(const S3Config& config);

struct StoreEntry {
  std::string name;  // relative to the root: "model-00001-of-00002.safetensors"
  uint64_t size = 0;
  std::string version;  // changes when the file does: the mtime locally, the ETag in S3
};

// "name:size:version|..." over every file of `store`: what a job's fingerprint takes from the
// model it reads, so a changed model is never mistaken for the one a job started on.
absl::StatusOr<std::string> DescribeFiles(const class ObjectStore& store);

// A directory of files: a local directory or every object under an s3:// prefix.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // The location as opened, without a trailing slash ("/data/m", "s3://bucket/models/m").
  const std::string& root() const { return root_; }
  // root() + "/" + name: how errors name a file.
  std::string Label(std::string_view name) const;

  // NotFound ("<label>: file not found") when absent.
  virtual absl::StatusOr<std::unique_ptr<ByteSource>> Open(const std::string& name) const = 0;
  // A whole small file (config, index, tokenizer); InvalidArgument above `max_bytes`.
  virtual absl::StatusOr<std::string> Read(const std::string& name, uint64_t max_bytes) const = 0;
  virtual absl::StatusOr<bool> Exists(const std::string& name) const = 0;
  // Every file under the root (names relative to it, sorted): a directory's regular files, or
  // every key under the prefix.
  virtual absl::StatusOr<std::vector<StoreEntry>> List() const = 0;
  // Writes `name` from a local file (multipart above 64 MiB for s3).
  virtual absl::Status Upload(const std::string& name, const std::string& local_path) const = 0;
  virtual absl::Status Remove(const std::string& name) const = 0;

 protected:
  explicit ObjectStore(std::string root);

 private:
  std::string root_;
};

// "s3://bucket/prefix" (credentials resolved now: InvalidArgument when there are none), or a
// local directory ("file:///data/m" or "/data/m"; NotFound when it does not exist).
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(const std::string& location);

// Whether `location` holds anything: a local path that exists, or an s3:// prefix with at
// least one object under it.
absl::StatusOr<bool> LocationExists(const std::string& location);

// Uploads every regular file of `local_dir` to `location` (an s3:// prefix), `last_file` (the
// manifest) after all others so that a reader who sees it sees the whole checkpoint. With
// `replace`, objects under the prefix that `local_dir` does not have are removed afterwards.
// On failure the objects this call wrote are removed (best effort) and the first error is
// returned. Returns the bytes uploaded.
absl::StatusOr<uint64_t> PublishDirectory(const std::string& local_dir,
                                          const std::string& location,
                                          const std::string& last_file, bool replace);

}  // namespace quant::storage
