// The worker's side of the Workers service (proto/quant.proto), as an interface: the worker loop
// talks to the coordinator only through it, so its logic is unit-tested against
// FakeCoordinatorClient (fake_coordinator_client.h) with no network; the real binaries meet over
// gRPC in the integration tests. Errors come back as absl::Status with gRPC's code and the
// coordinator's message (proto/grpc_status.h).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/quant.grpc.pb.h"

namespace quant::worker {

class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;
  virtual absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& req) = 0;
  // A long poll on the coordinator's side (about 2 s).
  virtual absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& req) = 0;
  virtual absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req) = 0;
  virtual absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& req) = 0;
  // The gang's rendezvous store.
  virtual absl::Status StoreSet(const v1::StoreRequest& req) = 0;
  virtual absl::StatusOr<v1::StoreResponse> StoreGet(const v1::StoreRequest& req) = 0;
};

// Over a gRPC channel; every call carries `token` (the worker token, "": none) and a deadline
// (10 s, 60 s for Complete, whose commit renames and fsyncs).
class GrpcCoordinatorClient final : public CoordinatorClient {
 public:
  GrpcCoordinatorClient(std::shared_ptr<grpc::Channel> channel, std::string token);
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& req) override;
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest& req) override;
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req) override;
  absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& req) override;
  absl::Status StoreSet(const v1::StoreRequest& req) override;
  absl::StatusOr<v1::StoreResponse> StoreGet(const v1::StoreRequest& req) override;

 private:
  std::unique_ptr<grpc::ClientContext> Context(double seconds) const;
  std::unique_ptr<v1::Workers::Stub> stub_;
  const std::string token_;
};

}  // namespace quant::worker
