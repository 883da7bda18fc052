// The RTN anchor (../shared/anchors.json, made by an independent Python implementation) and the
// shared perplexities, reproduced through our tokenizer, forward, quantizer and metrics. The
// reference forward runs once per model; each anchor row re-runs only the quantized model.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>

#include "nlohmann/json.hpp"
#include "worker/eval/eval_pipeline.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::eval {
namespace {

const std::string kShared = QUANT_SHARED_DIR;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct Prepared {
  std::unique_ptr<model::Model> model;
  at::Tensor windows;
  at::Tensor hidden_fp32;
};

Prepared Prepare(const std::string& name, const std::string& text_file) {
  Prepared p;
  const std::string dir = kShared + "/models/" + name;
  auto model = model::Model::Open(dir, model::ComputeDType::kF32);
  EXPECT_TRUE(model.ok()) << model.status();
  p.model = std::move(*model);
  auto tok = tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  auto windows = MakeWindows((*tok)->Encode(ReadText(kShared + "/data/eval/" + text_file), false),
                             256, 0, text_file);
  EXPECT_TRUE(windows.ok()) << windows.status();
  p.windows = *windows;
  auto hidden = RunToFinalHidden(*p.model, nullptr, p.windows, 16, "reference", nullptr);
  EXPECT_TRUE(hidden.ok()) << hidden.status();
  p.hidden_fp32 = *hidden;
  return p;
}

class AnchorTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AnchorTest, PerplexityMatchesReferenceMetrics) {
  const std::string name = GetParam();
  const nlohmann::json ref = ReadJson(kShared + "/models/" + name + "/reference_metrics.json");
  for (const auto& [text, key, windows] :
       {std::tuple{"kjv_val.txt", "kjv_val_ppl_fp32compute", "kjv_val_windows"},
        std::tuple{"fortunes_val.txt", "fortunes_val_ppl_fp32compute", "fortunes_val_windows"}}) {
    Prepared p = Prepare(name, text);
    EXPECT_EQ(p.windows.size(0), ref[windows].get<int64_t>()) << text;
    auto stats = ScoreHidden(*p.model, p.hidden_fp32, nullptr, at::Tensor(), p.windows, 16, nullptr);
    ASSERT_TRUE(stats.ok());
    const double ppl = Summarize(*stats, 10).ppl.value;
    const double want = ref[key].get<double>();
    std::printf("%s %s ppl %.4f reference %.4f\n", name.c_str(), text, ppl, want);
    EXPECT_NEAR(ppl, want, 0.001 * want) << name << " " << text;  // the 0.1%
  }
}

TEST_P(AnchorTest, Bf16ComputeAgainstFp32MatchesReference) {
  const std::string name = GetParam();
  const nlohmann::json ref = ReadJson(kShared + "/models/" + name + "/reference_metrics.json");
  Prepared p = Prepare(name, "kjv_val.txt");
  auto bf16 = model::Model::Open(kShared + "/models/" + name, model::ComputeDType::kBF16);
  ASSERT_TRUE(bf16.ok());
  auto hq = RunToFinalHidden(**bf16, nullptr, p.windows, 16, "bf16", nullptr);
  ASSERT_TRUE(hq.ok());
  auto stats = ScoreHidden(**bf16, *hq, p.model.get(), p.hidden_fp32, p.windows, 16, nullptr);
  ASSERT_TRUE(stats.ok());
  const EvalSummary s = Summarize(*stats, 10);
  const auto& want = ref["bf16compute_vs_fp32compute"];
  std::printf("%s bf16: ppl %.4f (ref %.4f) kl %.5f (ref %.5f) ear %.4f (ref %.4f)\n",
              name.c_str(), s.ppl.value, want["ppl"].get<double>(), s.kl.value,
              want["kl"].get<double>(), s.ear.value, want["ear"].get<double>());
  // bf16 rounding differs between CPU kernels and the reference's GPU kernels, so only the
  // level is comparable: within 0.1% in perplexity and 0.003 in EAR.
  EXPECT_NEAR(s.ppl.value, want["ppl"].get<double>(), 0.001 * want["ppl"].get<double>());
  EXPECT_NEAR(s.ear.value, want["ear"].get<double>(), 0.003);
}

TEST_P(AnchorTest, RtnAnchorRowsReproduce) {
  const std::string name = GetParam();
  const nlohmann::json anchors = ReadJson(kShared + "/anchors.json")[name]["rtn_anchor_kjv_val"];
  ASSERT_GE(anchors.size(), 16u);
  Prepared p = Prepare(name, "kjv_val.txt");
  for (const auto& row : anchors) {
    FakeQuantOptions fq;
    fq.bits = row["bits"];
    fq.grid = row["sym"].get<bool>() ? "sym" : "asym";
    fq.scope = row["scope"];
    fq.group_size = row["group"];
    std::string summary;
    auto transform = MakeFakeQuantTransform(fq, &summary, std::make_shared<int64_t>(0));
    ASSERT_TRUE(transform.ok()) << transform.status();
    auto hq = RunToFinalHidden(*p.model, &*transform, p.windows, 16, "rtn", nullptr);
    ASSERT_TRUE(hq.ok()) << hq.status();
    auto stats = ScoreHidden(*p.model, *hq, p.model.get(), p.hidden_fp32, p.windows, 16, nullptr);
    ASSERT_TRUE(stats.ok());
    const EvalSummary s = Summarize(*stats, 10);
    const double ppl = row["ppl"], ear = row["ear"];
    std::printf("%s %s: ppl %.4f (ref %.4f) kl %.4f (ref %.4f) ear %.4f (ref %.4f) top10 %.4f "
                "(ref %.4f) flip %.4f (ref %.4f)\n",
                name.c_str(), summary.c_str(), s.ppl.value, ppl, s.kl.value,
                row["kl"].get<double>(), s.ear.value, ear, s.ear_top10.value,
                row["ear_top10"].get<double>(), s.flip_rate.value, row["flip_rate"].get<double>());
    EXPECT_NEAR(s.ppl.value, ppl, 0.005 * ppl) << summary;  // the bars
    EXPECT_NEAR(s.ear.value, ear, 0.002) << summary;
  }
}

INSTANTIATE_TEST_SUITE_P(SharedModels, AnchorTest,
                         ::testing::Values("tiny-deepseek-v3", "tiny-qwen3-moe"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace quant::eval
