// SHA-256 of a byte string as lowercase hex, for tests that check manifests and downloads
// (OpenSSL, independent of the exporter's own hashing). Link OpenSSL::Crypto.
#pragma once

#include <openssl/evp.h>

#include <cstdio>
#include <string>

namespace quant::testing {

inline std::string Sha256Hex(const std::string& bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", md[i]);
    hex += buf;
  }
  return hex;
}

}  // namespace quant::testing
