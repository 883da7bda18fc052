// `qctl quantize`: the whole job in this process (planner + task code), then a short summary.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/file.h"
#include "common/status.h"
#include "coordinator/qctl/commands.h"
#include "storage/s3_flags.h"
#include "worker/runner/embedded_job.h"
#include "worker/runner/resumable_job.h"
#include "worker/tasks/torch_profile.h"

namespace quant::qctl {
namespace {

// --profile FILE: its directory must exist before the job starts, not after it has run.
absl::Status CheckProfilePath(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path parent = fs::absolute(path).parent_path();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--profile: %s: no such directory", parent.string()));
  }
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrFormat("--profile: %s is a directory", path));
  }
  return absl::OkStatus();
}

// Ctrl-C: the first asks the job to stop at its next task or GSQ step (the work directory is
// kept for --resume and no half-written output is left); a second one kills at once.
std::atomic<bool> g_interrupted{false};
extern "C" void OnInterrupt(int) {
  g_interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);
}

struct ResumeFlags {
  bool resume = false;
  bool in_memory = false;
  std::string work_dir;
  std::string progress = "auto";  // auto | bar | json | none
};

std::string Duration(double seconds) {
  if (seconds < 0) return "?";
  if (seconds < 90) return absl::StrFormat("%.0f s", seconds);
  if (seconds < 5400) return absl::StrFormat("%.1f min", seconds / 60);
  return absl::StrFormat("%.1f h", seconds / 3600);
}

// --progress: on a terminal a line per finished task with a bar and, inside GSQ, one updating
// line with the step, the loss and the ETAs; otherwise one JSON object per event (stderr).
tasks::ProgressSink ProgressPrinter(const std::string& mode) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const std::string m = mode == "auto" ? (tty ? "bar" : "json") : mode;
  if (m == "none") return nullptr;
  if (m == "json") {
    return [](const tasks::ProgressEvent& e) {
      std::fprintf(stderr, "%s\n", e.ToJson().dump().c_str());
      std::fflush(stderr);
    };
  }
  return [](const tasks::ProgressEvent& e) {
    if (e.event == "step") {
      std::fprintf(stderr, "\r\033[K%-14s step %lld/%lld  loss %.5g  ETA layer %s, job %s",
                   e.task.c_str(), static_cast<long long>(e.step),
                   static_cast<long long>(e.steps), e.loss, Duration(e.eta_task_s).c_str(),
                   Duration(e.eta_job_s).c_str());
    } else {
      constexpr int kWidth = 24;
      const int filled =
          e.tasks_total > 0 ? static_cast<int>(kWidth * e.tasks_done / e.tasks_total) : 0;
      std::fprintf(stderr, "\r\033[K%-14s [%s%s] %lld/%lld tasks  %6.1f s  ETA job %s\n",
                   e.task.c_str(), std::string(filled, '#').c_str(),
                   std::string(kWidth - filled, '.').c_str(),
                   static_cast<long long>(e.tasks_done), static_cast<long long>(e.tasks_total),
                   e.seconds, Duration(e.eta_job_s).c_str());
    }
    std::fflush(stderr);
  };
}

int Run(tasks::QuantizeJobSpec& spec, const std::string& profile_path, const ResumeFlags& rf) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::unique_ptr<tasks::TorchProfile> profile;
  if (!profile_path.empty()) {
    absl::StatusOr<std::unique_ptr<tasks::TorchProfile>> started =
        tasks::TorchProfile::Start(profile_path, spec.device == tasks::Device::kCuda);
    if (!started.ok()) {
      PrintError(std::string(started.status().message()));
      return 1;
    }
    profile = std::move(*started);
  }
  const tasks::ProgressFn progress = tty ? tasks::ProgressFn(PrintProgress) : tasks::ProgressFn();
  absl::StatusOr<tasks::QuantizeJobResult> result;
  if (rf.in_memory && rf.resume) {
    result = absl::InvalidArgumentError("--resume and --in-memory exclude each other");
  } else if (!rf.in_memory && (tasks::Resumable(spec) || rf.resume)) {
    // Through the service's task hand-off, so that a killed run can be resumed (a job that
    // cannot take this path, with --resume, gets the one line saying why).
    tasks::ResumableOptions options;
    options.resume = rf.resume;
    options.work_dir = rf.work_dir;
    options.interrupted = &g_interrupted;
    options.progress = ProgressPrinter(rf.progress);
    options.command = CommandLine();
    std::signal(SIGINT, OnInterrupt);
    result = tasks::RunResumableQuantizeJob(spec, options);
    std::signal(SIGINT, SIG_DFL);
  } else {
    result = tasks::RunQuantizeJob(spec, progress);
  }
  if (!result.ok()) {
    PrintError(std::string(result.status().message()));
    return 1;
  }
  if (profile != nullptr) {
    if (absl::Status s = profile->Save(profile_path); !s.ok()) {
      PrintError(std::string(s.message()));
      return 1;
    }
    std::printf("profile    %s\n", profile_path.c_str());
  }
  const tasks::QuantizeJobResult& r = *result;
  if (r.resumed_tasks > 0) {
    std::printf("resumed    %lld tasks finished by the interrupted run were kept\n",
                static_cast<long long>(r.resumed_tasks));
  }
  std::printf("wrote      %s (%s export, %lld quantized linears)\n", r.out_dir.c_str(),
              std::string(NameOf(spec.export_format)).c_str(), static_cast<long long>(r.units));
  std::printf("method     %s %s %s g%d scope %s%s\n", std::string(NameOf(spec.method)).c_str(),
              spec.slq ? "SLQ mixed-bit" : absl::StrFormat("%d-bit", spec.bits).c_str(),
              std::string(NameOf(spec.grid)).c_str(), spec.group_size,
              std::string(NameOf(spec.scope)).c_str(),
              spec.method == tasks::Method::kGsq
                  ? absl::StrFormat(", %d steps, %s", spec.steps, std::string(NameOf(spec.objective))).c_str()
                  : "");
  std::printf("bits/param quantized weights %.4f true, %.4f stored; whole checkpoint %.4f true, "
              "%.4f stored\n",
              r.bits_per_quantized_param_true, r.bits_per_quantized_param_stored,
              r.bits_per_param_true, r.bits_per_param_stored);
  if (!r.container_note.empty()) std::printf("note       %s\n", r.container_note.c_str());
  if (spec.slq) {
    const nlohmann::json& q = r.slq;
    std::printf("slq        %s: %.4f average bits over %zu units, predicted KL %.4f, EAR %.4f "
                "(%s, gap %.2g); probes %lld run, %lld cached\n",
                q.value("mode", "").c_str(), q.value("average_bits", 0.0), q["units"].size(),
                q.value("predicted_kl", 0.0), q.value("predicted_ear", 0.0),
                q.value("mode", "") == "allocation" ? "given"
                : q.value("exact", false)          ? "exact"
                                                   : "Lagrangian",
                q.value("optimality_gap", 0.0), q.value("probes_run", 0LL),
                q.value("probes_cached", 0LL));
    for (const nlohmann::json& u : q["units"]) {
      std::printf("           %-40s %d bits\n", u.value("unit", "").c_str(), u.value("bits", 0));
    }
  }
  std::printf("fallbacks  %zu experts saw no calibration token (H = I)%s\n",
              r.fallback_experts.size(), r.fallback_experts.empty() ? "" : ":");
  for (const std::string& e : r.fallback_experts) std::printf("           %s\n", e.c_str());
  if (spec.method == tasks::Method::kGsq) {
    std::printf("gsq        %.2f%% of codes changed, objective after/before %.3f (mean)\n",
                100 * r.gsq_mean_changed_fraction, r.gsq_mean_loss_ratio);
  }
  for (const tasks::PhaseTiming& p : r.phases) {
    std::printf("phase      %-10s %8.1f s  peak RSS %6.0f MiB\n", p.phase.c_str(), p.seconds,
                p.peak_rss_bytes / 1048576.0);
  }
  if (r.evaluated) {
    const eval::EvalSummary& s = r.eval;
    std::printf("eval       %lld windows vs the original (fp32)\n",
                static_cast<long long>(s.windows));
    auto row = [](const char* name, const eval::Interval& i) {
      std::printf("  %-14s %9.4f  [%.4f, %.4f]\n", name, i.value, i.lo, i.hi);
    };
    row("perplexity", s.ppl);
    row("kl", s.kl);
    row("ear", s.ear);
    row("ear_top10", s.ear_top10);
    row("flip_rate", s.flip_rate);
    row("next_token_acc", s.accuracy);
  }
  std::printf("report     %s\n", r.report_path.c_str());
  if (r.uploaded_bytes > 0) {
    std::printf("uploaded   %.1f MB to %s\n", r.uploaded_bytes / 1e6, r.out_dir.c_str());
  }
  return 0;
}

}  // namespace

void AddJobOptions(CLI::App* sub, tasks::QuantizeJobSpec* spec, tasks::SpecChoices* choices,
                   bool* no_eval, bool* no_fallback, double* bits) {
  *choices = tasks::ChoicesOf(*spec);
  const std::string cache = UserCacheDir();
  spec->probe_cache_dir = cache.empty() ? "" : cache + "/moe-quant/probes";
  spec->calib_path = std::string(QUANT_SHARED_DIR) + "/data/calib/calib.txt";
  spec->eval_text = std::string(QUANT_SHARED_DIR) + "/data/eval/kjv_val.txt";
  sub->add_option("--model", spec->model_dir,
                  "Model directory (Hugging Face layout) or s3://bucket/prefix")
      ->required();
  sub->add_option("--out", spec->out_dir,
                  "Output directory or s3://bucket/prefix (must not exist unless --overwrite; "
                  "missing parents are created)")
      ->required();
  sub->add_option("--method", choices->method, "rtn, gptq or gsq")->capture_default_str();
  sub->add_option("--bits", *bits, "Bits per weight, 2-8 (with --slq: the average budget)")
      ->capture_default_str();
  sub->add_flag("--slq", spec->slq, "SLQ: per-unit bitwidths from probes and a global solve");
  sub->add_option("--target-ear", spec->target_ear,
                  "With --slq: fewest bits with predicted EAR >= this (instead of --bits)");
  sub->add_option("--slq-bits", spec->slq_bits, "With --slq: candidate bitwidths")
      ->capture_default_str()->delimiter(',');
  sub->add_option("--probe-windows", spec->probe_windows,
                  "With --slq: calibration windows each probe is scored on")
      ->capture_default_str();
  sub->add_flag("--per-expert-bits", spec->per_expert_bits,
               "With --slq: each routed expert's bits chosen apart (needs --export native)");
  sub->add_option("--expert-aggregation", spec->expert_aggregation,
                  "With --per-expert-bits: how a layer's experts add up in the solve: sum, or "
                  "calibrated by one tied probe per layer: scale (default) or power");
  sub->add_option("--slq-allocation", spec->slq_allocation,
                  "With --slq: a JSON file {unit: bits} used instead of the solve");
  sub->add_option("--probe-cache", spec->probe_cache_dir,
                  "With --slq: probe cache directory (\"\" : none)")
      ->capture_default_str();
  sub->add_option("--grid", choices->grid, "sym or asym")->capture_default_str();
  sub->add_option("--group", spec->group_size, "Group size (input columns)")
      ->capture_default_str();
  sub->add_flag("--no-channel-fallback", *no_fallback,
                "Fail when the group does not divide a linear's input width");
  sub->add_option("--scope", choices->scope, "experts or all")->capture_default_str();
  sub->add_option("--calib", spec->calib_path,
                  "Calibration data: a text file, a .jsonl file of {\"text\": ...} or "
                  "{\"messages\": [...]} records (chats rendered by the model's chat template), "
                  "or a directory of .txt/.jsonl files")
      ->capture_default_str();
  sub->add_option("--calib-tokens", spec->calib_tokens,
                  "Calibration tokens (the windows' total; with records: at most this many)")
      ->capture_default_str();
  sub->add_option("--calib-samples", spec->calib_samples,
                  "Records to read from a .jsonl file or directory, or windows of a text file "
                  "(0: as --calib-tokens gives)")
      ->capture_default_str();
  sub->add_option("--seq-len", spec->window_tokens,
                  "Calibration window length in tokens, BOS included")
      ->capture_default_str();
  sub->add_option("--steps", spec->steps, "GSQ steps per layer")->capture_default_str();
  sub->add_option("--objective", choices->objective, "GSQ objective: expert-output or layer-local")
      ->capture_default_str();
  sub->add_option("--export", choices->export_format, "vllm or native")->capture_default_str();
  sub->add_option("--seed", spec->seed, "Random seed")->capture_default_str();
  sub->add_option("--threads", spec->threads, "CPU threads")->capture_default_str();
  sub->add_option("--expert-shards", spec->expert_shards,
                  "GSQ tasks per MoE layer (the service's expert-parallel gang size; the "
                  "checkpoint does not depend on it)")
      ->capture_default_str();
  sub->add_option("--device", choices->device,
                  "cpu or cuda (cuda: the model, calibration, GPTQ, GSQ and eval on the GPU)")
      ->capture_default_str();
  sub->add_option("--damp", spec->damp, "GPTQ damping (times mean diag H)")
      ->capture_default_str();
  sub->add_flag("--act-order", spec->act_order, "GPTQ act-order (static groups)");
  sub->add_flag("!--no-mse", spec->mse_scale_search, "GPTQ min/max scales (no MSE search)");
  sub->add_option("--batch", spec->batch_windows, "Windows per forward batch and GSQ step")
      ->capture_default_str();
  sub->add_option("--eval-text", spec->eval_text, "Evaluation text")->capture_default_str();
  sub->add_option("--calib-inputs", choices->calib_inputs,
                  "Next layer's calibration inputs from the quantized or the original layers")
      ->capture_default_str();
  sub->add_flag("--no-eval", *no_eval, "Skip the evaluation of the written checkpoint");
}

absl::Status FinishJobOptions(tasks::QuantizeJobSpec& spec, const tasks::SpecChoices& choices,
                              bool no_eval, bool no_fallback, double bits) {
  RETURN_IF_ERROR(tasks::ApplyChoices(choices, &spec));
  spec.evaluate = !no_eval;
  spec.channel_fallback = !no_fallback;
  spec.model_dir = storage::LocalPathOf(spec.model_dir);  // file:// taken as the path
  spec.out_dir = storage::LocalPathOf(spec.out_dir);
  if (!std::isfinite(bits)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--bits: %g is not a number of bits (2-8, or an SLQ budget)", bits));
  }
  if (!spec.slq && spec.target_ear > 0) {
    return absl::InvalidArgumentError("--target-ear needs --slq");
  }
  if (spec.slq) {
    spec.slq_budget = bits;
    spec.bits = std::clamp(static_cast<int>(std::ceil(bits)), 2, 8);  // unused: the solve decides
  } else if (bits != std::floor(bits)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--bits: %.10g is not a whole number (fractional budgets need --slq)",
                        bits));
  } else {
    spec.bits = static_cast<int>(bits);
  }
  return absl::OkStatus();
}

Runner AddQuantizeCommand(CLI::App& app) {
  auto spec = std::make_shared<tasks::QuantizeJobSpec>();
  auto choices = std::make_shared<tasks::SpecChoices>();
  auto no_eval = std::make_shared<bool>(false);
  auto no_fallback = std::make_shared<bool>(false);
  auto bits = std::make_shared<double>(4);
  CLI::App* sub = app.add_subcommand("quantize", "Quantize a checkpoint in this process");
  AddJobOptions(sub, spec.get(), choices.get(), no_eval.get(), no_fallback.get(), bits.get());
  sub->add_flag("--overwrite", spec->overwrite,
                "Replace an existing output directory: only an empty one or a checkpoint this "
                "tool wrote (it holds quant_manifest.json); anything else is refused");
  auto resume = std::make_shared<ResumeFlags>();
  sub->add_flag("--resume", resume->resume,
                "Continue an interrupted run of the same command from its last finished task "
                "(its work directory: --work-dir)");
  sub->add_flag("--in-memory", resume->in_memory,
                "Keep the tasks' outputs in memory instead of the work directory: a little "
                "faster, not resumable (SLQ and --expert-shards above 1 always run this way)");
  sub->add_option("--progress", resume->progress,
                  "auto (a bar on a terminal, JSON lines when stderr is not one), bar, json or "
                  "none: one JSON object per event on stderr (phase, task, layer, step, loss, "
                  "seconds, ETAs)")
      ->check(CLI::IsMember({"auto", "bar", "json", "none"}))
      ->capture_default_str();
  sub->add_option("--work-dir", resume->work_dir,
                  "Where the job's finished tasks are kept until it succeeds (default: "
                  "<out>.qctl-work beside a local --out)");
  auto profile = std::make_shared<std::string>();
  sub->add_option("--profile", *profile,
                  "Record the job with the torch profiler (CPU, and GPU kernels with --device "
                  "cuda) into this Chrome-trace JSON file; bench/trace_summary.py sums it");
  auto s3 = std::make_shared<storage::S3Flags>();
  s3->AddTo(sub);
  return [spec, choices, no_eval, no_fallback, bits, s3, profile, resume]() {
    absl::Status s = FinishJobOptions(*spec, *choices, *no_eval, *no_fallback, *bits);
    if (s.ok() && !profile->empty()) s = CheckProfilePath(*profile);
    if (!s.ok()) {
      PrintError(std::string(s.message()));
      return 1;
    }
    s3->Apply();
    return Run(*spec, *profile, *resume);
  };
}

}  // namespace quant::qctl
