// The one place that converts between absl::Status (every component's expected-failure channel,
// STYLE.md 3) and grpc::Status (the wire): the coordinator's handlers on the way out, the
// worker's coordinator client on the way in.
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace quant {

// OK stays OK; the codes the service uses map one to one; any other code becomes INTERNAL.
grpc::Status ToGrpc(const absl::Status& status);

// The inverse, for a call's result on the client side: the same code where absl has it (every
// gRPC code does), the server's message unchanged.
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace quant
