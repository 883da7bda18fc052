// The job-spec parser the service uses: a full spec round-trips; each failure mode is one clear
// error naming the field; qctl's flags name the same checks by flag.
#include "job/job_spec.h"

#include <gtest/gtest.h>

namespace quant::tasks {
namespace {

std::string Spec(const std::string& extra = "") {
  return R"({"model": "/m", "out": "/o", "calib": "/c", "method": "gptq", "bits": 3)" + extra + "}";
}

TEST(JobSpec, FullSpecRoundTrips) {
  QuantizeJobSpec s;
  s.model_dir = "/models/x";
  s.out_dir = "/out/x";
  s.calib_path = "/data/calib.txt";
  s.method = Method::kGsq;
  s.bits = 2;
  s.slq = true;
  s.slq_budget = 3.5;
  s.per_expert_bits = true;
  s.export_format = quant::ExportFormat::kNative;
  s.expert_aggregation = "power";
  s.calib_samples = 8;
  s.window_tokens = 128;
  nlohmann::json j = s.ToJson();
  j["out"] = s.out_dir;
  auto back = SpecFromJson(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), s.ToJson());
  EXPECT_EQ(back->out_dir, "/out/x");
  EXPECT_EQ(back->calib_samples, 8);
  EXPECT_EQ(back->window_tokens, 128);
}

// The typed choices keep the names their JSON and flags had as strings.
TEST(JobSpec, ChoicesAreTypedWithTheirNames) {
  auto spec = SpecFromJson(Spec(R"(, "grid": "asym", "scope": "all", "device": "cuda", )"
                                R"("objective": "layer-local", "export": "native", )"
                                R"("calib_inputs": "original")"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->method, Method::kGptq);
  EXPECT_EQ(spec->grid, quant::Grid::kAsymmetric);
  EXPECT_EQ(spec->scope, quant::Scope::kAll);
  EXPECT_EQ(spec->device, Device::kCuda);
  EXPECT_EQ(spec->objective, quant::GsqObjective::kLayerLocal);
  EXPECT_EQ(spec->export_format, quant::ExportFormat::kNative);
  EXPECT_EQ(spec->calib_inputs, CalibInputs::kOriginal);
  const SpecChoices names = ChoicesOf(*spec);
  EXPECT_EQ(names.method, "gptq");
  EXPECT_EQ(names.objective, "layer-local");
  QuantizeJobSpec back;
  ASSERT_TRUE(ApplyChoices(names, &back).ok());
  const SpecChoices again = ChoicesOf(back);
  EXPECT_EQ(std::tie(again.method, again.grid, again.scope, again.objective, again.export_format,
                     again.device, again.calib_inputs),
            std::tie(names.method, names.grid, names.scope, names.objective, names.export_format,
                     names.device, names.calib_inputs));
  SpecChoices bad = names;
  bad.method = "awq";
  EXPECT_EQ(ApplyChoices(bad, &back).message(), "--method: 'awq' is not one of rtn, gptq, gsq");
}

TEST(JobSpec, EachFailureModeNamesTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not a JSON object"},
      {"[1]", "not a JSON object"},
      {R"({"out": "/o"})", "\"model\""},
      {R"({"model": "/m"})", "\"out\""},
      {Spec(R"(, "colour": "red")"), "\"colour\": is not a job option"},
      // A NUL cut the path short at open after the whole string passed the roots check.
      {Spec(R"(, "out": "/o/victim\u0000/../../out/victim")"), "\"out\": holds a control character"},
      {Spec(R"(, "model": "/m\n")"), "\"model\": holds a control character"},
      {R"({"model": "/m", "out": "/o", "method": "gptq", "bits": 3})", "\"calib\": is required"},
      {Spec(R"(, "bits": "3")"), "\"bits\": must be an integer"},
      {Spec(R"(, "bits": 9)"), "\"bits\": 9 is outside 2..8"},
      {Spec(R"(, "bits": 99999999999)"), "\"bits\": is out of range"},
      {Spec(R"(, "method": "awq")"), "\"method\": 'awq' is not one of rtn, gptq, gsq"},
      {Spec(R"(, "grid": 1)"), "\"grid\": must be a string"},
      {Spec(R"(, "grid": "nf4")"), "\"grid\": 'nf4' is not one of sym, asym"},
      {Spec(R"(, "device": "tpu")"), "\"device\": 'tpu' is not one of cpu, cuda"},
      {Spec(R"(, "export": "gguf")"), "\"export\": 'gguf' is not one of vllm, native"},
      {Spec(R"(, "objective": "kl")"), "\"objective\": 'kl' is not one of expert-output, layer-local"},
      {Spec(R"(, "seed": -1)"), "\"seed\": must be a non-negative integer"},
      {Spec(R"(, "damp": 1e999)"), "not a JSON object"},  // not JSON: out of double range
      {Spec(R"(, "damp": 100)"), "\"damp\": must be in 0..10"},
      {Spec(R"(, "slq_bits": [2, "x"])"), "\"slq_bits\": must be an integer"},
      {Spec(R"(, "slq": true, "slq_bits": [1, 4], "slq_budget": 3)"), "\"slq_bits\": 1 is outside"},
      {Spec(R"(, "slq": true, "slq_budget": 9)"), "\"slq_budget\": an SLQ budget of 9"},
      {Spec(R"(, "target_ear": 0.9)"), "\"target_ear\": needs \"slq\""},
      {Spec(R"(, "per_expert_bits": true, "slq": true, "slq_budget": 3)"),
       "\"per_expert_bits\": needs \"export\" native"},
      {Spec(R"(, "expert_aggregation": "max")"), "\"expert_aggregation\": \"max\": expected sum"},
      {Spec(R"(, "expert_aggregation": "scale")"),
       "\"expert_aggregation\": needs \"per_expert_bits\""},
      {Spec(R"(, "channel_fallback": "yes")"), "\"channel_fallback\": must be true or false"},
      {Spec(R"(, "expert_shards": 0)"), "\"expert_shards\": must be in 1..4096"},
      {Spec(R"(, "expert_shards": 2, "scope": "all")"),
       "\"expert_shards\": above 1 needs \"scope\" experts"},
      {Spec(R"(, "calib_samples": -1)"), "\"calib_samples\": -1 is not in 0..2147483648"},
      {Spec(R"(, "calib_samples": "8")"), "\"calib_samples\": must be an integer"},
      {Spec(R"(, "evaluate": "no")"), "\"evaluate\": must be true or false"},
      {std::string(kMaxJobSpecBytes + 1, ' '), "more than"},
  };
  for (const auto& [text, needle] : cases) {
    auto r = SpecFromJson(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find(needle), std::string::npos)
        << text << " -> " << r.status().message();
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);  // one line
  }
}

TEST(JobSpec, FlagsNameTheSameChecks) {
  QuantizeJobSpec s;
  s.bits = 9;
  EXPECT_EQ(ValidateSpecFields(s, /*name_flags=*/true).message(), "--bits: 9 is outside 2..8");
  s.bits = 3;
  s.per_expert_bits = true;
  s.slq = true;
  s.slq_budget = 3;
  EXPECT_NE(ValidateSpecFields(s, true).message().find("--per-expert-bits: needs --export native"),
            std::string::npos);
  s = QuantizeJobSpec();
  s.calib_path = "/c";
  s.calib_samples = -2;
  EXPECT_EQ(ValidateSpecFields(s, true).message(), "--calib-samples: -2 is not in 0..2147483648");
  s.calib_samples = 0;
  s.window_tokens = 1;
  EXPECT_EQ(ValidateSpecFields(s, true).message(), "--seq-len: must be in 2..1048576");
}

}  // namespace
}  // namespace quant::tasks
