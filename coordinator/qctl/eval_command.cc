// `qctl eval`: perplexity, KL, EAR, EAR_top10, flip rate and accuracy with bootstrap intervals.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "absl/strings/str_format.h"
#include "coordinator/qctl/commands.h"
#include "nlohmann/json.hpp"
#include "storage/s3_flags.h"
#include "worker/eval/eval_job.h"

namespace quant::qctl {
namespace {

struct EvalFlags {
  eval::EvalJobOptions job;
  std::string fake_quant;
  eval::FakeQuantOptions fq;
  bool json = false;
};

nlohmann::json IntervalJson(const eval::Interval& i) {
  return {{"value", i.value}, {"lo", i.lo}, {"hi", i.hi}};
}

int Run(EvalFlags& f) {
  f.job.model_dir = storage::LocalPathOf(f.job.model_dir);  // file:// taken as the path
  f.job.reference_dir = storage::LocalPathOf(f.job.reference_dir);
  if (!f.fake_quant.empty()) {
    f.fq.method = f.fake_quant;
    f.job.fake_quant = f.fq;
  }
  const bool tty = isatty(STDERR_FILENO) != 0 && !f.json;
  auto result = eval::RunEvalJob(
      f.job, tty ? eval::ProgressFn(PrintProgress) : eval::ProgressFn());
  if (!result.ok()) {
    PrintError(std::string(result.status().message()));
    return 1;
  }
  const eval::EvalSummary& s = result->summary;
  if (f.json) {
    nlohmann::json j = {
        {"model", f.job.model_dir},
        {"reference", f.job.reference_dir},
        {"text", f.job.text_path},
        {"compute", f.job.compute},
        {"windows", s.windows},
        {"positions", s.positions},
        {"ppl", IntervalJson(s.ppl)},
        {"next_token_acc", IntervalJson(s.accuracy)},
        {"tokens_per_second",
         result->forward_tokens * (s.has_reference ? 2 : 1) / result->forward_seconds},
        {"forward_seconds", result->forward_seconds},
        {"tokenize_seconds", result->tokenize_seconds},
        {"total_seconds", result->total_seconds},
        {"text_bytes", result->text_bytes},
        {"text_tokens", result->text_tokens},
        {"peak_rss_bytes", result->peak_rss_bytes},
        {"model_bytes", result->model_bytes},
    };
    if (s.has_reference) {
      j["kl"] = IntervalJson(s.kl);
      j["ear"] = IntervalJson(s.ear);
      j["ear_top10"] = IntervalJson(s.ear_top10);
      j["flip_rate"] = IntervalJson(s.flip_rate);
    }
    if (!result->fake_quant_summary.empty()) j["fake_quant"] = result->fake_quant_summary;
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("model      %s\n", f.job.model_dir.c_str());
  if (!f.job.reference_dir.empty()) std::printf("reference  %s (fp32)\n", f.job.reference_dir.c_str());
  if (!result->fake_quant_summary.empty()) {
    std::printf("fake-quant %s\n", result->fake_quant_summary.c_str());
  }
  std::printf("text       %s: %lld windows x %d tokens, compute %s\n", f.job.text_path.c_str(),
              static_cast<long long>(s.windows), f.job.window_tokens, f.job.compute.c_str());
  std::printf("%-16s %10s   %s\n", "metric", "value", "95% interval");
  auto row = [](const char* name, const eval::Interval& i, const char* fmt) {
    std::printf("%-16s %10s   [%s, %s]\n", name, absl::StrFormat(fmt, i.value).c_str(),
                absl::StrFormat(fmt, i.lo).c_str(), absl::StrFormat(fmt, i.hi).c_str());
  };
  row("perplexity", s.ppl, "%.3f");
  row("next_token_acc", s.accuracy, "%.4f");
  if (s.has_reference) {
    row("kl", s.kl, "%.4f");
    row("ear", s.ear, "%.4f");
    row("ear_top10", s.ear_top10, "%.4f");
    row("flip_rate", s.flip_rate, "%.4f");
  }
  std::printf("time       %.1f s (%.0f tokens/s), peak RSS %.0f MiB\n", result->total_seconds,
              result->forward_tokens * (s.has_reference ? 2 : 1) / result->forward_seconds,
              result->peak_rss_bytes / 1048576.0);
  return 0;
}

}  // namespace

Runner AddEvalCommand(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* sub = app.add_subcommand("eval", "Evaluate a checkpoint (optionally against a reference)");
  sub->add_option("--model", flags->job.model_dir,
                  "Model directory (Hugging Face layout) or s3://bucket/prefix")
      ->required();
  sub->add_option("--reference", flags->job.reference_dir,
                  "Original model to compare against (KL, EAR, flip rate); fp32 compute");
  flags->job.text_path = std::string(QUANT_SHARED_DIR) + "/data/eval/kjv_val.txt";
  sub->add_option("--text", flags->job.text_path, "Evaluation text")->capture_default_str();
  sub->add_option("--compute", flags->job.compute, "Compute dtype: fp32 or bf16")
      ->capture_default_str();
  sub->add_option("--fake-quant", flags->fake_quant,
                  "Quantize the model in memory first (rtn); the reference defaults to the "
                  "original model");
  sub->add_option("--bits", flags->fq.bits, "Bits for --fake-quant (2-8)")->capture_default_str();
  sub->add_option("--grid", flags->fq.grid, "sym or asym")->capture_default_str();
  sub->add_option("--scope", flags->fq.scope, "experts or all")->capture_default_str();
  sub->add_option("--group", flags->fq.group_size, "Group size (columns)")->capture_default_str();
  sub->add_option("--batch", flags->job.batch_windows, "Windows per forward batch")
      ->capture_default_str();
  sub->add_option("--max-windows", flags->job.max_windows,
                  "Score only the first N windows of the text (0: all); the text is read only "
                  "as far as they need")
      ->capture_default_str();
  sub->add_option("--bootstrap", flags->job.bootstrap_samples, "Bootstrap samples")
      ->capture_default_str();
  sub->add_option("--threads", flags->job.threads, "Intra-op threads (0: default)");
  sub->add_flag("--json", flags->json, "Print JSON (no progress bar)");
  auto s3 = std::make_shared<storage::S3Flags>();
  s3->AddTo(sub);
  return [flags, s3]() {
    s3->Apply();
    return Run(*flags);
  };
}

}  // namespace quant::qctl
