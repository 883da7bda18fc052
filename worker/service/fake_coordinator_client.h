// A CoordinatorClient in memory for unit tests of the worker loop (STYLE.md 5): leases come from
// a queue the test fills, every request is recorded, heartbeats can revoke, and the rendezvous
// store is a map. Thread-safe: the loop heartbeats from its own thread. It never replaces the
// real coordinator in the integration tests.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "worker/service/coordinator_client.h"

namespace quant::worker {

class FakeCoordinatorClient final : public CoordinatorClient {
 public:
  // What Register answers with (the heartbeat period: short, so tests see heartbeats quickly).
  v1::RegisterResponse registered;
  FakeCoordinatorClient() {
    registered.set_lease_seconds(1);
    registered.set_heartbeat_seconds(0.02);
  }

  // The next Lease answers with `lease` (FIFO); an empty queue answers "none, retry soon".
  void AddLease(const v1::TaskLease& lease) {
    std::lock_guard<std::mutex> lock(mu_);
    leases_.push_back(lease);
  }
  // From now on every heartbeat naming `task_id` answers that its lease is revoked.
  void Revoke(int64_t task_id) {
    std::lock_guard<std::mutex> lock(mu_);
    revoked_.insert(task_id);
  }
  // The next `n` Register calls answer Unavailable (a coordinator still starting).
  void set_unavailable_registers(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    unavailable_registers_ = n;
  }
  // Whether Complete answers committed (when the attempt succeeded).
  void set_commit(bool commit) {
    std::lock_guard<std::mutex> lock(mu_);
    commit_ = commit;
  }

  std::vector<v1::RegisterRequest> registers() const { return Locked(registers_); }
  std::vector<v1::HeartbeatRequest> heartbeats() const { return Locked(heartbeats_); }
  std::vector<v1::CompleteRequest> completions() const { return Locked(completions_); }
  int leases_asked() const {
    std::lock_guard<std::mutex> lock(mu_);
    return leases_asked_;
  }

  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& req) override {
    std::lock_guard<std::mutex> lock(mu_);
    registers_.push_back(req);
    if (unavailable_registers_ > 0) {
      --unavailable_registers_;
      return absl::UnavailableError("connection refused");
    }
    return registered;
  }
  absl::StatusOr<v1::LeaseResponse> Lease(const v1::LeaseRequest&) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++leases_asked_;
    v1::LeaseResponse resp;
    if (leases_.empty()) {
      resp.set_retry_after_seconds(0.01);
    } else {
      *resp.mutable_task() = leases_.front();
      leases_.pop_front();
    }
    return resp;
  }
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req) override {
    std::lock_guard<std::mutex> lock(mu_);
    heartbeats_.push_back(req);
    v1::HeartbeatResponse resp;
    for (const v1::TaskLease& held : req.held()) {
      if (revoked_.count(held.task_id())) resp.add_revoked_task_ids(held.task_id());
    }
    return resp;
  }
  absl::StatusOr<v1::CompleteResponse> Complete(const v1::CompleteRequest& req) override {
    std::lock_guard<std::mutex> lock(mu_);
    completions_.push_back(req);
    v1::CompleteResponse resp;
    resp.set_committed(req.ok() && commit_);
    return resp;
  }
  absl::Status StoreSet(const v1::StoreRequest& req) override {
    std::lock_guard<std::mutex> lock(mu_);
    store_[req.key()] = req.value();
    return absl::OkStatus();
  }
  absl::StatusOr<v1::StoreResponse> StoreGet(const v1::StoreRequest& req) override {
    std::lock_guard<std::mutex> lock(mu_);
    v1::StoreResponse resp;
    auto it = store_.find(req.key());
    resp.set_found(it != store_.end());
    if (it != store_.end()) resp.set_value(it->second);
    return resp;
  }

 private:
  template <typename T>
  std::vector<T> Locked(const std::vector<T>& v) const {
    std::lock_guard<std::mutex> lock(mu_);
    return v;
  }
  mutable std::mutex mu_;
  std::deque<v1::TaskLease> leases_;
  std::set<int64_t> revoked_;
  bool commit_ = true;
  int leases_asked_ = 0;
  int unavailable_registers_ = 0;
  std::vector<v1::RegisterRequest> registers_;
  std::vector<v1::HeartbeatRequest> heartbeats_;
  std::vector<v1::CompleteRequest> completions_;
  std::map<std::string, std::string> store_;
};

}  // namespace quant::worker
