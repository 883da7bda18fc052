// Thin gRPC handlers over the coordinator's managers (see coordinator_service.h).
#include "coordinator/service/coordinator_service.h"

#include <openssl/crypto.h>

#include "absl/strings/str_cat.h"
#include "common/exceptions.h"
#include "common/metrics.h"
#include "job/job_spec.h"
#include "proto/grpc_status.h"

namespace quant::coordinator {
namespace {

// What escapes a handler (std::bad_alloc above all) as a status naming the RPC, rather than
// gRPC's own "Unexpected error in RPC handling". Call only inside a catch block.
grpc::Status ExceptionToGrpc(const char* rpc) {
  return ToGrpc(CurrentExceptionStatus(absl::StrCat("coordinator: ", rpc)));
}

absl::Status CheckProtocol(uint32_t protocol) {
  if (protocol != static_cast<uint32_t>(v1::PROTOCOL_VERSION)) {
    return absl::FailedPreconditionError(
        absl::StrCat("protocol version ", protocol, " is not this coordinator's ",
                     static_cast<int>(v1::PROTOCOL_VERSION), ": upgrade the client or the worker"));
  }
  return absl::OkStatus();
}

// Whether the call carries "authorization: Bearer <token>" (compared in constant time).
bool HasBearer(grpc::ServerContext* ctx, const std::string& token) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  const std::string expected = "Bearer " + token;
  return it != md.end() && it->second.size() == expected.size() &&
         CRYPTO_memcmp(it->second.data(), expected.data(), expected.size()) == 0;
}

}  // namespace

// Returns the converted status from a handler when `expr` is not OK.
#define RETURN_IF_ERROR_GRPC(expr)                                            \
  do {                                                                        \
    if (absl::Status status_ = (expr); !status_.ok()) return ToGrpc(status_); \
  } while (0)

CoordinatorService::CoordinatorService(StateStore* state, ServiceOptions options,
                                       std::unique_ptr<Clock> clock)
    : options_(std::move(options)),
      clock_(clock ? std::move(clock) : std::make_unique<SystemClock>()),
      log_(clock_.get(), options_.max_log_lines),
      rendezvous_(state, options_),
      jobs_(state, &log_, clock_.get(), options_),
      leases_(state, &jobs_, &rendezvous_, &log_, clock_.get(), options_) {}

absl::Status CoordinatorService::CheckToken(grpc::ServerContext* ctx) const {
  if (options_.token.empty() || HasBearer(ctx, options_.token)) return absl::OkStatus();
  return absl::UnauthenticatedError("a valid bearer token is required (authorization: Bearer ...)");
}

absl::Status CoordinatorService::CheckWorker(grpc::ServerContext* ctx,
                                             const std::string& worker_id) const {
  bool authenticated = options_.worker_token.empty() && options_.worker_cert_cn.empty();
  if (!authenticated && !options_.worker_token.empty()) {
    authenticated = HasBearer(ctx, options_.worker_token);
  }
  if (!authenticated && !options_.worker_cert_cn.empty()) {
    // Set by gRPC only for a verified client certificate (the server requires mTLS then).
    const std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      authenticated = authenticated ||
                      std::string_view(cn.data(), cn.size()).starts_with(options_.worker_cert_cn);
    }
  }
  if (!authenticated) {
    return absl::UnauthenticatedError(
        "workers must authenticate: a worker token (authorization: Bearer ...) or a worker "
        "client certificate");
  }
  if (worker_id.empty() || worker_id.size() > 128 || worker_id.find(',') != std::string::npos ||
      tasks::HasControlCharacter(worker_id)) {
    return absl::InvalidArgumentError(
        "worker_id: required, at most 128 bytes, no commas or control characters");
  }
  return absl::OkStatus();
}

// Every handler: checks, one manager call, one conversion; an exception becomes a status.

grpc::Status CoordinatorService::Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                                        v1::SubmitResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckToken(ctx));
  return ToGrpc(
      jobs_.Submit(req->job().client_job_id(), req->job().spec_json(), req->dry_run(), resp));
} catch (...) {
  return ExceptionToGrpc("Submit");
}

grpc::Status CoordinatorService::Status(grpc::ServerContext*, const v1::JobRequest* req,
                                        v1::JobStatus* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  return ToGrpc(jobs_.Status(req->job_id(), /*with_tasks=*/true, resp));
} catch (...) {
  return ExceptionToGrpc("Status");
}

grpc::Status CoordinatorService::Watch(grpc::ServerContext* ctx, const v1::JobRequest* req,
                                       grpc::ServerWriter<v1::JobStatus>* writer) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  return ToGrpc(jobs_.Watch(
      req->job_id(), [ctx] { return ctx->IsCancelled(); },
      [writer](const v1::JobStatus& st) { return writer->Write(st); }));
} catch (...) {
  return ExceptionToGrpc("Watch");
}

grpc::Status CoordinatorService::List(grpc::ServerContext*, const v1::ListRequest* req,
                                      v1::ListResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  return ToGrpc(jobs_.List(resp));
} catch (...) {
  return ExceptionToGrpc("List");
}

grpc::Status CoordinatorService::Cancel(grpc::ServerContext* ctx, const v1::JobRequest* req,
                                        v1::CancelResponse*) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckToken(ctx));
  return ToGrpc(jobs_.Cancel(req->job_id()));
} catch (...) {
  return ExceptionToGrpc("Cancel");
}

grpc::Status CoordinatorService::Logs(grpc::ServerContext*, const v1::JobRequest* req,
                                      v1::LogsResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  return ToGrpc(jobs_.Logs(req->job_id(), resp));
} catch (...) {
  return ExceptionToGrpc("Logs");
}

grpc::Status CoordinatorService::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                          v1::RegisterResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckWorker(ctx, req->worker_id()));
  *resp = leases_.Register(req->worker_id());
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("Register");
}

grpc::Status CoordinatorService::Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                       v1::LeaseResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckWorker(ctx, req->worker_id()));
  return ToGrpc(leases_.Lease(
      req->worker_id(), [ctx] { return ctx->IsCancelled(); }, resp));
} catch (...) {
  return ExceptionToGrpc("Lease");
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* ctx,
                                           const v1::HeartbeatRequest* req,
                                           v1::HeartbeatResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckWorker(ctx, req->worker_id()));
  leases_.Heartbeat(*req, resp);
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("Heartbeat");
}

grpc::Status CoordinatorService::Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* req,
                                          v1::CompleteResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckWorker(ctx, req->worker_id()));
  return ToGrpc(leases_.Complete(*req, resp));
} catch (...) {
  return ExceptionToGrpc("Complete");
}

grpc::Status CoordinatorService::StoreSet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                                          v1::StoreResponse*) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckWorker(ctx, req->worker_id()));
  return ToGrpc(rendezvous_.Set(req->worker_id(), req->key(), req->value()));
} catch (...) {
  return ExceptionToGrpc("StoreSet");
}

grpc::Status CoordinatorService::StoreGet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                                          v1::StoreResponse* resp) try {
  RETURN_IF_ERROR_GRPC(CheckProtocol(req->protocol()));
  RETURN_IF_ERROR_GRPC(CheckWorker(ctx, req->worker_id()));
  absl::StatusOr<std::optional<std::string>> value = rendezvous_.Get(req->worker_id(), req->key());
  if (!value.ok()) return ToGrpc(value.status());
  resp->set_found(value->has_value());
  if (value->has_value()) resp->set_value(**value);
  return grpc::Status::OK;
} catch (...) {
  return ExceptionToGrpc("StoreGet");
}

void CoordinatorService::RefreshGauges() {
  jobs_.RefreshGauges();
  metrics::Default()
      .GetGauge("quant_workers", "Workers heard from within one lease period.")
      .Set(leases_.LiveWorkers());
}

void CoordinatorService::SweepEndedJobs() { jobs_.SweepEndedJobs(); }

void CoordinatorService::RunCoordinatorTasks() { jobs_.RunCoordinatorTasks(); }

}  // namespace quant::coordinator
