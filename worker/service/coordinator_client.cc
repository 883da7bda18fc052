// GrpcCoordinatorClient: the Workers stub behind CoordinatorClient (see coordinator_client.h).
#include "worker/service/coordinator_client.h"

#include <chrono>

#include "proto/grpc_status.h"

namespace quant::worker {
namespace {

// One call: the response, or the gRPC status as an absl::Status.
template <typename Resp, typename Call>
absl::StatusOr<Resp> Invoke(Call call) {
  Resp resp;
  const grpc::Status s = call(&resp);
  if (!s.ok()) return FromGrpc(s);
  return resp;
}

}  // namespace

GrpcCoordinatorClient::GrpcCoordinatorClient(std::shared_ptr<grpc::Channel> channel,
                                             std::string token)
    : stub_(v1::Workers::NewStub(std::move(channel))), token_(std::move(token)) {}

std::unique_ptr<grpc::ClientContext> GrpcCoordinatorClient::Context(double seconds) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

absl::StatusOr<v1::RegisterResponse> GrpcCoordinatorClient::Register(
    const v1::RegisterRequest& req) {
  return Invoke<v1::RegisterResponse>(
      [&](v1::RegisterResponse* resp) { return stub_->Register(Context(10).get(), req, resp); });
}

absl::StatusOr<v1::LeaseResponse> GrpcCoordinatorClient::Lease(const v1::LeaseRequest& req) {
  return Invoke<v1::LeaseResponse>(
      [&](v1::LeaseResponse* resp) { return stub_->Lease(Context(10).get(), req, resp); });
}

absl::StatusOr<v1::HeartbeatResponse> GrpcCoordinatorClient::Heartbeat(
    const v1::HeartbeatRequest& req) {
  return Invoke<v1::HeartbeatResponse>(
      [&](v1::HeartbeatResponse* resp) { return stub_->Heartbeat(Context(10).get(), req, resp); });
}

absl::StatusOr<v1::CompleteResponse> GrpcCoordinatorClient::Complete(
    const v1::CompleteRequest& req) {
  return Invoke<v1::CompleteResponse>(
      [&](v1::CompleteResponse* resp) { return stub_->Complete(Context(60).get(), req, resp); });
}

absl::Status GrpcCoordinatorClient::StoreSet(const v1::StoreRequest& req) {
  v1::StoreResponse resp;
  return FromGrpc(stub_->StoreSet(Context(10).get(), req, &resp));
}

absl::StatusOr<v1::StoreResponse> GrpcCoordinatorClient::StoreGet(const v1::StoreRequest& req) {
  return Invoke<v1::StoreResponse>(
      [&](v1::StoreResponse* resp) { return stub_->StoreGet(Context(10).get(), req, resp); });
}

}  // namespace quant::worker
