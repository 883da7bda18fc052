#include "proto/tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace quant::tls {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in || ss.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": unreadable or not a PEM file"));
  }
  return ss.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const Files& files) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  if (files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError("TLS: the server needs both --tls-cert and --tls-key");
  }
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto key = ReadPem(files.key, "--tls-key");
  if (!key.ok()) return key.status();
  auto cert = ReadPem(files.cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  pair.private_key = *key;
  pair.cert_chain = *cert;
  options.pem_key_cert_pairs.push_back(pair);
  if (!files.ca.empty()) {
    auto ca = ReadPem(files.ca, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const Files& files) {
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("TLS: --tls-cert and --tls-key go together");
  }
  grpc::SslCredentialsOptions options;
  if (!files.ca.empty()) {
    auto ca = ReadPem(files.ca, "--tls-ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  if (!files.cert.empty()) {
    auto key = ReadPem(files.key, "--tls-key");
    if (!key.ok()) return key.status();
    auto cert = ReadPem(files.cert, "--tls-cert");
    if (!cert.ok()) return cert.status();
    options.pem_private_key = *key;
    options.pem_cert_chain = *cert;
  }
  return grpc::SslCredentials(options);
}

}  // namespace quant::tls
