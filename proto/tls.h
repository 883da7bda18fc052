// TLS and mutual TLS for every gRPC channel of the service (issue 12): certificates from PEM
// files. The coordinator serves TLS with its certificate and, given a client CA, requires and
// verifies a client certificate signed by it (mTLS); qctl and quant-worker verify the
// coordinator against a CA and present their own certificate when asked. Without files,
// channels are plaintext (loopback and tests).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace quant::tls {

struct Files {
  std::string ca;    // CA that signed the peer's certificate (server: the clients' CA -> mTLS)
  std::string cert;  // this side's certificate chain
  std::string key;   // its private key
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// Server credentials: cert and key required; with `ca`, client certificates are required and
// verified. Insecure credentials when nothing is given. One error line naming a bad file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const Files& files);
// Channel credentials: `ca` verifies the server; cert and key (both or neither) are presented
// for mTLS. Insecure credentials when nothing is given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const Files& files);

}  // namespace quant::tls
