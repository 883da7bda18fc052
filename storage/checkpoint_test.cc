// Tests for Checkpoint: every shared model opens and reads; fp8 block dequantization against the
// bf16 original and against a hand-built example with partial edge blocks; one test per
// failure mode of a checkpoint directory, each checking that the error names the file.
#include "storage/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/storage_test_util.h"

namespace quant::storage {
namespace {

using ::quant::storage::testing::MakeTensor;
using ::quant::storage::testing::PatternTensor;
using ::quant::storage::testing::SafetensorsImage;
using ::quant::storage::testing::ScratchDir;
using ::quant::storage::testing::ShardContents;
using ::quant::storage::testing::WriteBytes;
using ::quant::storage::testing::WriteCheckpoint;
using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kModels = std::string(QUANT_SHARED_DIR) + "/models";

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& path,
                 const std::string& problem) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  EXPECT_THAT(std::string(status.message()), HasSubstr(problem));
  EXPECT_EQ(status.message().find('\n'), std::string_view::npos) << status;
}

absl::Status OpenStatus(const std::string& dir) { return Checkpoint::Open(dir).status(); }

bool IsFloat(DType d) {
  return d == DType::kBF16 || d == DType::kF16 || d == DType::kF32 || d == DType::kF64 ||
         d == DType::kF8E4M3;
}

std::vector<float> AsFloats(const HostTensor& t) {
  EXPECT_EQ(t.dtype, DType::kF32);
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// ---- The shared models ----

class SharedModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SharedModelTest, EveryTensorOpensAndReads) {
  const std::string dir = kModels + "/" + GetParam();
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  EXPECT_TRUE(c.config().contains("hidden_size"));
  const std::vector<std::string> names = c.Names();
  ASSERT_GT(names.size(), 10u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_TRUE(c.Has("model.embed_tokens.weight"));
  EXPECT_FALSE(c.Has("model.no_such.weight"));
  EXPECT_EQ(c.bytes_read(), 0u);

  uint64_t raw_bytes = 0;
  for (const std::string& name : names) {
    const TensorInfo* info = c.Info(name);
    ASSERT_NE(info, nullptr) << name;
    absl::StatusOr<HostTensor> raw = c.ReadRaw(name);
    ASSERT_TRUE(raw.ok()) << raw.status();
    EXPECT_EQ(raw->dtype, info->dtype);
    EXPECT_EQ(raw->shape, info->shape);
    EXPECT_EQ(raw->bytes.size(), info->end - info->begin);
    raw_bytes += raw->bytes.size();
    if (!IsFloat(info->dtype)) continue;
    absl::StatusOr<HostTensor> f = c.ReadF32(name);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->shape, info->shape);
    for (float v : AsFloats(*f)) ASSERT_TRUE(std::isfinite(v)) << name;
  }
  EXPECT_GE(c.bytes_read(), raw_bytes);  // ReadF32 of fp8 also reads the scales
  EXPECT_LE(raw_bytes, c.total_bytes());
  // The shards hold only headers besides the tensors.
  EXPECT_GT(raw_bytes, c.total_bytes() * 9 / 10);
}

TEST_P(SharedModelTest, ReferenceOutputsOpen) {
  const std::string path = kModels + "/" + GetParam() + "/reference_outputs.safetensors";
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* ids = (*f)->Find("input_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, DType::kI64);
  absl::StatusOr<HostTensor> t = (*f)->Read(*ids);
  ASSERT_TRUE(t.ok()) << t.status();
  // Token ids within the 4096-entry vocabulary; BOS (0) first but for the Kimi fixture, whose
  // ids are random (shared/README.md).
  for (int64_t k = 0; k < t->numel(); ++k) {
    ASSERT_GE(t->data<int64_t>()[k], 0);
    ASSERT_LT(t->data<int64_t>()[k], 4096);
  }
  if (GetParam() != "fixtures/tiny-kimi-k2") {
    EXPECT_EQ(t->data<int64_t>()[0], 0);
  }
  EXPECT_NE((*f)->Find("logits"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Models, SharedModelTest,
                         ::testing::Values("tiny-deepseek-v3", "tiny-qwen3-moe",
                                           "fixtures/tiny-deepseek-v3-fp8",
                                           "fixtures/tiny-kimi-k2"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// The fp8 fixture is the bf16 model quantized per 128x128 block. Rounding to e4m3 (3 mantissa
// bits) moves a normal value by at most half an ulp, 2^-4 of its magnitude; values in the
// subnormal range by at most half the subnormal step, 2^-10 times the block scale. Both bounds
// are checked element by element, and the relative Frobenius error is reported.
TEST(Fp8FixtureTest, DequantizedWeightsMatchTheBf16Model) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> fp8 =
      Checkpoint::Open(kModels + "/fixtures/tiny-deepseek-v3-fp8");
  absl::StatusOr<std::unique_ptr<Checkpoint>> bf16 =
      Checkpoint::Open(kModels + "/tiny-deepseek-v3");
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  int fp8_tensors = 0;
  double sum_err2 = 0, sum_ref2 = 0, worst_tensor_rel = 0, worst_elem_excess = 0;
  std::string worst_name;
  for (const std::string& name : (*fp8)->Names()) {
    const TensorInfo* info = (*fp8)->Info(name);
    if (absl::EndsWith(name, "_scale_inv")) {
      EXPECT_FALSE((*bf16)->Has(name)) << name;
      continue;
    }
    ASSERT_TRUE((*bf16)->Has(name)) << name;
    absl::StatusOr<HostTensor> got = (*fp8)->ReadF32(name);
    absl::StatusOr<HostTensor> want = (*bf16)->ReadF32(name);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(got->shape, want->shape) << name;
    const std::vector<float> g = AsFloats(*got);
    const std::vector<float> w = AsFloats(*want);
    if (info->dtype != DType::kF8E4M3) {
      EXPECT_EQ(g, w) << name << " is not fp8 and must be bit-identical";
      continue;
    }
    ++fp8_tensors;
    absl::StatusOr<HostTensor> scale = (*fp8)->ReadF32(name + "_scale_inv");
    ASSERT_TRUE(scale.ok());
    const int64_t rows = info->shape[0], cols = info->shape[1];
    const int64_t scale_cols = (cols + 127) / 128;
    double err2 = 0, ref2 = 0;
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        const double s = scale->data<float>()[(i / 128) * scale_cols + j / 128];
        const double ref = w[i * cols + j];
        const double err = std::fabs(static_cast<double>(g[i * cols + j]) - ref);
        // The slack covers the float product fp8 * scale, rounded by at most 2^-24 of its
        // value, which is at most 2^-20 of either bound.
        const double bound = std::max(std::fabs(ref) * 0x1p-4, s * 0x1p-10) * (1 + 0x1p-19);
        worst_elem_excess = std::max(worst_elem_excess, err / bound);
        err2 += err * err;
        ref2 += ref * ref;
      }
    }
    const double rel = std::sqrt(err2 / ref2);
    if (rel > worst_tensor_rel) {
      worst_tensor_rel = rel;
      worst_name = name;
    }
    sum_err2 += err2;
    sum_ref2 += ref2;
  }
  const double overall_rel = std::sqrt(sum_err2 / sum_ref2);
  std::printf(
      "fp8 vs bf16: %d tensors, relative Frobenius error overall %.4f, worst %.4f (%s), "
      "worst element at %.3f of its rounding bound\n",
      fp8_tensors, overall_rel, worst_tensor_rel, worst_name.c_str(), worst_elem_excess);
  RecordProperty("fp8_rel_error_overall", std::to_string(overall_rel));
  RecordProperty("fp8_rel_error_worst_tensor", std::to_string(worst_tensor_rel));
  EXPECT_EQ(fp8_tensors, 176);  // every linear but router, embeddings and lm_head
  EXPECT_LE(worst_elem_excess, 1.0);
  // Uniform rounding error of up to half an ulp has RMS ulp/sqrt(12); an ulp is at most 2^-3 of
  // the value, so RMS relative error <= 2^-3/sqrt(12) = 3.6%.
  EXPECT_LT(worst_tensor_rel, 0.036);
  EXPECT_LT(overall_rel, 0.036);
}

// ---- fp8 block math on hand-built checkpoints ----

// fp8 codes that are never NaN, from a fixed seed.
std::vector<uint8_t> RandomFp8Codes(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> codes(n);
  for (auto& c : codes) {
    do {
      c = static_cast<uint8_t>(rng());
    } while ((c & 0x7f) == 0x7f);
  }
  return codes;
}

struct Fp8Case {
  int64_t rows, cols, block_rows, block_cols;
  bool block_in_config;  // false: config omits weight_block_size (default 128)
};

class Fp8BlockTest : public ::testing::TestWithParam<Fp8Case> {};

TEST_P(Fp8BlockTest, ReadF32MatchesHandComputedAndReference) {
  const Fp8Case& c = GetParam();
  const int64_t srows = (c.rows + c.block_rows - 1) / c.block_rows;
  const int64_t scols = (c.cols + c.block_cols - 1) / c.block_cols;
  const std::vector<uint8_t> codes = RandomFp8Codes(c.rows * c.cols, 7);
  std::vector<float> scales(srows * scols);
  for (size_t k = 0; k < scales.size(); ++k) scales[k] = 0.5f + 0.25f * static_cast<float>(k);

  ScratchDir dir;
  json qc = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"}};
  if (c.block_in_config) qc["weight_block_size"] = {c.block_rows, c.block_cols};
  ShardContents shards;
  shards["model-00001-of-00001.safetensors"] = {
      {"m.weight", MakeTensor<uint8_t>(DType::kF8E4M3, {c.rows, c.cols}, codes)},
      {"m.weight_scale_inv", MakeTensor<float>(DType::kF32, {srows, scols}, scales)},
      {"norm.weight", MakeTensor<uint16_t>(DType::kBF16, {2}, {0x3f80, 0x4000})}};
  WriteCheckpoint(dir.path(), {{"hidden_size", 8}, {"quantization_config", qc}}, shards);
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<HostTensor> got = (*ckpt)->ReadF32("m.weight");
  ASSERT_TRUE(got.ok()) << got.status();

  std::vector<float> ref(c.rows * c.cols);
  DequantFp8Blocks_ref(codes.data(), c.rows, c.cols, scales.data(), c.block_rows, c.block_cols,
                       ref.data());
  EXPECT_EQ(AsFloats(*got), ref);
  // By hand: the block of element (i, j) is found by explicit range search, not division.
  for (int64_t i = 0; i < c.rows; ++i) {
    int64_t bi = 0;
    while (!(bi * c.block_rows <= i && i < (bi + 1) * c.block_rows)) ++bi;
    for (int64_t j = 0; j < c.cols; ++j) {
      int64_t bj = 0;
      while (!(bj * c.block_cols <= j && j < (bj + 1) * c.block_cols)) ++bj;
      const float want = F8E4M3ToFloat(codes[i * c.cols + j]) * scales[bi * scols + bj];
      ASSERT_EQ(got->data<float>()[i * c.cols + j], want) << i << "," << j;
    }
  }
  absl::StatusOr<HostTensor> norm = (*ckpt)->ReadF32("norm.weight");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(AsFloats(*norm), (std::vector<float>{1.0f, 2.0f}));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Fp8BlockTest,
    ::testing::Values(Fp8Case{130, 200, 128, 128, true},   // partial last block row and column
                      Fp8Case{130, 200, 128, 128, false},  // default block size
                      Fp8Case{100, 70, 32, 64, true},      // rectangular blocks, partial edges
                      Fp8Case{1, 1, 128, 128, true},       // one element, one partial block
                      Fp8Case{256, 128, 128, 128, true},   // exact multiples
                      Fp8Case{0, 5, 128, 128, true}));     // empty

TEST(DequantFp8BlocksTest, EdgeBlocksUseTheirOwnScale) {
  // 3x3 weight, 2x2 blocks: scale [[1, 2], [4, 8]]; the last row and column are partial blocks.
  const std::vector<uint8_t> one(9, 0x38);  // 1.0 in e4m3
  const float scale[4] = {1, 2, 4, 8};
  float out[9];
  DequantFp8Blocks_ref(one.data(), 3, 3, scale, 2, out);
  EXPECT_EQ(std::vector<float>(out, out + 9), (std::vector<float>{1, 1, 2, 1, 1, 2, 4, 4, 8}));
}

// ---- A checkpoint without an index ----

TEST(CheckpointTest, SingleModelSafetensorsWithoutIndex) {
  ScratchDir dir;
  ShardContents shards;
  shards["model.safetensors"] = {
      {"a.weight", MakeTensor<uint16_t>(DType::kF16, {2}, {0x3c00, 0xc000})},
      {"ids", MakeTensor<int64_t>(DType::kI64, {1}, {3})}};
  WriteCheckpoint(dir.path(), {{"model_type", "x"}}, shards, /*with_index=*/false);
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->Names(), (std::vector<std::string>{"a.weight", "ids"}));
  absl::StatusOr<HostTensor> a = (*ckpt)->ReadF32("a.weight");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(AsFloats(*a), (std::vector<float>{1.0f, -2.0f}));
  // Integer tensors are read raw; ReadF32 refuses them, naming the shard.
  ExpectError((*ckpt)->ReadF32("ids").status(), absl::StatusCode::kInvalidArgument,
              dir.File("model.safetensors"), "is I64; ReadF32 decodes floating-point");
  ExpectError((*ckpt)->ReadRaw("nope").status(), absl::StatusCode::kNotFound, dir.path(),
              "no tensor \"nope\"");
  EXPECT_EQ((*ckpt)->total_bytes(), std::filesystem::file_size(dir.File("model.safetensors")));
}

// ---- Failure modes ----

// A valid two-shard checkpoint to break in one way per test.
void WriteGoodCheckpoint(const std::string& dir) {
  ShardContents shards;
  shards["model-00001-of-00002.safetensors"] = {
      {"a.weight", PatternTensor(DType::kBF16, {4, 4}, 1)}};
  shards["model-00002-of-00002.safetensors"] = {{"b.weight", PatternTensor(DType::kF32, {3}, 2)}};
  WriteCheckpoint(dir, {{"model_type", "x"}}, shards);
}

TEST(CheckpointErrorTest, GoodCheckpointOpens) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->Names().size(), 2u);
}

TEST(CheckpointErrorTest, MissingDirectory) {
  ScratchDir dir;
  const std::string missing = dir.File("no-such-model");
  ExpectError(OpenStatus(missing), absl::StatusCode::kNotFound, missing,
              "checkpoint directory does not exist");
}

TEST(CheckpointErrorTest, PathIsAFile) {
  ScratchDir dir;
  WriteBytes(dir.File("f"), "x");
  ExpectError(OpenStatus(dir.File("f")), absl::StatusCode::kInvalidArgument, dir.File("f"),
              "not a directory");
}

TEST(CheckpointErrorTest, MissingConfig) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  std::filesystem::remove(dir.File("config.json"));
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kNotFound, dir.File("config.json"),
              "file not found");
}

// Running as root defeats chmod 000, so "unreadable" is a directory in config.json's place.
TEST(CheckpointErrorTest, UnreadableConfig) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  std::filesystem::remove(dir.File("config.json"));
  std::filesystem::create_directory(dir.File("config.json"));
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, dir.File("config.json"),
              "cannot read");
}

TEST(CheckpointErrorTest, ConfigNotJson) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  WriteBytes(dir.File("config.json"), "{\"hidden_size\": 256,");
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, dir.File("config.json"),
              "not valid JSON");
}

TEST(CheckpointErrorTest, ConfigNotAnObject) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  WriteBytes(dir.File("config.json"), "[1, 2]");
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, dir.File("config.json"),
              "expected a JSON object, got array");
}

TEST(CheckpointErrorTest, BadQuantizationConfig) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  WriteBytes(
      dir.File("config.json"),
      json({{"quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {0, 128}}}}})
          .dump());
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, dir.File("config.json"),
              "weight_block_size must be two positive integers, got [0,128]");
  WriteBytes(dir.File("config.json"), json({{"quantization_config", "fp8"}}).dump());
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, dir.File("config.json"),
              "quantization_config must be an object");
}

TEST(CheckpointErrorTest, NoIndexAndNoSingleShard) {
  ScratchDir dir;
  WriteBytes(dir.File("config.json"), "{}");
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kNotFound, dir.path(),
              "neither model.safetensors.index.json nor model.safetensors found");
}

TEST(CheckpointErrorTest, IndexNotJsonOrWithoutWeightMap) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string index = dir.File("model.safetensors.index.json");
  WriteBytes(index, "{\"weight_map\": {");
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, index, "not valid JSON");
  WriteBytes(index, "{\"metadata\": {}}");
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, index,
              "missing \"weight_map\"");
  WriteBytes(index, "{\"weight_map\": {}}");
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, index,
              "weight_map is empty");
}

TEST(CheckpointErrorTest, IndexPointingOutsideTheDirectory) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string index = dir.File("model.safetensors.index.json");
  for (const char* shard : {"../model-00001-of-00002.safetensors", "/etc/passwd", "..", ""}) {
    WriteBytes(index, json({{"weight_map", {{"a.weight", shard}}}}).dump());
    ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, index,
                "must name a shard file in the directory");
  }
  WriteBytes(index, json({{"weight_map", {{"a.weight", 3}}}}).dump());
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, index,
              "must name a shard file in the directory, got 3");
}

TEST(CheckpointErrorTest, ShardMissing) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string shard = dir.File("model-00002-of-00002.safetensors");
  std::filesystem::remove(shard);
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kNotFound, shard, "cannot open");
}

TEST(CheckpointErrorTest, TruncatedShard) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string shard = dir.File("model-00002-of-00002.safetensors");
  std::filesystem::resize_file(shard, 5);
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kDataLoss, shard,
              "file is 5 bytes, shorter than the 8-byte header length");
}

TEST(CheckpointErrorTest, ShardHeaderLengthPastEnd) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string shard = dir.File("model-00001-of-00002.safetensors");
  std::filesystem::resize_file(shard, 40);  // header itself is longer than that
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kDataLoss, shard,
              "runs past the end of the file (40 bytes");
}

TEST(CheckpointErrorTest, ShardWithCorruptHeader) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string shard = dir.File("model-00002-of-00002.safetensors");
  WriteBytes(shard, SafetensorsImage("{\"b.weight\": nope}", ""));
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, shard,
              "header is not valid JSON");
}

TEST(CheckpointErrorTest, ShardWithBadOffsetsOrDtype) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string shard = dir.File("model-00002-of-00002.safetensors");
  const struct {
    std::string header;
    std::string problem;
  } kCases[] = {
      {"{\"b.weight\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}",
       "run past the end of the data section (8 bytes)"},
      {"{\"b.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
       "overlap"},
      {"{\"b.weight\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "needs 12 bytes"},
      {"{\"b.weight\":{\"dtype\":\"INT4\",\"shape\":[3],\"data_offsets\":[0,8]}}",
       "unknown dtype \"INT4\""},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.header);
    WriteBytes(shard, SafetensorsImage(c.header, std::string(8, '\0')));
    ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument, shard, c.problem);
  }
}

TEST(CheckpointErrorTest, IndexedTensorMissingFromItsShard) {
  ScratchDir dir;
  WriteGoodCheckpoint(dir.path());
  const std::string index = dir.File("model.safetensors.index.json");
  WriteBytes(index, json({{"weight_map",
                           {{"a.weight", "model-00001-of-00002.safetensors"},
                            {"b.weight", "model-00002-of-00002.safetensors"},
                            {"c.weight", "model-00002-of-00002.safetensors"}}}})
                        .dump());
  const absl::Status s = OpenStatus(dir.path());
  ExpectError(s, absl::StatusCode::kNotFound, index, "tensor \"c.weight\" is mapped to shard");
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir.File("model-00002-of-00002.safetensors")));
}

TEST(CheckpointErrorTest, Fp8WithoutFp8QuantizationConfig) {
  ScratchDir dir;
  ShardContents shards;
  shards["model.safetensors"] = {
      {"m.weight", PatternTensor(DType::kF8E4M3, {4, 4}, 1)},
      {"m.weight_scale_inv", MakeTensor<float>(DType::kF32, {1, 1}, {1.0f})}};
  WriteCheckpoint(dir.path(), {{"model_type", "x"}}, shards);
  const absl::Status s = OpenStatus(dir.path());
  ExpectError(s, absl::StatusCode::kInvalidArgument, dir.File("model.safetensors"),
              "tensor \"m.weight\" is F8_E4M3 but");
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir.File("config.json")));
  // Another quantization method does not allow fp8 either.
  WriteBytes(dir.File("config.json"),
             json({{"quantization_config", {{"quant_method", "compressed-tensors"}}}}).dump());
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument,
              dir.File("model.safetensors"), "has no quantization_config with quant_method");
}

TEST(CheckpointErrorTest, IntegerDtypeForAWeight) {
  ScratchDir dir;
  ShardContents shards;
  shards["model.safetensors"] = {{"m.weight", PatternTensor(DType::kI32, {2, 2}, 1)}};
  WriteCheckpoint(dir.path(), {{"model_type", "x"}}, shards);
  ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument,
              dir.File("model.safetensors"),
              "tensor \"m.weight\" is I32; a .weight must be a floating-point dtype");
}

TEST(CheckpointErrorTest, Fp8ScaleMissingOrMisShaped) {
  const json config = {{"quantization_config", {{"quant_method", "fp8"}}}};
  {
    ScratchDir dir;
    ShardContents shards;
    shards["model.safetensors"] = {{"m.weight", PatternTensor(DType::kF8E4M3, {4, 4}, 1)}};
    WriteCheckpoint(dir.path(), config, shards);
    ExpectError(OpenStatus(dir.path()), absl::StatusCode::kNotFound, dir.File("model.safetensors"),
                "has no \"m.weight_scale_inv\"");
  }
  {
    ScratchDir dir;
    ShardContents shards;
    shards["model.safetensors"] = {
        {"m.weight", PatternTensor(DType::kF8E4M3, {130, 4}, 1)},
        {"m.weight_scale_inv", MakeTensor<float>(DType::kF32, {1, 1}, {1.0f})}};
    WriteCheckpoint(dir.path(), config, shards);
    ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument,
                dir.File("model.safetensors"),
                "\"m.weight_scale_inv\" must be F32 [2, 1] (weight [130, 4] in blocks of "
                "128x128), got F32 [1, 1]");
  }
  {
    ScratchDir dir;
    ShardContents shards;
    shards["model.safetensors"] = {{"m.bias", PatternTensor(DType::kF8E4M3, {4}, 1)}};
    WriteCheckpoint(dir.path(), config, shards);
    ExpectError(OpenStatus(dir.path()), absl::StatusCode::kInvalidArgument,
                dir.File("model.safetensors"), "only 2-D \".weight\" tensors may be fp8");
  }
}

}  // namespace
}  // namespace quant::storage
