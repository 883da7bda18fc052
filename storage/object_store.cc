// Local directories and s3:// prefixes behind ObjectStore; lazy ranged reads for safetensors.
#include "storage/object_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/confine.h"
#include "common/status.h"

namespace quant::storage {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFileScheme = "file://";
constexpr std::string_view kS3Scheme = "s3://";

std::string Join(std::string_view root, std::string_view name) {
  if (root.empty()) return std::string(name);
  return absl::StrCat(std::string(root), "/", std::string(name));
}

std::string StripTrailingSlashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

absl::Status ErrnoStatus(int err, const std::string& path, std::string_view what) {
  if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
  return absl::ErrnoToStatus(err, absl::StrCat(path, ": ", std::string(what)));
}

// ---- Local files.

class LocalFile final : public ByteSource {
 public:
  LocalFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~LocalFile() override { ::close(fd_); }
  const std::string& label() const override { return path_; }
  uint64_t size() const override { return size_; }
  // pread never moves a shared file position, so concurrent readers do not interfere.
  absl::Status ReadAt(uint64_t offset, uint64_t length, uint8_t* dst) const override {
    // Linux transfers at most 0x7ffff000 bytes per call; larger reads take several.
    constexpr uint64_t kMaxChunk = 1ull << 30;
    uint64_t done = 0;
    while (done < length) {
      const size_t want = static_cast<size_t>(std::min(length - done, kMaxChunk));
      const ssize_t got = ::pread(fd_, dst + done, want, static_cast<off_t>(offset + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": read of bytes [", offset, ", ",
                                                       offset + length, ") failed"));
      }
      if (got == 0) {
        return absl::DataLossError(absl::StrCat(path_, ": file ends at byte ", offset + done,
                                                " while reading bytes [", offset, ", ",
                                                offset + length, ") (truncated after open?)"));
      }
      done += static_cast<uint64_t>(got);
    }
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
};

class LocalStore final : public ObjectStore {
 public:
  explicit LocalStore(std::string dir) : ObjectStore(std::move(dir)) {}

  absl::StatusOr<std::unique_ptr<ByteSource>> Open(const std::string& name) const override {
    return OpenLocalFile(Label(name));
  }
  absl::StatusOr<std::string> Read(const std::string& name, uint64_t max_bytes) const override {
    ASSIGN_OR_RETURN(const bool exists, Exists(name));
    if (!exists) return absl::NotFoundError(absl::StrCat(Label(name), ": file not found"));
    ASSIGN_OR_RETURN(std::unique_ptr<ByteSource> file, Open(name));
    return ReadWhole(*file, max_bytes);
  }
  absl::StatusOr<bool> Exists(const std::string& name) const override {
    struct stat st;
    if (::stat(Label(name).c_str(), &st) == 0) return true;
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return ErrnoStatus(errno, Label(name), "cannot stat");
  }
  absl::StatusOr<std::vector<StoreEntry>> List() const override {
    std::vector<StoreEntry> entries;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root(), ec)) {
      if (!e.is_regular_file(ec)) continue;
      const auto mtime = fs::last_write_time(e.path(), ec).time_since_epoch().count();
      entries.push_back({e.path().filename().string(), static_cast<uint64_t>(e.file_size(ec)),
                         std::to_string(mtime)});
    }
    if (ec) return absl::UnavailableError(absl::StrCat(root(), ": cannot list: ", ec.message()));
    std::sort(entries.begin(), entries.end(),
              [](const StoreEntry& a, const StoreEntry& b) { return a.name < b.name; });
    return entries;
  }
  absl::Status Upload(const std::string& name, const std::string& local_path) const override {
    std::error_code ec;
    fs::copy_file(local_path, Label(name), fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::UnavailableError(absl::StrCat(Label(name), ": ", ec.message()));
    return absl::OkStatus();
  }
  absl::Status Remove(const std::string& name) const override {
    if (::unlink(Label(name).c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, Label(name), "cannot remove");
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<std::string> ReadWhole(const ByteSource& file, uint64_t max_bytes) {
    if (file.size() > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          file.label(), ": ", file.size(), " bytes is larger than the limit of ", max_bytes));
    }
    std::string text(file.size(), '\0');
    RETURN_IF_ERROR(file.ReadAt(0, text.size(), reinterpret_cast<uint8_t*>(text.data())));
    return text;
  }
};

// ---- s3:// prefixes.

#if QUANT_HAVE_S3

std::mutex& DefaultsMutex() {
  static std::mutex m;
  return m;
}
S3Config& Defaults() {
  static S3Config c;
  return c;
}

// Reads above this size are split into parts fetched by parallel ranged GETs.
constexpr uint64_t kParallelReadPart = 16ull << 20;
constexpr int kParallelReads = 8;
// Objects above this size are uploaded in parts of this size.
constexpr uint64_t kMultipartBytes = 64ull << 20;

class S3Object final : public ByteSource {
 public:
  S3Object(std::shared_ptr<S3Client> client, std::string bucket, std::string key, uint64_t size)
      : client_(std::move(client)),
        bucket_(std::move(bucket)),
        key_(std::move(key)),
        label_(absl::StrCat("s3://", bucket_, "/", key_)),
        size_(size) {}
  const std::string& label() const override { return label_; }
  uint64_t size() const override { return size_; }
  absl::Status ReadAt(uint64_t offset, uint64_t length, uint8_t* dst) const override {
    if (offset + length > size_) {
      return absl::OutOfRangeError(absl::StrCat(label_, ": bytes [", offset, ", ", offset + length,
                                                ") are past its end (", size_, " bytes)"));
    }
    if (length <= kParallelReadPart) return ReadPart(offset, length, dst);
    // Parts of kParallelReadPart, kParallelReads at a time.
    const uint64_t parts = (length + kParallelReadPart - 1) / kParallelReadPart;
    for (uint64_t first = 0; first < parts; first += kParallelReads) {
      std::vector<std::future<absl::Status>> pending;
      for (uint64_t p = first; p < std::min<uint64_t>(parts, first + kParallelReads); ++p) {
        const uint64_t begin = p * kParallelReadPart;
        const uint64_t n = std::min(kParallelReadPart, length - begin);
        pending.push_back(std::async(std::launch::async, [this, offset, begin, n, dst] {
          return ReadPart(offset + begin, n, dst + begin);
        }));
      }
      absl::Status status;
      for (auto& f : pending) status.Update(f.get());
      RETURN_IF_ERROR(status);
    }
    return absl::OkStatus();
  }

 private:
  absl::Status ReadPart(uint64_t offset, uint64_t length, uint8_t* dst) const {
    if (length == 0) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::string bytes,
                     client_->Get(bucket_, key_, std::make_pair(offset, offset + length)));
    if (bytes.size() != length) {
      return absl::DataLossError(absl::StrCat(label_, ": asked for bytes [", offset, ", ",
                                              offset + length, "), got ", bytes.size()));
    }
    std::copy(bytes.begin(), bytes.end(), dst);
    return absl::OkStatus();
  }

  std::shared_ptr<S3Client> client_;
  std::string bucket_, key_, label_;
  uint64_t size_;
};

// A read-only mapping of a local file (for uploads: parts are views of it).
struct Mapped {
  const char* data = nullptr;
  size_t size = 0;
  ~Mapped() {
    if (data != nullptr && size > 0) ::munmap(const_cast<char*>(data), size);
  }
};

absl::Status MapFile(const std::string& path, Mapped* m) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, path, "cannot open");
  if (absl::Status inside = CheckOpenedInside(fd, path); !inside.ok()) {
    ::close(fd);
    return inside;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, path, "cannot stat");
  }
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    void* p = ::mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, path, "cannot map");
    }
    m->data = static_cast<const char*>(p);
  }
  ::close(fd);
  return absl::OkStatus();
}

class S3Store final : public ObjectStore {
 public:
  S3Store(std::string root, std::shared_ptr<S3Client> client, std::string bucket,
          std::string prefix)
      : ObjectStore(std::move(root)),
        client_(std::move(client)),
        bucket_(std::move(bucket)),
        prefix_(std::move(prefix)) {}

  absl::StatusOr<std::unique_ptr<ByteSource>> Open(const std::string& name) const override {
    auto size = client_->Size(bucket_, Key(name));
    if (absl::IsNotFound(size.status())) {
      return absl::NotFoundError(absl::StrCat(Label(name), ": file not found"));
    }
    if (!size.ok()) return size.status();
    return std::unique_ptr<ByteSource>(new S3Object(client_, bucket_, Key(name), *size));
  }
  absl::StatusOr<std::string> Read(const std::string& name, uint64_t max_bytes) const override {
    ASSIGN_OR_RETURN(std::unique_ptr<ByteSource> object, Open(name));
    return LocalStore::ReadWhole(*object, max_bytes);
  }
  absl::StatusOr<bool> Exists(const std::string& name) const override {
    auto size = client_->Size(bucket_, Key(name));
    if (absl::IsNotFound(size.status())) return false;
    if (!size.ok()) return size.status();
    return true;
  }
  absl::StatusOr<std::vector<StoreEntry>> List() const override {
    const std::string dir = prefix_.empty() ? "" : prefix_ + "/";
    ASSIGN_OR_RETURN(std::vector<S3ListedObject> objects, client_->ListObjects(bucket_, dir));
    std::vector<StoreEntry> entries;
    for (auto& o : objects) entries.push_back({o.key.substr(dir.size()), o.size, o.etag});
    std::sort(entries.begin(), entries.end(),
              [](const StoreEntry& a, const StoreEntry& b) { return a.name < b.name; });
    return entries;
  }
  absl::Status Upload(const std::string& name, const std::string& local_path) const override {
    Mapped m;
    RETURN_IF_ERROR(MapFile(local_path, &m));
    const std::string_view data(m.data == nullptr ? "" : m.data, m.size);
    if (data.size() > kMultipartBytes) {
      return client_->PutMultipart(bucket_, Key(name), data, kMultipartBytes);
    }
    return client_->Put(bucket_, Key(name), data);
  }
  absl::Status Remove(const std::string& name) const override {
    return client_->Delete(bucket_, Key(name));
  }

 private:
  std::string Key(const std::string& name) const { return Join(prefix_, name); }

  std::shared_ptr<S3Client> client_;
  std::string bucket_, prefix_;
};

#endif  // QUANT_HAVE_S3

}  // namespace

ObjectStore::ObjectStore(std::string root) : root_(std::move(root)) {}

std::string ObjectStore::Label(std::string_view name) const { return Join(root_, name); }

bool IsS3Location(std::string_view location) { return location.starts_with(kS3Scheme); }

std::string LocalPathOf(std::string_view location) {
  if (location.starts_with(kFileScheme)) location.remove_prefix(kFileScheme.size());
  return std::string(location);
}

absl::StatusOr<std::unique_ptr<ByteSource>> OpenLocalFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::ErrnoToStatus(errno, path + ": cannot open");
  if (absl::Status inside = CheckOpenedInside(fd, path); !inside.ok()) {
    ::close(fd);
    return inside;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, path + ": cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read: not a regular file"));
  }
  return std::unique_ptr<ByteSource>(new LocalFile(path, fd, static_cast<uint64_t>(st.st_size)));
}

#if QUANT_HAVE_S3

void SetS3Defaults(const S3Config& config) {
  std::lock_guard<std::mutex> lock(DefaultsMutex());
  Defaults() = config;
}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(const std::string& location) {
  if (IsS3Location(location)) {
    ASSIGN_OR_RETURN(auto parsed, ParseS3Url(StripTrailingSlashes(location)));
    S3Config defaults;
    {
      std::lock_guard<std::mutex> lock(DefaultsMutex());
      defaults = Defaults();
    }
    ASSIGN_OR_RETURN(S3Config config, ResolveS3Config(defaults));
    ASSIGN_OR_RETURN(std::unique_ptr<S3Client> client, S3Client::Create(config));
    std::string prefix = parsed.second;
    while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
    const std::string root = absl::StrCat("s3://", parsed.first, prefix.empty() ? "" : "/", prefix);
    return std::unique_ptr<ObjectStore>(
        new S3Store(root, std::shared_ptr<S3Client>(std::move(client)), parsed.first, prefix));
  }
#else
void SetS3Defaults(const S3Config&) {}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(const std::string& location) {
  if (IsS3Location(location)) {
    return absl::UnimplementedError(absl::StrCat(
        location, ": this build has no s3:// support (libcurl was not found when it was built)"));
  }
#endif
  const std::string dir = StripTrailingSlashes(LocalPathOf(location));
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(dir, ": directory does not exist"));
    }
    return ErrnoStatus(errno, dir, "cannot stat");
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": not a directory"));
  }
  return std::unique_ptr<ObjectStore>(new LocalStore(dir));
}

absl::StatusOr<std::string> DescribeFiles(const ObjectStore& store) {
  ASSIGN_OR_RETURN(std::vector<StoreEntry> entries, store.List());
  std::string text;
  for (const StoreEntry& e : entries)
    absl::StrAppend(&text, e.name, ":", e.size, ":", e.version, "|");
  return text;
}

absl::StatusOr<bool> LocationExists(const std::string& location) {
  if (!IsS3Location(location)) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(LocalPathOf(location), ec));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenObjectStore(location));
  ASSIGN_OR_RETURN(std::vector<StoreEntry> entries, store->List());
  return !entries.empty();
}

absl::StatusOr<uint64_t> PublishDirectory(const std::string& local_dir, const std::string& location,
                                          const std::string& last_file, bool replace) {
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> source, OpenObjectStore(local_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> target, OpenObjectStore(location));
  ASSIGN_OR_RETURN(std::vector<StoreEntry> files, source->List());
  std::stable_partition(files.begin(), files.end(),
                        [&](const StoreEntry& e) { return e.name != last_file; });
  std::vector<StoreEntry> before;
  if (replace) {
    ASSIGN_OR_RETURN(before, target->List());
  }
  uint64_t bytes = 0;
  std::vector<std::string> written;
  absl::Status status;
  for (const StoreEntry& f : files) {
    status = target->Upload(f.name, source->Label(f.name));
    if (!status.ok()) break;
    written.push_back(f.name);
    bytes += f.size;
  }
  if (!status.ok()) {
    for (const std::string& name : written) (void)target->Remove(name);
    return status;
  }
  std::set<std::string> now;
  for (const StoreEntry& f : files) now.insert(f.name);
  for (const StoreEntry& old : before) {
    if (!now.count(old.name)) RETURN_IF_ERROR(target->Remove(old.name));
  }
  return bytes;
}

}  // namespace quant::storage
