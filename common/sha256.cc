#include "common/sha256.h"

#include <openssl/evp.h>

#include "absl/strings/str_format.h"
#include "common/status.h"

namespace quant {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  QUANT_CHECK(ctx_ != nullptr && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1);
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t n) {
  QUANT_CHECK(EVP_DigestUpdate(ctx_, data, n) == 1);
}

std::string Sha256::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  QUANT_CHECK(EVP_DigestFinal_ex(ctx_, md, &len) == 1 && len == 32);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", md[i]);
  return hex;
}

std::string Sha256Hex(std::string_view bytes) {
  Sha256 sha;
  sha.Update(bytes);
  return sha.HexDigest();
}

}  // namespace quant
