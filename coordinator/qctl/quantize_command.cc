// `qctl quantize`: the whole job in this process (planner + task code), then a short summary.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "absl/strings/str_format.h"
#include "coordinator/qctl/commands.h"
#include "worker/tasks/quantize_job.h"

namespace quant::qctl {
namespace {

int Run(tasks::QuantizeJobSpec& spec, bool no_eval) {
  spec.evaluate = !no_eval;
  const bool tty = isatty(STDERR_FILENO) != 0;
  auto result = tasks::RunQuantizeJob(spec, tty ? tasks::ProgressFn(PrintProgress)
                                                : tasks::ProgressFn());
  if (!result.ok()) {
    PrintError(std::string(result.status().message()));
    return 1;
  }
  const tasks::QuantizeJobResult& r = *result;
  std::printf("wrote      %s (%s export, %lld quantized linears)\n", r.out_dir.c_str(),
              spec.export_format.c_str(), static_cast<long long>(r.units));
  std::printf("method     %s %d-bit %s g%d scope %s%s\n", spec.method.c_str(), spec.bits,
              spec.grid.c_str(), spec.group_size, spec.scope.c_str(),
              spec.method == "gsq" ? absl::StrFormat(", %d steps, %s", spec.steps,
                                                     spec.objective).c_str()
                                   : "");
  std::printf("bits/param quantized weights %.4f true, %.4f stored; whole checkpoint %.4f true, "
              "%.4f stored\n",
              r.bits_per_quantized_param_true, r.bits_per_quantized_param_stored,
              r.bits_per_param_true, r.bits_per_param_stored);
  if (!r.container_note.empty()) std::printf("note       %s\n", r.container_note.c_str());
  std::printf("fallbacks  %zu experts saw no calibration token (H = I)%s\n",
              r.fallback_experts.size(), r.fallback_experts.empty() ? "" : ":");
  for (const std::string& e : r.fallback_experts) std::printf("           %s\n", e.c_str());
  if (spec.method == "gsq") {
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
  return 0;
}

}  // namespace

Runner AddQuantizeCommand(CLI::App& app) {
  auto spec = std::make_shared<tasks::QuantizeJobSpec>();
  auto no_eval = std::make_shared<bool>(false);
  auto no_fallback = std::make_shared<bool>(false);
  spec->calib_path = std::string(QUANT_SHARED_DIR) + "/data/calib/calib.txt";
  spec->eval_text = std::string(QUANT_SHARED_DIR) + "/data/eval/kjv_val.txt";
  CLI::App* sub = app.add_subcommand("quantize", "Quantize a checkpoint in this process");
  sub->add_option("--model", spec->model_dir, "Model directory (Hugging Face layout)")->required();
  sub->add_option("--out", spec->out_dir, "Output directory (must not exist)")->required();
  sub->add_option("--method", spec->method, "rtn, gptq or gsq")->capture_default_str();
  sub->add_option("--bits", spec->bits, "Bits per weight, 2-8")->capture_default_str();
  sub->add_option("--grid", spec->grid, "sym or asym")->capture_default_str();
  sub->add_option("--group", spec->group_size, "Group size (input columns)")
      ->capture_default_str();
  sub->add_flag("--no-channel-fallback", *no_fallback,
                "Fail when the group does not divide a linear's input width");
  sub->add_option("--scope", spec->scope, "experts or all")->capture_default_str();
  sub->add_option("--calib", spec->calib_path, "Calibration text")->capture_default_str();
  sub->add_option("--calib-tokens", spec->calib_tokens, "Calibration tokens")
      ->capture_default_str();
  sub->add_option("--steps", spec->steps, "GSQ steps per layer")->capture_default_str();
  sub->add_option("--objective", spec->objective, "GSQ objective: expert-output or layer-local")
      ->capture_default_str();
  sub->add_option("--export", spec->export_format, "vllm or native")->capture_default_str();
  sub->add_option("--seed", spec->seed, "Random seed")->capture_default_str();
  sub->add_option("--threads", spec->threads, "CPU threads")->capture_default_str();
  sub->add_option("--damp", spec->damp, "GPTQ damping (times mean diag H)")
      ->capture_default_str();
  sub->add_flag("--act-order", spec->act_order, "GPTQ act-order (static groups)");
  sub->add_flag("!--no-mse", spec->mse_scale_search, "GPTQ min/max scales (no MSE search)");
  sub->add_option("--batch", spec->batch_windows, "Windows per forward batch and GSQ step")
      ->capture_default_str();
  sub->add_option("--eval-text", spec->eval_text, "Evaluation text")->capture_default_str();
  sub->add_option("--calib-inputs", spec->calib_inputs,
                  "Next layer's calibration inputs from the quantized or the original layers")
      ->capture_default_str();
  sub->add_flag("--no-eval", *no_eval, "Skip the evaluation of the written checkpoint");
  sub->add_flag("--overwrite", spec->overwrite, "Replace an existing output directory");
  return [spec, no_eval, no_fallback]() {
    spec->channel_fallback = !*no_fallback;
    return Run(*spec, *no_eval);
  };
}

}  // namespace quant::qctl
