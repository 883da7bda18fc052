// Quality guard: `qctl quantize` at the headline configurations of docs/results.md (the reference
// implementation's settings: symmetric grid, group 128, routed experts, 384 calibration windows,
// damp 0.01, GSQ 640 steps of 16 windows), scored on kjv_val against the original in fp32, and
// pinned to the reference figures of ../shared/README.md. Each test quantizes once and checks
// every claim its run can show. Tolerances and the spread behind them: docs/results.md,
// "Quality tests".
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "coordinator/qctl/qctl_test_util.h"
#include "nlohmann/json.hpp"

namespace quant::qctl_test {
namespace {

namespace fs = std::filesystem;
const std::string kShared = QUANT_SHARED_DIR;

// A figure of ../shared/README.md (perplexity and KL on kjv_val) and the band, relative to it and
// both ways, that a run must land in.
struct Figure {
  double ppl;
  double kl;
};
struct Tolerance {
  double ppl;  // fraction of the figure's perplexity
  double kl;   // fraction of the figure's KL
};

// From the spread measured on this 2-core machine (docs/results.md, "Quality tests"). GPTQ has
// no random draws: only the order of floating-point sums moves it (OPENBLAS_NUM_THREADS 1 against
// 2: 0.02% ppl, 0.4% KL); its runs sat within 0.05% ppl and 0.5% KL of the reference. The band
// is 0.3% / 2%: ~4x that, and room for the README's "up to ~0.2% ppl, ~1% KL" on another CPU.
constexpr Tolerance kGptqTolerance{0.003, 0.02};
// GSQ also moves with its seed (Lion's minibatch draws) and, as much, with BLAS threads: seeds
// 0-2, one BLAS thread and the pre-re-keying draws sat within 0.2% ppl and 2.8% KL of the
// reference (KL 1.7-2.8% below it at 3 bits). The band is 0.5% / 5%: ~1.8-2.7x the largest
// seen, and it still fails the 3-bit layer-local objective
// (KL 0.0146, +7%) and anything at GPTQ+MSE's level (0.0167, +23%).
constexpr Tolerance kGsqTolerance{0.005, 0.05};

class QualityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("qctl_quality_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // `qctl quantize` of `model` with `flags` into a fresh output; its report.json.
  nlohmann::json Quantize(const std::string& model, const std::string& flags) {
    const std::string cmd = std::string(QCTL_BINARY) + " quantize --model " + kShared + "/models/" +
                            model + " --out " + (tmp_ / "out").string() + " " + flags +
                            " --progress none";
    const CommandResult r = RunCommand(cmd, tmp_);
    std::printf("%s: exit %d, %.0f s\n", cmd.c_str(), r.exit_code, r.seconds);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return nlohmann::json();
    return nlohmann::json::parse(Slurp(tmp_ / "out" / "report.json"));
  }

  // The run's kjv_val perplexity and KL (report.json's "eval": [value, lo, hi] per metric)
  // within the tolerances of `want`.
  static Figure ExpectMatches(const nlohmann::json& report, const Figure& want,
                              const Tolerance& tolerance, const std::string& what) {
    const auto& eval = report.at("eval");
    // kjv_val cuts into 160 windows (../shared/README.md, "The evaluation recipe").
    EXPECT_EQ(eval.at("windows").get<int>(), 160) << what << ": not the whole of kjv_val";
    const Figure got{eval.at("ppl").at(0).get<double>(), eval.at("kl").at(0).get<double>()};
    std::printf("%s: ppl %.4f (reference %.3f, %+.3f%%), KL %.5f (reference %.4f, %+.2f%%)\n",
                what.c_str(), got.ppl, want.ppl, 100 * (got.ppl / want.ppl - 1), got.kl, want.kl,
                100 * (got.kl / want.kl - 1));
    EXPECT_NEAR(got.ppl, want.ppl, tolerance.ppl * want.ppl) << what << ": perplexity";
    EXPECT_NEAR(got.kl, want.kl, tolerance.kl * want.kl) << what << ": KL";
    return got;
  }

  fs::path tmp_;
};

// The reference's settings, spelled out so that a change of qctl's defaults cannot move the pins:
// 384 calibration windows of 256 tokens (98304), damp 0.01 (../shared/README.md).
const std::string kReferenceConfig =
    "--grid sym --group 128 --scope experts --calib-tokens 98304 --damp 0.01";

// ../shared/README.md, "GSQ as the reference runs it", row "GPTQ + MSE scale search", 2 bits.
TEST_F(QualityTest, QwenGptqMse2BitMatchesTheReference) {
  const nlohmann::json report =
      Quantize("tiny-qwen3-moe", "--method gptq --bits 2 " + kReferenceConfig);
  ASSERT_FALSE(report.is_null());
  ExpectMatches(report, {24.470, 0.0752}, kGptqTolerance, "tiny-qwen3-moe GPTQ+MSE 2-bit");
}

// ../shared/README.md, "GSQ as the reference runs it": row "GSQ on GPTQ + MSE", 3 bits, pinned;
// row "GPTQ + MSE scale search", 3 bits, the start GSQ must beat. Within the run, GSQ lowers
// its own objective from the GPTQ start's in every layer.
TEST_F(QualityTest, QwenGsq3BitMatchesTheReferenceAndBeatsGptq) {
  const nlohmann::json report =
      Quantize("tiny-qwen3-moe",
               "--method gsq --bits 3 --steps 640 --batch 16 --seed 0 " + kReferenceConfig);
  ASSERT_FALSE(report.is_null());
  const Figure got =
      ExpectMatches(report, {23.474, 0.0136}, kGsqTolerance, "tiny-qwen3-moe GSQ 3-bit");
  const Figure gptq{23.595, 0.0167};  // the reference's GPTQ + MSE, 3 bits
  EXPECT_LT(got.ppl, gptq.ppl) << "GSQ 3-bit no better than the reference's GPTQ+MSE";
  EXPECT_LT(got.kl, gptq.kl) << "GSQ 3-bit no better than the reference's GPTQ+MSE";
  // Per layer: the GSQ objective summed over the layer's units, before (the GPTQ start) and
  // after. Lion is stochastic, so single units may end where they began; a layer may not.
  std::map<std::string, std::pair<double, double>> layers;
  int gsq_units = 0;
  for (const auto& u : report.at("units")) {
    if (!u.contains("gsq_loss_before")) continue;
    ++gsq_units;
    const std::string name = u.at("name");
    const std::string layer = name.substr(0, name.find(".mlp."));
    layers[layer].first += u.at("gsq_loss_before").get<double>();
    layers[layer].second += u.at("gsq_loss_after").get<double>();
  }
  EXPECT_GT(gsq_units, 0) << "no unit went through GSQ";
  EXPECT_EQ(layers.size(), 4u);  // tiny-qwen3-moe: 4 MoE layers
  for (const auto& [layer, loss] : layers) {
    EXPECT_LT(loss.second, loss.first) << layer << ": GSQ did not lower its objective";
  }
}

// ../shared/README.md, "The same implementation on tiny-deepseek-v3": 2-bit GPTQ + MSE.
TEST_F(QualityTest, DeepseekGptqMse2BitMatchesTheReference) {
  const nlohmann::json report =
      Quantize("tiny-deepseek-v3", "--method gptq --bits 2 " + kReferenceConfig);
  ASSERT_FALSE(report.is_null());
  ExpectMatches(report, {25.895, 0.0630}, kGptqTolerance, "tiny-deepseek-v3 GPTQ+MSE 2-bit");
}

}  // namespace
}  // namespace quant::qctl_test
