// Tests for reading packed linears through Checkpoint: hand-built compressed-tensors and native
// checkpoints (words written here from the layout in docs/formats.md, not by packing.cc),
// target matching (exact, "re:", "Linear"), the names a loader sees, and one test per
// validation error, each checking that the message names the file and the tensor.
#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/checkpoint.h"
#include "storage/storage_test_util.h"

namespace quant::storage {
namespace {

using ::quant::storage::testing::MakeTensor;
using ::quant::storage::testing::ScratchDir;
using ::quant::storage::testing::ShardContents;
using ::quant::storage::testing::WriteCheckpoint;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kModule[] = "model.layers.0.mlp.experts.0.gate_proj";

std::string M(const std::string& suffix) { return std::string(kModule) + suffix; }

// A weight [2, 12] of 3-bit codes, groups of 4 (3 groups), asymmetric.
const std::vector<uint8_t> kCodes = {0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4,   // row 0
                                     3, 3, 0, 7, 1, 6, 2, 5, 4, 4, 0, 1};  // row 1
const std::vector<uint8_t> kZeros = {3, 4, 2, 5, 1, 6};                    // [2, 3]
// bf16 bit patterns: 0.5, 0.25, 2, 1, 0.125, 4.
const std::vector<uint16_t> kScaleBits = {0x3F00, 0x3E80, 0x4000, 0x3F80, 0x3E00, 0x4080};
const std::vector<float> kScales = {0.5f, 0.25f, 2.0f, 1.0f, 0.125f, 4.0f};

std::vector<float> Expected(bool symmetric, int bits) {
  std::vector<float> out;
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 12; ++j) {
      const int g = i * 3 + j / 4;
      const float zero = symmetric ? static_cast<float>(1 << (bits - 1)) : kZeros[g];
      out.push_back(kScales[g] * (static_cast<float>(kCodes[i * 12 + j]) - zero));
    }
  }
  return out;
}

// Words of one stream: `per_word` values of `bits` bits each (word-aligned, compressed-
// tensors) or all values back to back (per_word = 0: dense), LSB first.
std::vector<int32_t> Words(const std::vector<uint8_t>& values, int bits, int per_word) {
  std::vector<int32_t> words;
  if (per_word > 0) {
    for (size_t j = 0; j < values.size(); ++j) {
      if (j % per_word == 0) words.push_back(0);
      words.back() |= static_cast<int32_t>(values[j] << ((j % per_word) * bits));
    }
    return words;
  }
  uint64_t acc = 0;
  int used = 0;
  for (uint8_t v : values) {
    acc |= static_cast<uint64_t>(v) << used;
    used += bits;
    if (used >= 32) {
      words.push_back(static_cast<int32_t>(static_cast<uint32_t>(acc)));
      acc >>= 32;
      used -= 32;
    }
  }
  if (used > 0) words.push_back(static_cast<int32_t>(static_cast<uint32_t>(acc)));
  return words;
}

struct Layout {
  json qc;
  ShardContents shards;
};

// The module packed at 3 bits, word-aligned (compressed-tensors: 10 per word) or dense.
Layout Build(bool compressed_tensors, bool symmetric) {
  const int per_word = compressed_tensors ? 10 : 0;
  std::vector<int32_t> packed;
  for (int i = 0; i < 2; ++i) {
    std::vector<uint8_t> row(kCodes.begin() + i * 12, kCodes.begin() + (i + 1) * 12);
    for (int32_t w : Words(row, 3, per_word)) packed.push_back(w);
  }
  const int64_t row_words = static_cast<int64_t>(packed.size()) / 2;
  std::vector<std::pair<std::string, HostTensor>> tensors = {
      {M(".weight_packed"), MakeTensor(DType::kI32, {2, row_words}, packed)},
      {M(".weight_scale"), MakeTensor(DType::kBF16, {2, 3}, kScaleBits)},
      {M(".weight_shape"), MakeTensor(DType::kI64, {2}, std::vector<int64_t>{2, 12})},
      {"model.layers.0.input_layernorm.weight",
       MakeTensor(DType::kBF16, {2}, std::vector<uint16_t>{0x3F80, 0x3F80})},
      {"lm_head.weight", MakeTensor(DType::kBF16, {1, 2}, std::vector<uint16_t>{0, 0})}};
  if (!symmetric) {
    // Column streams down the 2 rows: one word per column.
    std::vector<int32_t> zp(3);
    for (int k = 0; k < 3; ++k) zp[k] = Words({kZeros[k], kZeros[3 + k]}, 3, per_word)[0];
    tensors.push_back({M(".weight_zero_point"), MakeTensor(DType::kI32, {1, 3}, zp)});
  }
  json weights = {{"num_bits", 3},       {"type", "int"},       {"symmetric", symmetric},
                  {"strategy", "group"}, {"group_size", 4},     {"dynamic", false},
                  {"actorder", nullptr}, {"observer", "minmax"}};
  json qc = {{"config_groups", {{"group_0", {{"targets", {kModule}}, {"weights", weights}}}}},
             {"ignore", {"lm_head"}}};
  if (compressed_tensors) {
    qc["quant_method"] = "compressed-tensors";
    qc["format"] = "pack-quantized";
    qc["quantization_status"] = "compressed";
  } else {
    qc["quant_method"] = "moe-quant-native";
    qc["format"] = "dense-packed";
    qc["version"] = 1;
  }
  return {qc, {{"model.safetensors", tensors}}};
}

void Write(const ScratchDir& dir, const Layout& layout) {
  WriteCheckpoint(dir.path(), {{"hidden_size", 2}, {"quantization_config", layout.qc}},
                  layout.shards);
}

std::vector<float> Floats(const HostTensor& t) {
  EXPECT_EQ(t.dtype, DType::kF32);
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

class PackedCheckpointTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(PackedCheckpointTest, DecodesHandPackedWords) {
  const auto [compressed_tensors, symmetric] = GetParam();
  ScratchDir dir;
  Write(dir, Build(compressed_tensors, symmetric));
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  const std::string weight = M(".weight");
  auto w = c.ReadF32(weight);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 12}));
  EXPECT_EQ(Floats(*w), Expected(symmetric, 3));
  // ReadRaw of the logical weight decodes the same way (it has no bytes of its own).
  auto raw = c.ReadRaw(weight);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->bytes, w->bytes);

  // What a loader sees: the weight, not its parts.
  std::vector<std::string> want = {"lm_head.weight", "model.layers.0.input_layernorm.weight",
                                   weight};
  EXPECT_EQ(c.Names(), want);
  EXPECT_TRUE(c.Has(weight));
  EXPECT_TRUE(c.Has(M(".weight_packed")));
  EXPECT_EQ(c.StoredNames().size(), symmetric ? 5u : 6u);
  const TensorInfo* info = c.Info(weight);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dtype, DType::kF32);
  EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 12}));
  const PackedWeight* p = c.Packed(weight);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->module, kModule);
  EXPECT_EQ(p->bits, 3);
  EXPECT_EQ(p->group_size, 4);
  EXPECT_EQ(p->symmetric, symmetric);
  EXPECT_EQ(p->layout, compressed_tensors ? PackLayout::kWordAligned : PackLayout::kDense);
  EXPECT_EQ(p->config_group, "group_0");
  EXPECT_EQ(c.Packed("lm_head.weight"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(FormatsAndGrids, PackedCheckpointTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(PackedCheckpointTest, RegexAndLinearTargetsAndChannelStrategy) {
  for (const char* target :
       {"re:model\\.layers\\.\\d+\\.mlp\\.experts\\..*", "re:model", "Linear"}) {
    SCOPED_TRACE(target);
    ScratchDir dir;
    Layout layout = Build(/*compressed_tensors=*/true, /*symmetric=*/true);
    layout.qc["config_groups"]["group_0"]["targets"] = {target};
    // A second group with an exact name for another module does not capture ours.
    layout.qc["config_groups"]["group_1"] = {
        {"targets", {"other"}}, {"weights", {{"num_bits", 8}, {"strategy", "channel"}}}};
    Write(dir, layout);
    auto ckpt = Checkpoint::Open(dir.path());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ((*ckpt)->Packed(M(".weight"))->config_group, "group_0");
  }
  // "re:" matches from the start of the name, as Python's re.match.
  ScratchDir dir;
  Layout layout = Build(true, true);
  layout.qc["config_groups"]["group_0"]["targets"] = {"re:layers"};
  Write(dir, layout);
  EXPECT_THAT(std::string(Checkpoint::Open(dir.path()).status().message()),
              HasSubstr("matches no target"));

  // Per channel: one bf16 scale per row, [out, 1].
  ScratchDir channel_dir;
  Layout channel = Build(true, true);
  channel.qc["config_groups"]["group_0"]["weights"]["strategy"] = "channel";
  channel.qc["config_groups"]["group_0"]["weights"].erase("group_size");
  for (auto& [name, t] : channel.shards["model.safetensors"]) {
    if (name == M(".weight_scale")) {
      t = MakeTensor(DType::kBF16, {2, 1}, std::vector<uint16_t>{0x3F00, 0x4000});  // 0.5, 2
    }
  }
  Write(channel_dir, channel);
  auto ckpt = Checkpoint::Open(channel_dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = (*ckpt)->ReadF32(M(".weight"));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->data<float>()[1], 0.5f * (1 - 4));
  EXPECT_EQ(w->data<float>()[12], 2.0f * (3 - 4));
}

// ---- Validation errors: one line naming the file and the tensor.

void ExpectOpenError(const ScratchDir& dir, const std::string& file, const std::string& problem) {
  const absl::Status s = Checkpoint::Open(dir.path()).status();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(file)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(problem)) << s;
  EXPECT_EQ(s.message().find('\n'), std::string_view::npos) << s;
}

void Replace(Layout* layout, const std::string& name, HostTensor t) {
  for (auto& [n, old] : layout->shards["model.safetensors"]) {
    if (n == name) old = std::move(t);
  }
}

void Remove(Layout* layout, const std::string& name) {
  auto& v = layout->shards["model.safetensors"];
  v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& e) { return e.first == name; }),
          v.end());
}

TEST(PackedCheckpointErrorTest, PartsMissingOrMisShaped) {
  const std::string shard_suffix = "/model.safetensors";
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    Remove(&l, M(".weight_shape"));
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix, "has no \"" + M(".weight_shape") + "\"");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    Replace(&l, M(".weight_packed"), MakeTensor(DType::kI32, {2, 1}, std::vector<int32_t>{0, 0}));
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix,
                    "tensor \"" + M(".weight_packed") + "\" must be I32 [2, 2]");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    Replace(&l, M(".weight_scale"), MakeTensor(DType::kI32, {2, 3}, std::vector<int32_t>(6)));
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix,
                    "tensor \"" + M(".weight_scale") + "\" must be BF16/F16/F32 [2, 3]");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, false);
    Remove(&l, M(".weight_zero_point"));
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix, "has no \"" + M(".weight_zero_point") + "\"");
  }
  {
    ScratchDir dir;
    Layout l = Build(false, true);
    Replace(&l, M(".weight_shape"), MakeTensor(DType::kI64, {2}, std::vector<int64_t>{2, -12}));
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix, "dimensions must be in 1..2^31");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.shards["model.safetensors"].push_back(
        {M(".weight"), MakeTensor(DType::kBF16, {1}, std::vector<uint16_t>{0})});
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix, "a linear is either packed or not");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.shards["model.safetensors"].push_back(
        {M(".weight_g_idx"), MakeTensor(DType::kI32, {12}, std::vector<int32_t>(12))});
    Write(dir, l);
    ExpectOpenError(dir, dir.path() + shard_suffix, "act-order group indices");
  }
}

TEST(PackedCheckpointErrorTest, QuantizationConfigProblems) {
  const auto config_path = [](const ScratchDir& d) { return d.File("config.json"); };
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.qc.erase("quant_method");
    Write(dir, l);
    ExpectOpenError(dir, config_path(dir), "is packed but");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.qc["format"] = "naive-quantized";
    Write(dir, l);
    ExpectOpenError(dir, config_path(dir), "quantization_config.format is \"naive-quantized\"");
  }
  {
    ScratchDir dir;
    Layout l = Build(false, true);
    l.qc["version"] = 2;
    Write(dir, l);
    ExpectOpenError(dir, config_path(dir), "quantization_config.version expected 1, got 2");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.qc["config_groups"]["group_0"]["weights"]["strategy"] = "tensor";
    Write(dir, l);
    ExpectOpenError(dir, dir.File("model.safetensors"), "weights strategy \"tensor\"");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.qc["config_groups"]["group_0"]["weights"]["num_bits"] = 9;
    Write(dir, l);
    ExpectOpenError(dir, config_path(dir), "num_bits must be an integer in 1..8, got 9");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.qc["config_groups"]["group_0"]["targets"] = {"re:("};
    Write(dir, l);
    ExpectOpenError(dir, config_path(dir), "is not a valid regex");
  }
  {
    ScratchDir dir;
    Layout l = Build(true, true);
    l.qc["config_groups"]["group_0"]["targets"] = {"model.layers.0.mlp.experts.1.gate_proj"};
    Write(dir, l);
    ExpectOpenError(dir, dir.File("model.safetensors"), "matches no target");
  }
}

TEST(PackedCheckpointTest, UnpackedCheckpointsAreUnchanged) {
  // A compressed-tensors config without packed tensors (e.g. sparsity only) still opens, and
  // Names() equals StoredNames().
  ScratchDir dir;
  WriteCheckpoint(
      dir.path(),
      {{"quantization_config", {{"quant_method", "compressed-tensors"}, {"format", "dense"}}}},
      {{"model.safetensors",
        {{"a.weight", MakeTensor(DType::kBF16, {1}, std::vector<uint16_t>{0})}}}});
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->Names(), (*ckpt)->StoredNames());
  EXPECT_EQ((*ckpt)->num_packed(), 0u);
}

}  // namespace
}  // namespace quant::storage
