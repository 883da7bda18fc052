// config.json against the checkpoint's index: every shared model passes; each way a config can
// disagree with its tensors fails at open with one line naming config.json and the field, and a
// config claiming a billion layers is refused at once.
#include "job/config_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace quant::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kModels = std::string(QUANT_SHARED_DIR) + "/models";

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class ConfigCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("config_check_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // A copy of a shared model whose config.json and index are files of ours (shards linked),
  // with `edit` applied to the config.
  fs::path Copy(const std::string& model, const std::function<void(json&)>& edit) {
    const fs::path src = kModels + "/" + model;
    const fs::path dst =
        tmp_ / (fs::path(model).filename().string() + "-" + std::to_string(++copies_));
    fs::create_directories(dst);
    for (const auto& entry : fs::directory_iterator(src)) {
      if (entry.path().extension() == ".safetensors") {
        fs::create_symlink(entry.path(), dst / entry.path().filename());
      }
    }
    fs::copy_file(src / "model.safetensors.index.json", dst / "model.safetensors.index.json");
    json config = json::parse(ReadFile(src / "config.json"));
    edit(config);
    std::ofstream(dst / "config.json") << config.dump(1);
    return dst;
  }

  static absl::StatusOr<ModelConfig> Read(const fs::path& dir) {
    auto checkpoint = storage::Checkpoint::Open(dir.string());
    if (!checkpoint.ok()) return checkpoint.status();
    return ReadModelConfig(**checkpoint);
  }

  // Opening `dir` fails with one line naming its config.json and each of `needles`.
  static void ExpectRefused(const fs::path& dir, const std::vector<std::string>& needles) {
    auto config = Read(dir);
    ASSERT_FALSE(config.ok()) << "accepted " << dir;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
    const std::string message(config.status().message());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_THAT(message, HasSubstr((dir / "config.json").string()));
    for (const std::string& n : needles) EXPECT_THAT(message, HasSubstr(n));
  }

  fs::path tmp_;
  int copies_ = 0;
};

TEST_F(ConfigCheckTest, EverySharedModelPasses) {
  for (const std::string model : {"tiny-deepseek-v3", "tiny-qwen3-moe", "fixtures/tiny-kimi-k2",
                                  "fixtures/tiny-deepseek-v3-fp8"}) {
    auto checkpoint = storage::Checkpoint::Open(kModels + "/" + model);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    auto config = ReadModelConfig(**checkpoint);
    EXPECT_TRUE(config.ok()) << model << ": " << config.status();
  }
}

// The config that grew qctl to 23 GB and kept the coordinator's Submit busy for 14 s.
TEST_F(ConfigCheckTest, ABillionLayersIsRefusedAtOnce) {
  const fs::path dir = Copy("tiny-qwen3-moe", [](json& c) { c["num_hidden_layers"] = 1000000000; });
  auto checkpoint = storage::Checkpoint::Open(dir.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const auto start = std::chrono::steady_clock::now();
  auto config = ReadModelConfig(**checkpoint);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(config.ok());
  EXPECT_LT(seconds, 0.1);  // one pass over 423 names; measured ~1 ms
  ExpectRefused(dir, {"field 'num_hidden_layers' is 1000000000", "layer 4", "model.layers.4."});
}

TEST_F(ConfigCheckTest, LayerCountsThatDisagreeNameNumHiddenLayers) {
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["num_hidden_layers"] = 5; }),
                {"'num_hidden_layers' is 5", "no tensors of layer 4"});
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["num_hidden_layers"] = 2; }),
                {"'num_hidden_layers' is 2", "tensors of layer 3"});
  // DeepSeek-V3 keeps its multi-token-prediction layers after the decoder layers.
  auto mtp = Read(Copy("tiny-deepseek-v3", [](json& c) {
    c["num_hidden_layers"] = 3;
    c["num_nextn_predict_layers"] = 1;
  }));
  EXPECT_TRUE(mtp.ok()) << mtp.status();
}

TEST_F(ConfigCheckTest, ExpertCountsThatDisagreeNameTheExpertField) {
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["n_routed_experts"] = 8; }),
                {"'n_routed_experts' is 8", "model.layers.1.mlp.gate."});
  ExpectRefused(Copy("tiny-qwen3-moe", [](json& c) { c["num_experts"] = 64; }),
                {"'num_experts' is 64"});
  // An index that lacks one expert (the router still has 16 rows): named by its number.
  const fs::path dir = Copy("tiny-deepseek-v3", [](json&) {});
  json index = json::parse(ReadFile(dir / "model.safetensors.index.json"));
  for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
    index["weight_map"].erase(std::string("model.layers.2.mlp.experts.15.") + p + ".weight");
  }
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << index.dump();
  ExpectRefused(
      dir, {"'n_routed_experts' is 16", "layer 2", "15 experts", "model.layers.2.mlp.experts.15."});
}

TEST_F(ConfigCheckTest, DenseAndMoeLayersThatDisagreeNameTheLayoutFields) {
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["first_k_dense_replace"] = 0; }),
                {"'first_k_dense_replace'", "layer 0 an MoE layer", "no experts"});
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["first_k_dense_replace"] = 2; }),
                {"'first_k_dense_replace'", "layer 1 dense", "model.layers.1.mlp.experts."});
  ExpectRefused(Copy("tiny-qwen3-moe", [](json& c) { c["mlp_only_layers"] = {1}; }),
                {"'mlp_only_layers'", "layer 1 dense"});
}

TEST_F(ConfigCheckTest, ShapesThatDisagreeNameTheirField) {
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["hidden_size"] = 512; }),
                {"'hidden_size' is 512", "lm_head.weight has shape [4096, 256]"});
  ExpectRefused(Copy("tiny-qwen3-moe", [](json& c) { c["vocab_size"] = 8192; }),
                {"'vocab_size' is 8192"});
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["intermediate_size"] = 1024; }),
                {"'intermediate_size' is 1024", "model.layers.0.mlp.down_proj.weight"});
  ExpectRefused(Copy("tiny-qwen3-moe", [](json& c) { c["moe_intermediate_size"] = 128; }),
                {"'moe_intermediate_size' is 128", "mlp.experts.0.down_proj.weight"});
  ExpectRefused(Copy("tiny-deepseek-v3", [](json& c) { c["n_shared_experts"] = 2; }),
                {"'n_shared_experts' is 2", "mlp.shared_experts.down_proj.weight"});
  // The fp8 fixture: shapes come from the fp8 weights' headers alike.
  ExpectRefused(Copy("fixtures/tiny-deepseek-v3-fp8", [](json& c) { c["hidden_size"] = 128; }),
                {"'hidden_size' is 128"});
}

}  // namespace
}  // namespace quant::model
