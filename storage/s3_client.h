// s3:// object storage (DESIGN.md section 3, issue 12): libcurl with its built-in AWS SigV4
// signing (CURLOPT_AWS_SIGV4) and the x-amz-content-sha256 header on every request, path-style
// URLs against any endpoint (AWS, MinIO, Ceph radosgw, s3rver), retries with exponential backoff
// on 5xx, 429 and transport errors, ranged GETs, multipart uploads that are aborted when they
// fail. Credentials come from flags or the standard AWS variables and files; they are never
// logged or put in an error message.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::storage {

struct S3Config {
  std::string endpoint;       // "http://127.0.0.1:4568"; empty: https://s3.<region>.amazonaws.com
  std::string region;         // empty: from the AWS variables or files, else us-east-1
  std::string access_key;
  std::string secret_key;
  std::string session_token;  // optional (temporary credentials)
  int max_attempts = 5;       // per request, with exponential backoff from 0.2 s
  double timeout_seconds = 300;
  // https://<bucket>.<endpoint host>/<key> instead of <endpoint>/<bucket>/<key>.
  bool virtual_hosted = false;
  // Sent as x-amz-date, which libcurl then signs with instead of the clock: for reproducible
  // signatures (the SigV4 test vectors). Empty in use.
  std::string amz_date;
};

// Fills what `config` leaves empty from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL(_S3), then the
// [AWS_PROFILE or default] sections of ~/.aws/credentials and ~/.aws/config (or the files
// AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE name). InvalidArgument when no credentials.
absl::StatusOr<S3Config> ResolveS3Config(S3Config config);

// A query string sorted by name and URI-encoded as SigV4's canonical query has it (libcurl 7.88
// signs the query as sent, unsorted, so the client always sends it sorted).
std::string S3QueryString(const std::map<std::string, std::string>& params);

// "s3://bucket/key/with/slashes" -> {bucket, key}; InvalidArgument naming the URL otherwise.
absl::StatusOr<std::pair<std::string, std::string>> ParseS3Url(std::string_view url);

struct S3ListedObject {
  std::string key;
  uint64_t size = 0;
  std::string etag;  // as listed (quoted)
};

// Thread-safe: each request has its own libcurl handle.
class S3Client {
 public:
  static absl::StatusOr<std::unique_ptr<S3Client>> Create(const S3Config& config);
  ~S3Client();

  absl::Status Put(const std::string& bucket, const std::string& key, std::string_view data);
  // The whole object, or bytes [begin, end) of it.
  absl::StatusOr<std::string> Get(const std::string& bucket, const std::string& key,
                                  std::optional<std::pair<uint64_t, uint64_t>> range = {});
  absl::StatusOr<uint64_t> Size(const std::string& bucket, const std::string& key);
  // Keys under `prefix` (all pages).
  absl::StatusOr<std::vector<std::string>> List(const std::string& bucket,
                                                const std::string& prefix);
  // The same with each object's size and ETag.
  absl::StatusOr<std::vector<S3ListedObject>> ListObjects(const std::string& bucket,
                                                          const std::string& prefix);
  absl::Status Delete(const std::string& bucket, const std::string& key);
  // Multipart upload in parts of `part_bytes` (>= 5 MiB but the last); on any failure the
  // upload is aborted, so no parts are left behind.
  absl::Status PutMultipart(const std::string& bucket, const std::string& key,
                            std::string_view data, uint64_t part_bytes = 64ull << 20);
  // The multipart steps PutMultipart takes: an upload id, each part's ETag, the completion,
  // or the abort that drops the parts.
  absl::StatusOr<std::string> StartUpload(const std::string& bucket, const std::string& key);
  absl::StatusOr<std::string> UploadPart(const std::string& bucket, const std::string& key,
                                         const std::string& upload_id, int part,
                                         std::string_view data);
  absl::Status CompleteUpload(const std::string& bucket, const std::string& key,
                              const std::string& upload_id, const std::vector<std::string>& etags);
  absl::Status AbortUpload(const std::string& bucket, const std::string& key,
                           const std::string& upload_id);

  uint64_t bytes_sent() const { return bytes_sent_.load(); }
  uint64_t bytes_received() const { return bytes_received_.load(); }

 private:
  struct Response {
    long status = 0;
    std::string body;
    std::string etag;
    uint64_t content_length = 0;
  };
  explicit S3Client(S3Config config) : config_(std::move(config)) {}
  // One request with retries; `what` names it in errors ("PUT s3://b/k").
  absl::StatusOr<Response> Request(const std::string& method, const std::string& bucket,
                                   const std::string& key, const std::string& query,
                                   std::string_view body, const std::string& range,
                                   const std::string& what);
  // libcurl handles between requests: each keeps its connection open, so a run of ranged reads
  // does not pay a TCP connect apiece. A handle that saw a transport error is not kept.
  void* TakeHandle();
  void KeepHandle(void* handle);
  S3Config config_;
  std::mutex handles_mu_;
  std::vector<void*> idle_handles_;
  // Atomic: a client is shared by concurrent ranged reads.
  std::atomic<uint64_t> bytes_sent_ = 0, bytes_received_ = 0;
};

// The values of every <tag>...</tag> in an S3 XML response, in order (tags without attributes
// or nesting of the same name: Key, UploadId, ETag, Code, Message, ...). Pure (fuzzed).
std::vector<std::string> XmlValues(std::string_view xml, std::string_view tag);

}  // namespace quant::storage
