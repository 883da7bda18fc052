// The coordinator's gRPC services (proto/quant.proto) as thin handlers over its managers: qctl
// submits, watches and cancels jobs (JobManager); workers register, lease tasks, heartbeat and
// complete them (LeaseManager) and meet their gang (RendezvousStore); JobLog keeps the jobs'
// logs and wakes Watch. A handler checks the protocol version and the caller (Submit and Cancel
// need the bearer token when one is configured, every Workers call a worker credential; both
// compared in constant time), calls one manager, and converts its absl::Status at the end
// (proto/grpc_status.h); no exception leaves a handler.
//
// Ownership and locking: the service owns the clock and the managers; they share the one state
// store (owned by the caller, coordinator/state: its calls are serialised by its own mutex and
// each is one transaction) and call each other in one direction only: LeaseManager calls
// JobManager, RendezvousStore, JobLog and the store; JobManager calls JobLog and the store;
// RendezvousStore the store; JobLog nothing. Each guards its in-memory tables with its own
// mutex. Only LeaseManager calls out while holding its lock (lease_mu_, so that a lease cannot
// change hands between a completion's epoch check and its commit), and only downward: locks are
// always taken in that order and cannot deadlock. No process-global lock.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "coordinator/service/clock.h"
#include "coordinator/service/job_log.h"
#include "coordinator/service/job_manager.h"
#include "coordinator/service/lease_manager.h"
#include "coordinator/service/rendezvous_store.h"
#include "coordinator/service/service_options.h"
#include "coordinator/state/state_store.h"
#include "proto/quant.grpc.pb.h"

namespace quant::coordinator {

class CoordinatorService final : public v1::Jobs::Service, public v1::Workers::Service {
 public:
  // `clock`: nullptr is the system clock.
  CoordinatorService(StateStore* state, ServiceOptions options,
                     std::unique_ptr<Clock> clock = nullptr);

  grpc::Status Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                      v1::SubmitResponse* resp) override;
  grpc::Status Status(grpc::ServerContext* ctx, const v1::JobRequest* req,
                      v1::JobStatus* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListRequest* req,
                    v1::ListResponse* resp) override;
  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::JobRequest* req,
                      v1::CancelResponse* resp) override;
  // A JobStatus (tasks included) now and on every change of the done count, the leased tasks or
  // the state, until the job ends or the client goes away.
  grpc::Status Watch(grpc::ServerContext* ctx, const v1::JobRequest* req,
                     grpc::ServerWriter<v1::JobStatus>* writer) override;
  // The job's log: submission, leases, completions and failures (with the workers' errors),
  // gang formations, commits. Kept in memory, the last max_log_lines per job.
  grpc::Status Logs(grpc::ServerContext* ctx, const v1::JobRequest* req,
                    v1::LogsResponse* resp) override;

  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Lease(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                     v1::LeaseResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const v1::CompleteRequest* req,
                        v1::CompleteResponse* resp) override;
  grpc::Status StoreSet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                        v1::StoreResponse* resp) override;
  grpc::Status StoreGet(grpc::ServerContext* ctx, const v1::StoreRequest* req,
                        v1::StoreResponse* resp) override;

  // Sets the gauges of jobs and tasks by state and of live workers (before each scrape).
  void RefreshGauges();

  // Removes what ended jobs leave behind (JobManager::SweepEndedJobs). Called at start-up and
  // every few seconds from Lease: jobs also end by lease expiry.
  void SweepEndedJobs();
  // Runs the coordinator's own tasks that are ready (JobManager::RunCoordinatorTasks): at
  // start-up, a solve whose probes all committed before a restart; later the last probe's
  // commit starts it.
  void RunCoordinatorTasks();

 private:
  // Bearer token of Submit and Cancel.
  absl::Status CheckToken(grpc::ServerContext* ctx) const;
  // Authenticates a Workers call (worker token or worker certificate) and checks `worker_id`'s
  // form (1-128 bytes, printable, no commas).
  absl::Status CheckWorker(grpc::ServerContext* ctx, const std::string& worker_id) const;

  const ServiceOptions options_;
  const std::unique_ptr<Clock> clock_;
  JobLog log_;
  RendezvousStore rendezvous_;
  JobManager jobs_;
  LeaseManager leases_;
};

}  // namespace quant::coordinator
