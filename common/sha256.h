// SHA-256 (OpenSSL EVP), the project's one implementation: checkpoint manifests, the job
// fingerprint, S3 payload hashes. (Tests check our hashes with their own, tests/sha256_hex.h.)
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace quant {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t n);
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // Lowercase hex of the digest; ends the hash (call once).
  std::string HexDigest();

 private:
  evp_md_ctx_st* ctx_;
};

std::string Sha256Hex(std::string_view bytes);

}  // namespace quant
