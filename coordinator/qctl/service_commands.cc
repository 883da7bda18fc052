// qctl's client side of the service: submit (the same job options as `quantize`, plus
// --dry-run), status, list, cancel and watch, over gRPC to quant-coordinator. The coordinator is
// --coordinator HOST:PORT or $QUANT_COORDINATOR; the bearer token for submit and cancel comes from
// --token-file or $QUANT_TOKEN_FILE. Every failure is one "qctl: error:" line and exit 1.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "coordinator/qctl/commands.h"
#include "proto/quant.grpc.pb.h"
#include "proto/tls.h"
#include "storage/object_store.h"
#include "job/job_spec.h"

namespace quant::qctl {
namespace {

constexpr uint32_t kProtocol = v1::PROTOCOL_VERSION;

struct Connection {
  std::string address;
  std::string token_file;
  tls::Files tls;
};

void AddConnectionOptions(CLI::App* sub, Connection* c) {
  const char* env = std::getenv("QUANT_COORDINATOR");
  c->address = env != nullptr && *env != 0 ? env : "127.0.0.1:7070";
  const char* token = std::getenv("QUANT_TOKEN_FILE");
  c->token_file = token != nullptr ? token : "";
  sub->add_option("--coordinator", c->address, "quant-coordinator HOST:PORT")
      ->capture_default_str();
  sub->add_option("--token-file", c->token_file, "bearer token file (submit, cancel)");
  auto env_or = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr ? std::string(v) : std::string();
  };
  c->tls.ca = env_or("QUANT_TLS_CA");
  c->tls.cert = env_or("QUANT_TLS_CERT");
  c->tls.key = env_or("QUANT_TLS_KEY");
  sub->add_option("--tls-ca", c->tls.ca, "PEM CA that signed the coordinator's certificate");
  sub->add_option("--tls-cert", c->tls.cert, "PEM client certificate (mTLS)");
  sub->add_option("--tls-key", c->tls.key, "PEM private key of --tls-cert");
}

std::unique_ptr<grpc::ClientContext> Context(const Connection& c, bool auth, std::string* error) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (auth && !c.token_file.empty()) {
    std::ifstream in(c.token_file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string token = ss.str();
    while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) token.pop_back();
    if (!in || token.empty()) {
      *error = absl::StrFormat("--token-file %s: empty or unreadable", c.token_file);
      return nullptr;
    }
    ctx->AddMetadata("authorization", "Bearer " + token);
  }
  return ctx;
}

int Fail(const Connection& c, const grpc::Status& s) {
  PrintError(absl::StrFormat("coordinator %s: %s", c.address, s.error_message().empty()
                                                                  ? "unreachable"
                                                                  : s.error_message()));
  return 1;
}

const char* StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_RUNNING: return "running";
    case v1::JOB_SUCCEEDED: return "succeeded";
    case v1::JOB_FAILED: return "failed";
    case v1::JOB_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

// A stub over TLS when the connection names certificates; a bad file is one error line, exit 1.
std::unique_ptr<v1::Jobs::Stub> Stub(const Connection& c) {
  auto credentials = tls::ChannelCredentials(c.tls);
  if (!credentials.ok()) {
    PrintError(std::string(credentials.status().message()));
    std::exit(1);
  }
  return v1::Jobs::NewStub(grpc::CreateChannel(c.address, *credentials));
}

void PrintStatus(const v1::JobStatus& st, bool tasks) {
  std::printf("job %lld (%s): %s, %lld/%lld tasks done%s%s\n",
              static_cast<long long>(st.job_id()), st.client_job_id().c_str(),
              StateName(st.state()), static_cast<long long>(st.tasks_done()),
              static_cast<long long>(st.tasks_total()), st.error().empty() ? "" : ": ",
              st.error().c_str());
  if (st.has_slq()) {
    // SLQ: the coordinator's solve, then the bits of each unit.
    const v1::SlqAllocation& a = st.slq();
    std::printf("  SLQ %s: average %.3f bits, predicted KL %.4f, EAR %.4f (%lld probes)\n",
                a.mode().c_str(), a.average_bits(), a.predicted_kl(), a.predicted_ear(),
                static_cast<long long>(a.probes_run()));
    if (tasks) {
      const std::map<std::string, int> sorted(a.unit_bits().begin(), a.unit_bits().end());
      for (const auto& [unit, bits] : sorted) std::printf("    %-44s %d bits\n", unit.c_str(), bits);
    }
  }
  if (!tasks) return;
  for (const v1::TaskStatus& t : st.tasks()) {
    std::printf("  %-24s %-8s epoch %lld, %d failed attempts%s%s\n", t.name().c_str(),
                t.state().c_str(), static_cast<long long>(t.epoch()), t.attempts(),
                t.worker().empty() ? "" : (", on " + t.worker()).c_str(),
                t.last_error().empty() ? "" : ("; last error: " + t.last_error()).c_str());
  }
}

// "L1/gsq on w0: phase gsq, layer 1, step 27/40, loss 0.005925, 12.3 s, ETA task 5 s".
std::string ProgressLine(const v1::TaskStatus& t) {
  const v1::TaskProgress& p = t.progress();
  std::string line = absl::StrFormat("%s on %s: phase %s", t.name(), p.worker(), p.phase());
  if (p.layer() >= 0) line += absl::StrFormat(", layer %d", p.layer());
  if (p.steps() > 0) {
    line += absl::StrFormat(", step %d/%d, loss %.6g", p.step(), p.steps(), p.loss());
  }
  line += absl::StrFormat(", %.1f s", p.seconds());
  if (p.eta_task_s() >= 0) line += absl::StrFormat(", ETA task %.0f s", p.eta_task_s());
  return line;
}

// One JSON object per watched status (qctl watch --json).
nlohmann::json WatchJson(const v1::JobStatus& st) {
  nlohmann::json j = {{"job", st.job_id()},
                      {"client_job_id", st.client_job_id()},
                      {"state", StateName(st.state())},
                      {"tasks_done", st.tasks_done()},
                      {"tasks_total", st.tasks_total()},
                      {"eta_job_s", st.eta_seconds()}};
  if (!st.error().empty()) j["error"] = st.error();
  if (st.has_slq()) {
    j["slq"] = {{"mode", st.slq().mode()},
                {"average_bits", st.slq().average_bits()},
                {"predicted_kl", st.slq().predicted_kl()},
                {"predicted_ear", st.slq().predicted_ear()}};
  }
  nlohmann::json running = nlohmann::json::array();
  for (const v1::TaskStatus& t : st.tasks()) {
    if (t.state() != "leased") continue;
    nlohmann::json r = {{"task", t.name()}, {"worker", t.worker()}, {"layer", t.layer()}};
    if (t.has_progress()) {
      const v1::TaskProgress& p = t.progress();
      r["phase"] = p.phase();
      r["seconds"] = p.seconds();
      r["eta_task_s"] = p.eta_task_s();
      if (p.steps() > 0) {
        r["step"] = p.step();
        r["steps"] = p.steps();
        r["loss"] = p.loss();
      }
    }
    running.push_back(std::move(r));
  }
  j["running"] = std::move(running);
  return j;
}

}  // namespace

void AddServiceCommands(CLI::App& app, std::map<CLI::App*, Runner>* runners) {
  // submit
  {
    auto spec = std::make_shared<tasks::QuantizeJobSpec>();
    auto choices = std::make_shared<tasks::SpecChoices>();
    auto no_eval = std::make_shared<bool>(false);
    auto no_fallback = std::make_shared<bool>(false);
    auto bits = std::make_shared<double>(4);
    auto conn = std::make_shared<Connection>();
    auto job_id = std::make_shared<std::string>();
    auto dry_run = std::make_shared<bool>(false);
    CLI::App* sub = app.add_subcommand("submit", "Submit a quantize job to quant-coordinator");
    AddJobOptions(sub, spec.get(), choices.get(), no_eval.get(), no_fallback.get(), bits.get());
    AddConnectionOptions(sub, conn.get());
    sub->add_option("--job-id", *job_id,
                    "client job id (default: derived from the options, so a resubmission of the "
                    "same command is the same job)");
    sub->add_flag("--dry-run", *dry_run, "preflight estimate only: nothing is created");
    (*runners)[sub] = [=]() {
      if (absl::Status s = FinishJobOptions(*spec, *choices, *no_eval, *no_fallback, *bits);
          !s.ok()) {
        PrintError(std::string(s.message()));
        return 1;
      }
      // The coordinator and the workers run elsewhere: local paths go out absolute, as this
      // shell means them (the coordinator refuses relative ones).
      for (std::string* path : {&spec->model_dir, &spec->out_dir, &spec->calib_path,
                                &spec->eval_text, &spec->slq_allocation}) {
        if (!path->empty() && !storage::IsS3Location(*path)) {
          *path = std::filesystem::absolute(*path).lexically_normal().string();
        }
      }
      const nlohmann::json j = tasks::ServiceJson(*spec);
      v1::SubmitRequest req;
      req.set_protocol(kProtocol);
      req.set_dry_run(*dry_run);
      req.mutable_job()->set_spec_json(j.dump());
      req.mutable_job()->set_client_job_id(
          job_id->empty() ? absl::StrFormat("job-%016x", std::hash<std::string>{}(j.dump()))
                          : *job_id);
      std::string error;
      auto ctx = Context(*conn, /*auth=*/true, &error);
      if (!ctx) {
        PrintError(error);
        return 1;
      }
      v1::SubmitResponse resp;
      const grpc::Status s = Stub(*conn)->Submit(ctx.get(), req, &resp);
      if (!s.ok()) return Fail(*conn, s);
      const v1::Estimate& e = resp.estimate();
      constexpr double kGiB = 1073741824.0;
      std::printf("estimate   %.2f GiB memory per worker (peak: %s), %.2f GiB checkpoint, "
                  "%.2f GiB scratch\n",
                  e.worker_memory_bytes() / kGiB, e.peak_task().c_str(), e.storage_bytes() / kGiB,
                  e.scratch_bytes() / kGiB);
      if (e.gsq_tflop_per_worker() > 0) {
        std::printf("           GSQ %.1f TFLOP per worker: ~%.0f s at an assumed %.2f TFLOP/s\n",
                    e.gsq_tflop_per_worker(), e.seconds_per_worker(), e.assumed_tflops());
      }
      if (*dry_run) return 0;
      std::printf("job %lld (%s)%s\n", static_cast<long long>(resp.job_id()),
                  req.job().client_job_id().c_str(),
                  resp.existing() ? ": already submitted, the same job" : " submitted");
      return 0;
    };
  }
  // status, cancel, watch, logs: one job id each
  for (const char* name : {"status", "cancel", "watch", "logs"}) {
    auto conn = std::make_shared<Connection>();
    auto id = std::make_shared<int64_t>(0);
    const std::string cmd = name;
    CLI::App* sub = app.add_subcommand(
        cmd, cmd == "status"   ? "A job's state and its tasks"
             : cmd == "cancel" ? "Cancel a running job"
             : cmd == "logs"   ? "The coordinator's log of a job: leases, completions, failures"
                               : "Follow a job until it ends");
    sub->add_option("job", *id, "job id")->required();
    AddConnectionOptions(sub, conn.get());
    auto json = std::make_shared<bool>(false);
    if (cmd == "watch") {
      sub->add_flag("--json", *json,
                    "one JSON object per change: the job's state, tasks done, ETA, and each "
                    "running task's progress (phase, layer, step, loss, seconds, ETA)");
    }
    (*runners)[sub] = [=]() {
      v1::JobRequest req;
      req.set_protocol(kProtocol);
      req.set_job_id(*id);
      std::string error;
      if (cmd == "cancel") {
        auto ctx = Context(*conn, /*auth=*/true, &error);
        if (!ctx) {
          PrintError(error);
          return 1;
        }
        v1::CancelResponse resp;
        const grpc::Status s = Stub(*conn)->Cancel(ctx.get(), req, &resp);
        if (!s.ok()) return Fail(*conn, s);
        std::printf("job %lld cancelled\n", static_cast<long long>(*id));
        return 0;
      }
      auto ctx = Context(*conn, /*auth=*/false, &error);
      if (cmd == "logs") {
        v1::LogsResponse logs;
        const grpc::Status s = Stub(*conn)->Logs(ctx.get(), req, &logs);
        if (!s.ok()) return Fail(*conn, s);
        for (const v1::LogLine& l : logs.lines()) {
          const auto t = static_cast<std::time_t>(l.time());
          char when[32];
          std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
          std::printf("%s %s %s\n", when, l.source().c_str(), l.text().c_str());
        }
        return 0;
      }
      if (cmd == "status") {
        v1::JobStatus st;
        const grpc::Status s = Stub(*conn)->Status(ctx.get(), req, &st);
        if (!s.ok()) return Fail(*conn, s);
        PrintStatus(st, /*tasks=*/true);
        return 0;
      }
      // watch: the coordinator streams a status on every change; a line each, with the tasks
      // running now, failures and the ETA.
      ctx->set_deadline(std::chrono::system_clock::time_point::max());
      auto reader = Stub(*conn)->Watch(ctx.get(), req);
      v1::JobStatus st;
      v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
      while (reader->Read(&st)) {
        if (*json) {
          std::printf("%s\n", WatchJson(st).dump().c_str());
          std::fflush(stdout);
          last = st.state();
          continue;
        }
        std::string running, failed;
        for (const v1::TaskStatus& t : st.tasks()) {
          if (t.state() == "leased") {
            running += (running.empty() ? "" : ", ") + t.name() +
                       (t.worker().empty() ? "" : " on " + t.worker());
          }
          if (!t.last_error().empty()) {
            failed += (failed.empty() ? "" : "; ") + t.name() + ": " + t.last_error();
          }
        }
        std::printf("job %lld: %s, %lld/%lld tasks done%s%s%s%s%s\n",
                    static_cast<long long>(st.job_id()), StateName(st.state()),
                    static_cast<long long>(st.tasks_done()),
                    static_cast<long long>(st.tasks_total()),
                    st.eta_seconds() >= 0 ? absl::StrFormat(", ETA %.0f s", st.eta_seconds()).c_str()
                                          : "",
                    running.empty() ? "" : "; running ", running.c_str(),
                    failed.empty() ? "" : "; failures: ", failed.c_str());
        // Each running task's last reported progress: the fields of `qctl quantize --progress`.
        for (const v1::TaskStatus& t : st.tasks()) {
          if (t.state() != "leased" || !t.has_progress()) continue;
          std::printf("  %s\n", ProgressLine(t).c_str());
        }
        std::fflush(stdout);
        last = st.state();
      }
      const grpc::Status s = reader->Finish();
      if (!s.ok()) return Fail(*conn, s);
      if (!st.error().empty()) PrintError(absl::StrFormat("job %lld: %s", *id, st.error()));
      return last == v1::JOB_SUCCEEDED ? 0 : 1;
    };
  }
  // list
  {
    auto conn = std::make_shared<Connection>();
    CLI::App* sub = app.add_subcommand("list", "The coordinator's jobs");
    AddConnectionOptions(sub, conn.get());
    (*runners)[sub] = [=]() {
      v1::ListRequest req;
      req.set_protocol(kProtocol);
      std::string error;
      auto ctx = Context(*conn, /*auth=*/false, &error);
      v1::ListResponse resp;
      const grpc::Status s = Stub(*conn)->List(ctx.get(), req, &resp);
      if (!s.ok()) return Fail(*conn, s);
      for (const v1::JobStatus& st : resp.jobs()) PrintStatus(st, /*tasks=*/false);
      return 0;
    };
  }
}

}  // namespace quant::qctl
