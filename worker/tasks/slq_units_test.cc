// SLQ units: which linears are tied into one unit (DESIGN.md section 4), with and without
// --per-expert-bits; and the heat map of a per-expert allocation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "nlohmann/json.hpp"
#include "worker/tasks/slq_tasks.h"

namespace quant::tasks {
namespace {

const std::vector<std::string> kLayer = {
    "mlp.experts.0.gate_proj.weight", "mlp.experts.0.up_proj.weight",
    "mlp.experts.0.down_proj.weight", "mlp.experts.1.gate_proj.weight",
    "mlp.experts.1.up_proj.weight",   "mlp.experts.1.down_proj.weight",
    "mlp.shared_experts.gate_proj.weight", "mlp.shared_experts.up_proj.weight",
    "self_attn.q_a_proj.weight",      "self_attn.kv_a_proj_with_mqa.weight",
    "self_attn.o_proj.weight"};

TEST(SlqUnits, TiedByDefault) {
  const auto units = SlqUnitsOfLayer(kLayer);
  ASSERT_EQ(units.size(), 5u);
  EXPECT_EQ(units.at("mlp.experts.gate_up").size(), 4u);
  EXPECT_EQ(units.at("mlp.experts.down_proj").size(), 2u);
  EXPECT_EQ(units.at("mlp.shared_experts.gate_up").size(), 2u);
  EXPECT_EQ(units.at("self_attn.qkv_a").size(), 2u);
  EXPECT_EQ(units.at("self_attn.o_proj").size(), 1u);
}

TEST(SlqUnits, PerExpertUntiesRoutedExpertsOnly) {
  const auto units = SlqUnitsOfLayer(kLayer, /*per_expert=*/true);
  ASSERT_EQ(units.size(), 7u);
  EXPECT_EQ(units.at("mlp.experts.0.gate_up"),
            (std::vector<std::string>{"mlp.experts.0.gate_proj.weight",
                                      "mlp.experts.0.up_proj.weight"}));
  EXPECT_EQ(units.at("mlp.experts.1.down_proj"),
            (std::vector<std::string>{"mlp.experts.1.down_proj.weight"}));
  EXPECT_EQ(units.at("mlp.shared_experts.gate_up").size(), 2u);  // not a routed expert
  EXPECT_EQ(units.at("self_attn.qkv_a").size(), 2u);
  EXPECT_EQ(units.count("mlp.experts.gate_up"), 0u);
}

}  // namespace
}  // namespace quant::tasks

namespace quant::tasks {
namespace {

TEST(SlqHeatmap, PerExpertUnitsAverageIntoTheirTypeCell) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("slq_heatmap_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const nlohmann::json report = {
      {"mode", "budget"},
      {"average_bits", 3.25},
      {"units",
       {{{"unit", "model.layers.0.mlp.experts.0.gate_up"}, {"bits", 2}},
        {{"unit", "model.layers.0.mlp.experts.1.gate_up"}, {"bits", 4}},
        {{"unit", "model.layers.1.mlp.experts.0.down_proj"}, {"bits", 3}},
        {{"unit", "model.layers.1.self_attn.qkv_a"}, {"bits", 5}}}}};
  const std::string png = (dir / "bits.png").string();
  const absl::Status st = WriteSlqHeatmap(report, png);
  if (st.code() == absl::StatusCode::kUnavailable) GTEST_SKIP() << st;  // no gnuplot here
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_GT(fs::file_size(png), 1000u);
  EXPECT_FALSE(fs::exists(png + ".dat"));  // scratch files removed
  fs::remove_all(dir);
  EXPECT_FALSE(WriteSlqHeatmap({{"units", nlohmann::json::array()}}, png).ok());
}

}  // namespace
}  // namespace quant::tasks
