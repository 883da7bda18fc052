#include "storage/s3_client.h"

#include <curl/curl.h>
#include <openssl/sha.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "common/status.h"

namespace quant::storage {
namespace {

// RFC 3986 unreserved characters stay; '/' stays in keys.
std::string UriEncode(std::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// A canonical query string: parameters sorted by name, names and values encoded, "name=" for
// an empty value (what SigV4 signs, so libcurl and the server agree).
size_t OnBody(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

size_t OnHeader(char* p, size_t size, size_t n, void* out) {
  std::string line(p, size * n);
  if (line.size() > 5 && (line.rfind("ETag:", 0) == 0 || line.rfind("etag:", 0) == 0)) {
    std::string v = line.substr(5);
    v.erase(0, v.find_first_not_of(" \t"));
    v.erase(v.find_last_not_of("\r\n \t") + 1);
    *static_cast<std::string*>(out) = v;
  }
  return size * n;
}

std::string EnvOr(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr && *v != 0 ? std::string(v) : fallback;
}

// key = value pairs of the [section] of an AWS ini file.
std::map<std::string, std::string> IniSection(const std::string& path, const std::string& section) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  std::string line, current;
  while (std::getline(in, line)) {
    line.erase(0, line.find_first_not_of(" \t"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      current = line.substr(1, line.size() - 2);
      continue;
    }
    const size_t eq = line.find('=');
    if (current != section || eq == std::string::npos) continue;
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    k.erase(k.find_last_not_of(" \t") + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    out[k] = v;
  }
  return out;
}

}  // namespace

std::vector<std::string> XmlValues(std::string_view xml, std::string_view tag) {
  std::vector<std::string> values;
  const std::string opening = "<" + std::string(tag) + ">";
  const std::string closing = "</" + std::string(tag) + ">";
  size_t pos = 0;
  while ((pos = xml.find(opening, pos)) != std::string_view::npos) {
    const size_t begin = pos + opening.size();
    const size_t end = xml.find(closing, begin);
    if (end == std::string_view::npos) break;
    values.emplace_back(xml.substr(begin, end - begin));
    pos = end + closing.size();
  }
  return values;
}

std::string S3QueryString(const std::map<std::string, std::string>& params) {
  std::string q;
  for (const auto& [k, v] : params) {
    absl::StrAppend(&q, q.empty() ? "" : "&", UriEncode(k, false), "=", UriEncode(v, false));
  }
  return q;
}

absl::StatusOr<std::pair<std::string, std::string>> ParseS3Url(std::string_view url) {
  if (!url.starts_with("s3://")) {
    return absl::InvalidArgumentError(std::string(url) + ": not an s3:// URL");
  }
  const std::string_view rest = url.substr(5);
  const size_t slash = rest.find('/');
  const std::string bucket(rest.substr(0, slash));
  if (bucket.empty() || bucket.size() > 63) {
    return absl::InvalidArgumentError(std::string(url) + ": no bucket name (s3://bucket/key)");
  }
  return std::make_pair(bucket, slash == std::string_view::npos
                                    ? std::string()
                                    : std::string(rest.substr(slash + 1)));
}

absl::StatusOr<S3Config> ResolveS3Config(S3Config c) {
  const std::string home = EnvOr("HOME");
  const std::string profile = EnvOr("AWS_PROFILE", "default");
  auto creds =
      IniSection(EnvOr("AWS_SHARED_CREDENTIALS_FILE", home + "/.aws/credentials"), profile);
  auto conf = IniSection(EnvOr("AWS_CONFIG_FILE", home + "/.aws/config"),
                         profile == "default" ? "default" : "profile " + profile);
  if (c.access_key.empty()) c.access_key = EnvOr("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"]);
  if (c.secret_key.empty()) {
    c.secret_key = EnvOr("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"]);
  }
  if (c.session_token.empty()) {
    c.session_token = EnvOr("AWS_SESSION_TOKEN", creds["aws_session_token"]);
  }
  if (c.region.empty()) {
    c.region = EnvOr("AWS_REGION", EnvOr("AWS_DEFAULT_REGION", conf["region"]));
  }
  if (c.region.empty()) c.region = "us-east-1";
  if (c.endpoint.empty()) c.endpoint = EnvOr("AWS_ENDPOINT_URL_S3", EnvOr("AWS_ENDPOINT_URL"));
  if (c.endpoint.empty()) c.endpoint = absl::StrCat("https://s3.", c.region, ".amazonaws.com");
  while (!c.endpoint.empty() && c.endpoint.back() == '/') c.endpoint.pop_back();
  if (c.access_key.empty() || c.secret_key.empty()) {
    return absl::InvalidArgumentError(
        "s3: no credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials)");
  }
  return c;
}

absl::StatusOr<std::unique_ptr<S3Client>> S3Client::Create(const S3Config& config) {
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK) return absl::InternalError("libcurl did not initialise");
  if (config.access_key.empty() || config.secret_key.empty() || config.endpoint.empty()) {
    return absl::InvalidArgumentError("s3: endpoint and credentials are required");
  }
  S3Config c = config;
  if (c.region.empty()) c.region = "us-east-1";
  return std::unique_ptr<S3Client>(new S3Client(std::move(c)));
}

S3Client::~S3Client() {
  for (void* h : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* S3Client::TakeHandle() {
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    if (!idle_handles_.empty()) {
      void* h = idle_handles_.back();
      idle_handles_.pop_back();
      curl_easy_reset(static_cast<CURL*>(h));  // options cleared, the open connection kept
      return h;
    }
  }
  return curl_easy_init();
}

void S3Client::KeepHandle(void* handle) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  idle_handles_.push_back(handle);
}

absl::StatusOr<S3Client::Response> S3Client::Request(
    const std::string& method, const std::string& bucket, const std::string& key,
    const std::string& query, std::string_view body, const std::string& range,
    const std::string& what) {
  std::string url;
  const size_t scheme_end = config_.endpoint.find("://");
  if (config_.virtual_hosted && scheme_end != std::string::npos && !bucket.empty()) {
    url = absl::StrCat(config_.endpoint.substr(0, scheme_end + 3), bucket, ".",
                       config_.endpoint.substr(scheme_end + 3), "/", UriEncode(key, true));
  } else {
    url = absl::StrCat(config_.endpoint, "/", bucket, "/", UriEncode(key, true));
  }
  if (!query.empty()) absl::StrAppend(&url, "?", query);
  const std::string sigv4 = absl::StrCat("aws:amz:", config_.region, ":s3");
  const std::string userpwd = absl::StrCat(config_.access_key, ":", config_.secret_key);
  const std::string payload_hash = Sha256Hex(body);
  std::string last_error;
  for (int attempt = 0; attempt < std::max(1, config_.max_attempts); ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200 << std::min(attempt - 1, 6)));
    }
    CURL* curl = static_cast<CURL*>(TakeHandle());
    if (curl == nullptr) return absl::InternalError("libcurl: no handle");
    Response r;
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, ("x-amz-content-sha256: " + payload_hash).c_str());
    if (!config_.amz_date.empty()) {
      headers = curl_slist_append(headers, ("x-amz-date: " + config_.amz_date).c_str());
    }
    if (!config_.session_token.empty()) {
      headers =
          curl_slist_append(headers, ("x-amz-security-token: " + config_.session_token).c_str());
    }
    if (!range.empty()) headers = curl_slist_append(headers, ("Range: " + range).c_str());
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(curl, CURLOPT_USERPWD, userpwd.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.etag);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout_seconds * 1000));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (method == "HEAD") {
      curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (method != "GET") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
      if (method == "PUT" || method == "POST") {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      }
    }
    const CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_off_t length = -1;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    r.content_length = length > 0 ? static_cast<uint64_t>(length) : 0;
    curl_slist_free_all(headers);
    if (rc == CURLE_OK) {
      KeepHandle(curl);
    } else {
      curl_easy_cleanup(curl);
    }
    if (rc != CURLE_OK) {
      last_error = curl_easy_strerror(rc);
      continue;  // transport errors and timeouts are retried
    }
    bytes_sent_ += body.size();
    bytes_received_ += r.body.size();
    if (r.status >= 500 || r.status == 429) {
      last_error = absl::StrCat("HTTP ", r.status);
      continue;
    }
    if (r.status >= 300) {
      const auto code = XmlValues(r.body, "Code");
      const std::string name = code.empty() ? "" : " " + code[0];
      const std::string msg = absl::StrCat(what, ": ", r.status, name);
      if (r.status == 403) {
        return absl::PermissionDeniedError(
            absl::StrCat(msg, " (check the credentials for bucket '", bucket, "')"));
      }
      if (r.status == 404) return absl::NotFoundError(msg);
      return absl::FailedPreconditionError(msg);
    }
    return r;
  }
  return absl::UnavailableError(
      absl::StrCat(what, ": ", last_error, " after ", config_.max_attempts, " attempts"));
}

absl::Status S3Client::Put(const std::string& bucket, const std::string& key,
                           std::string_view data) {
  return Request("PUT", bucket, key, "", data, "", "PUT s3://" + bucket + "/" + key).status();
}

absl::StatusOr<std::string> S3Client::Get(const std::string& bucket, const std::string& key,
                                          std::optional<std::pair<uint64_t, uint64_t>> range) {
  std::string header;
  if (range.has_value()) {
    if (range->second <= range->first) return std::string();
    header = absl::StrCat("bytes=", range->first, "-", range->second - 1);
  }
  auto r = Request("GET", bucket, key, "", "", header, "GET s3://" + bucket + "/" + key);
  if (!r.ok()) return r.status();
  return std::move(r->body);
}

absl::StatusOr<uint64_t> S3Client::Size(const std::string& bucket, const std::string& key) {
  auto r = Request("HEAD", bucket, key, "", "", "", "HEAD s3://" + bucket + "/" + key);
  if (!r.ok()) return r.status();
  return r->content_length;
}

absl::StatusOr<std::vector<std::string>> S3Client::List(const std::string& bucket,
                                                        const std::string& prefix) {
  ASSIGN_OR_RETURN(std::vector<S3ListedObject> objects, ListObjects(bucket, prefix));
  std::vector<std::string> keys;
  for (S3ListedObject& o : objects) keys.push_back(std::move(o.key));
  return keys;
}

absl::StatusOr<std::vector<S3ListedObject>> S3Client::ListObjects(const std::string& bucket,
                                                                  const std::string& prefix) {
  std::vector<S3ListedObject> objects;
  std::string token;
  for (int page = 0; page < 100000; ++page) {
    std::map<std::string, std::string> q = {{"list-type", "2"}, {"prefix", prefix}};
    if (!token.empty()) q["continuation-token"] = token;
    auto r =
        Request("GET", bucket, "", S3QueryString(q), "", "", "LIST s3://" + bucket + "/" + prefix);
    if (!r.ok()) return r.status();
    std::vector<std::string> keys = XmlValues(r->body, "Key");
    const std::vector<std::string> sizes = XmlValues(r->body, "Size");
    std::vector<std::string> etags = XmlValues(r->body, "ETag");
    if (keys.size() != sizes.size() || keys.size() != etags.size()) {
      return absl::DataLossError(absl::StrCat("LIST s3://", bucket, "/", prefix, ": ", keys.size(),
                                              " keys but ", sizes.size(), " sizes and ",
                                              etags.size(), " ETags"));
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      uint64_t size = 0;
      if (!absl::SimpleAtoi(sizes[i], &size)) {
        return absl::DataLossError(absl::StrCat("LIST s3://", bucket, "/", prefix, ": size of ",
                                                keys[i], " is not a number"));
      }
      objects.push_back({std::move(keys[i]), size, std::move(etags[i])});
    }
    const auto truncated = XmlValues(r->body, "IsTruncated");
    const auto next = XmlValues(r->body, "NextContinuationToken");
    if (truncated.empty() || truncated[0] != "true" || next.empty()) break;
    token = next[0];
  }
  return objects;
}

absl::Status S3Client::Delete(const std::string& bucket, const std::string& key) {
  return Request("DELETE", bucket, key, "", "", "", "DELETE s3://" + bucket + "/" + key).status();
}

absl::StatusOr<std::string> S3Client::StartUpload(const std::string& bucket,
                                                  const std::string& key) {
  auto r = Request("POST", bucket, key, S3QueryString({{"uploads", ""}}), "", "",
                   "CreateMultipartUpload s3://" + bucket + "/" + key);
  if (!r.ok()) return r.status();
  const auto id = XmlValues(r->body, "UploadId");
  if (id.empty()) return absl::DataLossError("CreateMultipartUpload: no UploadId in the answer");
  return id[0];
}

absl::StatusOr<std::string> S3Client::UploadPart(const std::string& bucket, const std::string& key,
                                                 const std::string& upload_id, int part,
                                                 std::string_view data) {
  auto r = Request("PUT", bucket, key,
                   S3QueryString({{"partNumber", std::to_string(part)}, {"uploadId", upload_id}}),
                   data, "", absl::StrCat("UploadPart ", part, " s3://", bucket, "/", key));
  if (!r.ok()) return r.status();
  return r->etag;
}

absl::Status S3Client::CompleteUpload(const std::string& bucket, const std::string& key,
                                      const std::string& upload_id,
                                      const std::vector<std::string>& etags) {
  std::string xml = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags.size(); ++i) {
    absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>", etags[i],
                    "</ETag></Part>");
  }
  xml += "</CompleteMultipartUpload>";
  return Request("POST", bucket, key, S3QueryString({{"uploadId", upload_id}}), xml, "",
                 "CompleteMultipartUpload s3://" + bucket + "/" + key)
      .status();
}

absl::Status S3Client::AbortUpload(const std::string& bucket, const std::string& key,
                                   const std::string& upload_id) {
  return Request("DELETE", bucket, key, S3QueryString({{"uploadId", upload_id}}), "", "",
                 "AbortMultipartUpload s3://" + bucket + "/" + key)
      .status();
}

absl::Status S3Client::PutMultipart(const std::string& bucket, const std::string& key,
                                    std::string_view data, uint64_t part_bytes) {
  if (part_bytes < (5ull << 20)) {
    return absl::InvalidArgumentError("multipart parts must be at least 5 MiB");
  }
  auto id = StartUpload(bucket, key);
  if (!id.ok()) return id.status();
  std::vector<std::string> etags;
  absl::Status status;
  for (uint64_t off = 0; off < data.size() || off == 0; off += part_bytes) {
    auto etag = UploadPart(bucket, key, *id, static_cast<int>(etags.size() + 1),
                           data.substr(off, part_bytes));
    if (!etag.ok()) {
      status = etag.status();
      break;
    }
    etags.push_back(*etag);
    if (data.empty()) break;
  }
  if (status.ok()) status = CompleteUpload(bucket, key, *id, etags);
  if (!status.ok()) {
    (void)AbortUpload(bucket, key, *id);  // no parts left behind; the first error is reported
  }
  return status;
}

}  // namespace quant::storage
