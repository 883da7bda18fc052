// Tests for ExportCheckpoint: RTN units of tiny-qwen3-moe exported in both formats and read back
// through storage::Checkpoint (bit for bit against QuantizedWeight::Dequantize), through the
// model loader, and through the independent tests/format/decode_ct.py; sharding, manifest,
// bits per parameter, fp8 sources, and the atomicity rules (no partial output, ever).
#include "worker/quant/export.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/checkpoint.h"
#include "storage/packing.h"
#include "tests/sha256_hex.h"
#include "worker/model/model.h"

namespace quant::quant {
namespace {

using ::quant::testing::Sha256Hex;

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

const std::string kQwen = std::string(QUANT_SHARED_DIR) + "/models/tiny-qwen3-moe";
const std::string kFp8 = std::string(QUANT_SHARED_DIR) + "/models/fixtures/tiny-deepseek-v3-fp8";
const std::string kDecoder = std::string(QUANT_SOURCE_DIR) + "/tests/format/decode_ct.py";

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = ::testing::TempDir() + "export_test_XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << pattern;
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  // Entries directly inside, sorted.
  std::vector<std::string> Entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

json ReadJson(const std::string& path) { return json::parse(ReadFile(path)); }

std::unique_ptr<storage::Checkpoint> OpenOrDie(const std::string& dir) {
  auto ckpt = storage::Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  return ckpt.ok() ? std::move(*ckpt) : nullptr;
}

at::Tensor ReadTensor(const storage::Checkpoint& ckpt, const std::string& name) {
  auto host = ckpt.ReadF32(name);
  EXPECT_TRUE(host.ok()) << host.status();
  if (!host.ok()) return at::Tensor();
  return at::from_blob(host->bytes.data(), host->shape, at::kFloat).clone();
}

std::string TensorBytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

struct UnitSpec {
  std::string name;
  int bits;
  Grid grid;
};

// "<module>.weight" -> "<module>".
std::string ModuleOf(const std::string& weight_name) {
  EXPECT_TRUE(weight_name.ends_with(".weight")) << weight_name;
  return weight_name.substr(0, weight_name.size() - std::strlen(".weight"));
}

std::string Expert(int layer, int expert, const std::string& linear) {
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert) + "." +
         linear + ".weight";
}

// A mix that covers both containers (4 and 8), both grids, groups of 128 and the per-channel
// fallback (down_proj has 64 inputs, fewer than a group).
std::vector<UnitSpec> MixedSpecs() {
  return {
      {Expert(0, 0, "gate_proj"), 3, Grid::kSymmetric},
      {Expert(0, 0, "up_proj"), 3, Grid::kSymmetric},
      {Expert(0, 0, "down_proj"), 3, Grid::kSymmetric},  // per channel
      {Expert(0, 1, "gate_proj"), 3, Grid::kAsymmetric},
      {Expert(0, 1, "up_proj"), 3, Grid::kAsymmetric},
      {Expert(0, 1, "down_proj"), 3, Grid::kAsymmetric},
      {Expert(1, 2, "gate_proj"), 2, Grid::kSymmetric},
      {Expert(1, 2, "up_proj"), 2, Grid::kAsymmetric},
      {Expert(1, 2, "down_proj"), 4, Grid::kAsymmetric},
      {Expert(2, 3, "gate_proj"), 5, Grid::kAsymmetric},
      {Expert(2, 3, "up_proj"), 8, Grid::kSymmetric},
      {Expert(2, 3, "down_proj"), 6, Grid::kSymmetric},
      {Expert(3, 4, "down_proj"), 7, Grid::kAsymmetric},
  };
}

std::map<std::string, QuantizedWeight> Quantize(const storage::Checkpoint& source,
                                                const std::vector<UnitSpec>& specs) {
  std::map<std::string, QuantizedWeight> units;
  RtnQuantizer rtn;
  for (const UnitSpec& spec : specs) {
    QuantScheme scheme;
    scheme.bits = spec.bits;
    scheme.grid = spec.grid;
    auto q = rtn.Quantize(ReadTensor(source, spec.name), scheme, UnitContext{});
    EXPECT_TRUE(q.ok()) << spec.name << ": " << q.status();
    if (q.ok()) units.emplace(spec.name, std::move(*q));
  }
  return units;
}

std::vector<std::string> AllExperts(const storage::Checkpoint& source) {
  std::vector<std::string> out;
  for (const std::string& name : source.Names()) {
    if (name.find(".mlp.experts.") != std::string::npos && name.ends_with(".weight")) {
      out.push_back(name);
    }
  }
  return out;
}

// Expected bits per parameter, counted here from the definition in docs/formats.md.
struct ExpectedBits {
  double quant_true, quant_stored, all_true, all_stored;
  int64_t quantized_params, total_params;
};

ExpectedBits Expect(const storage::Checkpoint& source,
                    const std::map<std::string, QuantizedWeight>& units, ExportFormat format) {
  double q_true = 0, q_stored = 0, other = 0;
  int64_t q_params = 0, total = 0;
  for (const std::string& name : source.Names()) {
    const storage::TensorInfo* info = source.Info(name);
    const int64_t numel = storage::NumElements(info->shape);
    total += numel;
    auto it = units.find(name);
    if (it == units.end()) {
      other += numel * 8.0 * storage::DTypeSize(info->dtype);
      continue;
    }
    const QuantizedWeight& qw = it->second;
    const int b = qw.scheme.bits;
    const int c = format == ExportFormat::kNative ? b : (b <= 4 ? 4 : 8);
    const double groups = static_cast<double>(qw.scales.numel());
    const bool asym = qw.scheme.grid == Grid::kAsymmetric;
    q_true += numel * b + groups * 16 + (asym ? groups * b : 0);
    q_stored += numel * c + groups * 16 + (asym ? groups * c : 0);
    q_params += numel;
  }
  return {q_true / q_params,
          q_stored / q_params,
          (q_true + other) / total,
          (q_stored + other) / total,
          q_params,
          total};
}

class ExportFormatTest : public ::testing::TestWithParam<ExportFormat> {};

TEST_P(ExportFormatTest, ReadsBackBitForBit) {
  const ExportFormat format = GetParam();
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const std::map<std::string, QuantizedWeight> units = Quantize(*source, MixedSpecs());
  ScratchDir scratch;
  ExportOptions options;
  options.format = format;
  options.out_dir = scratch.File("out");
  options.job_options = {{"method", "rtn"}, {"seed", 1}};
  auto stats = ExportCheckpoint(*source, units, options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(scratch.Entries(), std::vector<std::string>{"out"});  // no temporary left

  auto out = OpenOrDie(options.out_dir);
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(out->num_packed(), units.size());
  // The loader sees the names of the source, packed parts hidden.
  EXPECT_EQ(out->Names(), source->Names());
  for (const auto& [name, qw] : units) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(out->Has(name));
    const storage::PackedWeight* p = out->Packed(name);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->bits, ContainerBits(qw.scheme.bits, format));
    EXPECT_EQ(p->symmetric, qw.scheme.grid == Grid::kSymmetric);
    EXPECT_EQ(p->group_size, qw.group_size);
    const storage::TensorInfo* info = out->Info(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, storage::DType::kF32);
    EXPECT_EQ(info->shape, (std::vector<int64_t>{qw.codes.size(0), qw.codes.size(1)}));
    // Bit for bit what the quantizer's own dequantization gives.
    EXPECT_EQ(TensorBytes(ReadTensor(*out, name)), TensorBytes(qw.Dequantize()));
    const std::string module = ModuleOf(name);
    for (const char* part : {".weight_packed", ".weight_scale", ".weight_shape"}) {
      EXPECT_TRUE(out->Has(module + part)) << part;
    }
    EXPECT_EQ(out->Has(module + ".weight_zero_point"), qw.scheme.grid == Grid::kAsymmetric);
  }
  // Everything else byte for byte, dtype and shape as stored.
  for (const std::string& name : source->Names()) {
    if (units.count(name)) continue;
    SCOPED_TRACE(name);
    auto a = source->ReadRaw(name);
    auto b = out->ReadRaw(name);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->dtype, b->dtype);
    EXPECT_EQ(a->shape, b->shape);
    EXPECT_TRUE(a->bytes == b->bytes);
  }
  for (const char* side : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_EQ(ReadFile(options.out_dir + "/" + side), ReadFile(kQwen + "/" + side)) << side;
  }

  // config.json: the source's keys, plus quantization_config.
  const json config = ReadJson(options.out_dir + "/config.json");
  const json src_config = ReadJson(kQwen + "/config.json");
  for (const auto& [key, value] : src_config.items()) EXPECT_EQ(config[key], value) << key;
  const json& qc = config["quantization_config"];
  std::set<std::string> ignore = qc["ignore"].get<std::set<std::string>>();
  EXPECT_TRUE(ignore.count("lm_head"));
  EXPECT_TRUE(ignore.count("model.layers.0.mlp.gate"));
  EXPECT_TRUE(ignore.count("model.layers.3.self_attn.o_proj"));
  EXPECT_TRUE(ignore.count("model.layers.0.mlp.experts.5.up_proj"));  // not a unit: bf16
  EXPECT_FALSE(ignore.count("model.layers.0.mlp.experts.0.up_proj"));
  EXPECT_FALSE(ignore.count("model.embed_tokens"));
  std::set<std::string> targeted;
  for (const auto& [group_name, group] : qc["config_groups"].items()) {
    const json& w = group["weights"];
    EXPECT_EQ(w["type"], "int");
    EXPECT_EQ(w["dynamic"], false);
    EXPECT_TRUE(w["actorder"].is_null());
    EXPECT_EQ(w["observer"], "minmax");
    EXPECT_TRUE(group["input_activations"].is_null());
    for (const std::string& t : group["targets"]) {
      EXPECT_TRUE(targeted.insert(t).second) << t << " in two groups";
      const QuantizedWeight& qw = units.at(t + ".weight");
      EXPECT_EQ(w["num_bits"], ContainerBits(qw.scheme.bits, format)) << t;
      EXPECT_EQ(w["symmetric"], qw.scheme.grid == Grid::kSymmetric) << t;
      const bool channel = qw.group_size == qw.codes.size(1);
      EXPECT_EQ(w["strategy"], channel ? "channel" : "group") << t;
      if (!channel) EXPECT_EQ(w["group_size"], qw.group_size) << t;
    }
  }
  EXPECT_EQ(targeted.size(), units.size());
  if (format == ExportFormat::kVllm) {
    EXPECT_EQ(qc["quant_method"], "compressed-tensors");
    EXPECT_EQ(qc["format"], "pack-quantized");
    EXPECT_EQ(qc["quantization_status"], "compressed");
    EXPECT_TRUE(qc["kv_cache_scheme"].is_null());
    // 4 vLLM groups: (4, sym, group), (4, sym, channel), (4, asym, group), (4, asym, channel),
    // (8, asym, group), (8, sym, group), (8, sym, channel), (8, asym, channel).
    EXPECT_EQ(qc["config_groups"].size(), 8u);
    EXPECT_THAT(stats->container_note, HasSubstr("2, 3-bit codes stored in 4-bit containers"));
    EXPECT_THAT(stats->container_note, HasSubstr("5, 6, 7-bit codes stored in 8-bit containers"));
  } else {
    EXPECT_EQ(qc["quant_method"], "moe-quant-native");
    EXPECT_EQ(qc["format"], "dense-packed");
    EXPECT_EQ(qc["version"], 1);
    EXPECT_EQ(stats->container_note, "");
  }

  // Index and manifest.
  const json index = ReadJson(options.out_dir + "/model.safetensors.index.json");
  EXPECT_EQ(index["weight_map"].size(), out->StoredNames().size());
  int64_t total_size = 0;
  for (const std::string& name : out->StoredNames()) {
    const storage::TensorInfo* info = out->Info(name);
    total_size += info->end - info->begin;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total_size);
  const json manifest = ReadJson(options.out_dir + "/quant_manifest.json");
  EXPECT_EQ(manifest["format_version"], 1);
  EXPECT_EQ(manifest["tool"], "moe-quant");
  EXPECT_EQ(manifest["tool_version"], options.tool_version);
  EXPECT_EQ(manifest["options"], options.job_options);
  EXPECT_EQ(manifest["export"], format == ExportFormat::kVllm ? "vllm" : "native");
  const std::string fingerprint_input = ReadFile(kQwen + "/config.json") + std::string(1, '\0') +
                                        ReadFile(kQwen + "/model.safetensors.index.json") +
                                        std::string(1, '\0') + options.job_options.dump();
  EXPECT_EQ(manifest["fingerprint"], Sha256Hex(fingerprint_input));
  ASSERT_EQ(manifest["shards"].size(), stats->shards.size());
  for (const json& shard : manifest["shards"]) {
    const std::string bytes = ReadFile(options.out_dir + "/" + shard["file"].get<std::string>());
    EXPECT_EQ(shard["bytes"], bytes.size());
    EXPECT_EQ(shard["sha256"], Sha256Hex(bytes));
  }
  for (const json& file : manifest["files"]) {
    const std::string bytes = ReadFile(options.out_dir + "/" + file["file"].get<std::string>());
    EXPECT_EQ(file["sha256"], Sha256Hex(bytes)) << file["file"];
  }
  ASSERT_EQ(manifest["units"].size(), units.size());
  for (const auto& [name, qw] : units) {
    const json& u = manifest["units"][name];
    EXPECT_EQ(u["bits"], qw.scheme.bits);
    EXPECT_EQ(u["container_bits"], ContainerBits(qw.scheme.bits, format));
    EXPECT_EQ(u["grid"], qw.scheme.grid == Grid::kSymmetric ? "sym" : "asym");
    EXPECT_EQ(u["group_size"], qw.group_size);
  }

  // Bits per parameter.
  const ExpectedBits want = Expect(*source, units, format);
  EXPECT_EQ(stats->quantized_params, want.quantized_params);
  EXPECT_EQ(stats->total_params, want.total_params);
  EXPECT_DOUBLE_EQ(stats->bits_per_quantized_param_true, want.quant_true);
  EXPECT_DOUBLE_EQ(stats->bits_per_quantized_param_stored, want.quant_stored);
  EXPECT_DOUBLE_EQ(stats->bits_per_param_true, want.all_true);
  EXPECT_DOUBLE_EQ(stats->bits_per_param_stored, want.all_stored);
  EXPECT_DOUBLE_EQ(manifest["bits_per_param"]["bits_per_param_true"].get<double>(), want.all_true);
  int64_t written = 0;
  for (const auto& e : fs::directory_iterator(options.out_dir)) written += e.file_size();
  EXPECT_EQ(stats->bytes_written, written);
}

TEST_P(ExportFormatTest, StoredWordsFollowTheDocumentedLayout) {
  // Row 0 of a symmetric 3-bit unit, packed by hand from docs/formats.md: vLLM stores
  // u + 2^(4-1) - 2^(3-1) = u + 4 in nibbles; native stores u in dense 3-bit fields.
  const ExportFormat format = GetParam();
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const std::string name = Expert(0, 0, "down_proj");
  const auto units = Quantize(
      *source, {{name, 3, Grid::kSymmetric}, {Expert(0, 1, "up_proj"), 3, Grid::kAsymmetric}});
  ScratchDir scratch;
  ExportOptions options;
  options.format = format;
  options.out_dir = scratch.File("out");
  ASSERT_TRUE(ExportCheckpoint(*source, units, options).ok());
  auto out = OpenOrDie(options.out_dir);
  ASSERT_NE(out, nullptr);
  const std::string module = ModuleOf(name);
  auto packed = out->ReadRaw(module + ".weight_packed");
  ASSERT_TRUE(packed.ok());
  const at::Tensor codes = units.at(name).codes;
  const int64_t in = codes.size(1);  // 64
  const int c = format == ExportFormat::kVllm ? 4 : 3;
  ASSERT_EQ(packed->shape, (std::vector<int64_t>{codes.size(0), (in * c + 31) / 32}));
  const uint8_t* u = codes.data_ptr<uint8_t>();
  std::vector<uint32_t> want(static_cast<size_t>(packed->shape[1]), 0);
  for (int64_t j = 0; j < in; ++j) {
    const uint64_t v = format == ExportFormat::kVllm ? u[j] + 4 : u[j];
    const int64_t bit = j * c;
    want[bit / 32] |= static_cast<uint32_t>(v << (bit % 32));
    if (bit % 32 + c > 32) want[bit / 32 + 1] |= static_cast<uint32_t>(v >> (32 - bit % 32));
  }
  for (size_t w = 0; w < want.size(); ++w) {
    EXPECT_EQ(static_cast<uint32_t>(packed->data<int32_t>()[w]), want[w]) << "word " << w;
  }
  auto shape = out->ReadRaw(module + ".weight_shape");
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ(shape->dtype, storage::DType::kI64);
  EXPECT_EQ(shape->data<int64_t>()[0], 256);
  EXPECT_EQ(shape->data<int64_t>()[1], 64);
  auto scale = out->ReadRaw(module + ".weight_scale");
  ASSERT_TRUE(scale.ok());
  EXPECT_EQ(scale->dtype, storage::DType::kBF16);
  EXPECT_EQ(scale->shape, (std::vector<int64_t>{256, 1}));
  // Asymmetric zero points: column 0 of [out, groups] runs down the rows, stored unchanged.
  const std::string asym = Expert(0, 1, "up_proj");
  const std::string asym_module = ModuleOf(asym);
  auto zp = out->ReadRaw(asym_module + ".weight_zero_point");
  ASSERT_TRUE(zp.ok());
  const QuantizedWeight& aq = units.at(asym);
  const int64_t groups = aq.zeros.size(1);  // up_proj: [64, 256] -> 2 groups
  ASSERT_EQ(zp->shape, (std::vector<int64_t>{(64 * c + 31) / 32, groups}));
  const int32_t* z = aq.zeros.data_ptr<int32_t>();
  uint32_t want0 = 0;  // word row 0, column 0: rows 0.. of group 0
  for (int64_t r = 0; r * c < 32; ++r) {
    want0 |= static_cast<uint32_t>(static_cast<uint64_t>(z[r * groups]) << (r * c));
  }
  EXPECT_EQ(static_cast<uint32_t>(zp->data<int32_t>()[0]), want0);
}

TEST_P(ExportFormatTest, IndependentPythonDecoderAgrees) {
  if (std::system("python3 -c 'import json, struct, re' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 is not available";
  }
  const ExportFormat format = GetParam();
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const std::vector<UnitSpec> specs = MixedSpecs();
  const auto units = Quantize(*source, specs);
  ScratchDir scratch;
  ExportOptions options;
  options.format = format;
  options.out_dir = scratch.File("out");
  ASSERT_TRUE(ExportCheckpoint(*source, units, options).ok());
  std::string command =
      "python3 '" + kDecoder + "' '" + options.out_dir + "' '" + scratch.File("decoded.f32") + "'";
  std::string want;
  for (const UnitSpec& spec : specs) {
    command += " '" + ModuleOf(spec.name) + "'";
    want += TensorBytes(units.at(spec.name).Dequantize());
  }
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const std::string got = ReadFile(scratch.File("decoded.f32"));
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "decode_ct.py disagrees with QuantizedWeight::Dequantize";
}

TEST_P(ExportFormatTest, ModelLoaderSeesDequantizedWeights) {
  const ExportFormat format = GetParam();
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const auto units = Quantize(*source, MixedSpecs());
  ScratchDir scratch;
  ExportOptions options;
  options.format = format;
  options.out_dir = scratch.File("out");
  ASSERT_TRUE(ExportCheckpoint(*source, units, options).ok());
  auto exported = model::Model::Open(options.out_dir, model::ComputeDType::kF32);
  ASSERT_TRUE(exported.ok()) << exported.status();
  auto original = model::Model::Open(kQwen, model::ComputeDType::kF32);
  ASSERT_TRUE(original.ok()) << original.status();
  // The loader lists names by prefix: for a packed module it sees "<module>.weight" only.
  std::vector<std::string> layer0;
  for (const std::string& name : (*exported)->checkpoint().Names()) {
    if (name.starts_with("model.layers.0.mlp.experts.0.")) layer0.push_back(name);
  }
  EXPECT_EQ(layer0, (std::vector<std::string>{"model.layers.0.mlp.experts.0.down_proj.weight",
                                              "model.layers.0.mlp.experts.0.gate_proj.weight",
                                              "model.layers.0.mlp.experts.0.up_proj.weight"}));
  auto layer = (*exported)->LoadLayer(0, nullptr);
  ASSERT_TRUE(layer.ok()) << layer.status();
  EXPECT_EQ(TensorBytes(layer->at("mlp.experts.0.gate_proj.weight")),
            TensorBytes(units.at(Expert(0, 0, "gate_proj")).Dequantize()));
  // The whole forward equals the original with the same weights swapped in as they load.
  model::WeightTransform fake = [&](const std::string& name,
                                    const at::Tensor& w) -> absl::StatusOr<at::Tensor> {
    auto it = units.find(name);
    return it == units.end() ? w : it->second.Dequantize();
  };
  const at::Tensor ids = at::arange(0, 24, at::kLong).view({2, 12}) * 37 % 4096;
  auto a = (*exported)->Forward(ids, nullptr, nullptr);
  auto b = (*original)->Forward(ids, &fake, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(at::equal(*a, *b));
}

INSTANTIATE_TEST_SUITE_P(BothFormats, ExportFormatTest,
                         ::testing::Values(ExportFormat::kVllm, ExportFormat::kNative),
                         [](const auto& info) {
                           return std::string(NameOf(info.param));
                         });

TEST(ExportTest, ThreeBitQwenExpertsBitsPerParam) {
  // Every routed expert of tiny-qwen3-moe at 3 bits: 4 layers x 32 experts x 3 linears of
  // 64 x 256 = 6,291,456 weights; scales: gate/up 64 x 2 groups, down 256 x 1 (per channel).
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  for (Grid grid : {Grid::kSymmetric, Grid::kAsymmetric}) {
    std::vector<UnitSpec> specs;
    for (const std::string& name : AllExperts(*source)) specs.push_back({name, 3, grid});
    ASSERT_EQ(specs.size(), 384u);
    const auto units = Quantize(*source, specs);
    for (ExportFormat format : {ExportFormat::kVllm, ExportFormat::kNative}) {
      ScratchDir scratch;
      ExportOptions options;
      options.format = format;
      options.out_dir = scratch.File("out");
      auto stats = ExportCheckpoint(*source, units, options);
      ASSERT_TRUE(stats.ok()) << stats.status();
      const ExpectedBits want = Expect(*source, units, format);
      EXPECT_EQ(stats->quantized_params, 6291456);
      EXPECT_EQ(stats->total_params, 9210624);
      EXPECT_DOUBLE_EQ(stats->bits_per_quantized_param_true, want.quant_true);
      EXPECT_DOUBLE_EQ(stats->bits_per_quantized_param_stored, want.quant_stored);
      EXPECT_DOUBLE_EQ(stats->bits_per_param_true, want.all_true);
      EXPECT_DOUBLE_EQ(stats->bits_per_param_stored, want.all_stored);
      // 65536 scales: 3 + 65536 * 16 / 6291456 = 3.1667 bits (+ 3 * 65536 / 6291456 asym).
      const double scale_bits = 65536.0 * 16 / 6291456;
      const double zero_bits = grid == Grid::kAsymmetric ? 65536.0 / 6291456 : 0;
      const int c = format == ExportFormat::kVllm ? 4 : 3;
      EXPECT_NEAR(stats->bits_per_quantized_param_true, 3 + scale_bits + 3 * zero_bits, 1e-12);
      EXPECT_NEAR(stats->bits_per_quantized_param_stored, c + scale_bits + c * zero_bits, 1e-12);
      std::cout << "[ bits/param ] tiny-qwen3-moe experts 3-bit "
                << (grid == Grid::kSymmetric ? "sym" : "asym") << " " << NameOf(format)
                << ": quantized true " << stats->bits_per_quantized_param_true << " stored "
                << stats->bits_per_quantized_param_stored << "; checkpoint true "
                << stats->bits_per_param_true << " stored " << stats->bits_per_param_stored << "; "
                << stats->bytes_written << " bytes; note \"" << stats->container_note << "\"\n";
      auto out = OpenOrDie(options.out_dir);
      ASSERT_NE(out, nullptr);
      EXPECT_EQ(out->num_packed(), 384u);
      EXPECT_EQ(out->Names(), source->Names());
    }
  }
}

TEST(ExportTest, ShardsRespectMaxShardBytes) {
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const auto units = Quantize(*source, MixedSpecs());
  ScratchDir scratch;
  ExportOptions options;
  options.out_dir = scratch.File("out");
  options.max_shard_bytes = 3 << 20;
  auto stats = ExportCheckpoint(*source, units, options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_GE(stats->shards.size(), 5u);
  const size_t n = stats->shards.size();
  for (size_t i = 0; i < n; ++i) {
    char want[64];
    std::snprintf(want, sizeof(want), "model-%05zu-of-%05zu.safetensors", i + 1, n);
    EXPECT_EQ(stats->shards[i], want);
  }
  auto out = OpenOrDie(options.out_dir);
  ASSERT_NE(out, nullptr);
  std::map<std::string, uint64_t> shard_bytes;
  const json index = ReadJson(options.out_dir + "/model.safetensors.index.json");
  uint64_t largest = 0;
  for (const std::string& name : out->StoredNames()) {
    const storage::TensorInfo* info = out->Info(name);
    const uint64_t bytes = info->end - info->begin;
    shard_bytes[index["weight_map"][name].get<std::string>()] += bytes;
    largest = std::max(largest, bytes);
  }
  EXPECT_EQ(shard_bytes.size(), n);
  for (const auto& [file, bytes] : shard_bytes) {
    EXPECT_LE(bytes, std::max<uint64_t>(options.max_shard_bytes, largest)) << file;
  }
  for (const auto& [name, qw] : units) {
    EXPECT_EQ(TensorBytes(ReadTensor(*out, name)), TensorBytes(qw.Dequantize())) << name;
  }
}

TEST(ExportTest, Fp8SourceIsWrittenInBf16) {
  auto source = OpenOrDie(kFp8);
  ASSERT_NE(source, nullptr);
  const std::string unit = "model.layers.1.mlp.experts.0.gate_proj.weight";
  const auto units = Quantize(*source, {{unit, 4, Grid::kSymmetric}});
  ScratchDir scratch;
  ExportOptions options;
  options.out_dir = scratch.File("out");
  ASSERT_TRUE(ExportCheckpoint(*source, units, options).ok());
  auto out = OpenOrDie(options.out_dir);
  ASSERT_NE(out, nullptr);
  const json qc = out->config()["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_FALSE(qc.contains("weight_block_size"));
  EXPECT_EQ(TensorBytes(ReadTensor(*out, unit)), TensorBytes(units.at(unit).Dequantize()));
  int fp8_weights = 0;
  for (const std::string& name : source->Names()) {
    if (name.ends_with("_scale_inv")) {
      EXPECT_FALSE(out->Has(name)) << name;
      continue;
    }
    if (name == unit) continue;
    const storage::TensorInfo* info = source->Info(name);
    ASSERT_TRUE(out->Has(name)) << name;
    if (info->dtype != storage::DType::kF8E4M3) continue;
    ++fp8_weights;
    auto want = source->ReadF32(name);
    auto got = out->ReadRaw(name);
    ASSERT_TRUE(want.ok() && got.ok());
    EXPECT_EQ(got->dtype, storage::DType::kBF16);
    const float* w = want->data<float>();
    const uint16_t* g = got->data<uint16_t>();
    bool same = true;
    for (int64_t i = 0; i < want->numel(); ++i) same &= g[i] == storage::FloatToBF16(w[i]);
    EXPECT_TRUE(same) << name;
  }
  EXPECT_GT(fp8_weights, 10);
  // Without units the output is a plain bf16 checkpoint: no quantization_config at all.
  ExportOptions plain;
  plain.out_dir = scratch.File("plain");
  ASSERT_TRUE(ExportCheckpoint(*source, {}, plain).ok());
  auto plain_out = OpenOrDie(plain.out_dir);
  ASSERT_NE(plain_out, nullptr);
  EXPECT_FALSE(plain_out->config().contains("quantization_config"));
}

// ---- Atomicity: existing outputs, overwrite, failures leave nothing behind.

TEST(ExportTest, ExistingOutDirIsAnErrorUnlessOverwrite) {
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const auto units = Quantize(*source, {{Expert(0, 0, "gate_proj"), 3, Grid::kSymmetric}});
  ScratchDir scratch;
  const std::string out_dir = scratch.File("out");
  fs::create_directory(out_dir);
  std::ofstream(out_dir + "/marker") << "old";
  ExportOptions options;
  options.out_dir = out_dir;
  auto stats = ExportCheckpoint(*source, units, options);
  ASSERT_EQ(stats.status().code(), absl::StatusCode::kAlreadyExists) << stats.status();
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(out_dir));
  EXPECT_EQ(ReadFile(out_dir + "/marker"), "old");
  EXPECT_EQ(scratch.Entries(), std::vector<std::string>{"out"});

  options.overwrite = true;
  options.out_dir = out_dir + "/";  // a trailing slash names the same directory
  stats = ExportCheckpoint(*source, units, options);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_FALSE(fs::exists(out_dir + "/marker"));
  EXPECT_TRUE(fs::exists(out_dir + "/quant_manifest.json"));
  EXPECT_EQ(scratch.Entries(), std::vector<std::string>{"out"});
  auto out = OpenOrDie(out_dir);
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(out->num_packed(), 1u);

  // A file where the directory should be is never replaced.
  const std::string file = scratch.File("a_file");
  std::ofstream(file) << "keep";
  options.out_dir = file;
  stats = ExportCheckpoint(*source, units, options);
  EXPECT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(file));
  EXPECT_EQ(ReadFile(file), "keep");
}

TEST(ExportTest, UnwritableParentLeavesNothing) {
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const auto units = Quantize(*source, {{Expert(0, 0, "gate_proj"), 3, Grid::kSymmetric}});
  ScratchDir scratch;
  // A regular file as the parent: no directory can be made under it, even as root.
  std::ofstream(scratch.File("parent")) << "not a directory";
  ExportOptions options;
  options.out_dir = scratch.File("parent") + "/out";
  auto stats = ExportCheckpoint(*source, units, options);
  ASSERT_FALSE(stats.ok());
  const std::string message(stats.status().message());
  EXPECT_THAT(message, HasSubstr(scratch.File("parent") + "/out.tmp-"));
  EXPECT_EQ(message.find('\n'), std::string::npos);
  EXPECT_EQ(scratch.Entries(), std::vector<std::string>{"parent"});
}

TEST(ExportTest, FailureMidWayLeavesNoPartialDirectory) {
  // A source shard truncated after Open: the export fails while streaming shards.
  ScratchDir scratch;
  const std::string src = scratch.File("src");
  fs::create_directory(src);
  for (const auto& e : fs::directory_iterator(kQwen)) {
    fs::copy_file(e.path(), src + "/" + e.path().filename().string());
  }
  auto source = OpenOrDie(src);
  ASSERT_NE(source, nullptr);
  const auto units = Quantize(*source, {{Expert(0, 0, "gate_proj"), 3, Grid::kSymmetric}});
  const std::string last_shard = src + "/model-00003-of-00003.safetensors";
  fs::resize_file(last_shard, fs::file_size(last_shard) / 2);

  ExportOptions options;
  options.out_dir = scratch.File("out");
  auto stats = ExportCheckpoint(*source, units, options);
  ASSERT_FALSE(stats.ok());
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(last_shard));
  EXPECT_EQ(std::string(stats.status().message()).find('\n'), std::string::npos);
  EXPECT_EQ(scratch.Entries(), std::vector<std::string>{"src"});

  // With overwrite, the old output survives a failed export untouched.
  fs::create_directory(options.out_dir);
  std::ofstream(options.out_dir + "/marker") << "old";
  options.overwrite = true;
  stats = ExportCheckpoint(*source, units, options);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(ReadFile(options.out_dir + "/marker"), "old");
  EXPECT_EQ(scratch.Entries(), (std::vector<std::string>{"out", "src"}));
}

TEST(ExportTest, InvalidUnitsAreRefusedBeforeWriting) {
  auto source = OpenOrDie(kQwen);
  ASSERT_NE(source, nullptr);
  const std::string name = Expert(0, 0, "gate_proj");
  const auto good = Quantize(*source, {{name, 3, Grid::kSymmetric}});
  ScratchDir scratch;
  ExportOptions options;
  options.out_dir = scratch.File("out");
  auto expect_refused = [&](std::map<std::string, QuantizedWeight> units, const std::string& what) {
    auto stats = ExportCheckpoint(*source, units, options);
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument) << stats.status();
    EXPECT_THAT(std::string(stats.status().message()), HasSubstr(what));
    EXPECT_TRUE(scratch.Entries().empty());
  };
  {
    auto units = good;
    units[name].codes = units[name].codes.clone();
    units[name].codes[0][0] = 8;  // 3 bits hold 0..7
    expect_refused(units, "a code exceeds");
  }
  {
    auto units = good;
    units[name].scales = units[name].scales.clone();
    units[name].scales[0][0] = 0.1f;  // not a bf16 value
    expect_refused(units, "not a finite bf16 value");
  }
  {
    auto units = good;
    units[name].zeros = units[name].zeros.clone();
    units[name].zeros[0][0] = 3;  // symmetric grids have zero 2^(bits-1)
    expect_refused(units, "symmetric grid with zero point 3");
  }
  {
    std::map<std::string, QuantizedWeight> units;
    units[Expert(0, 0, "up_proj")] = good.at(name);  // [64, 256] both, fine; now a wrong shape:
    units[Expert(0, 0, "down_proj")] = good.at(name);
    expect_refused(units, "but the source weight is [256, 64]");
  }
  {
    std::map<std::string, QuantizedWeight> units;
    units["model.layers.0.mlp.experts.0.gate_proj"] = good.at(name);
    expect_refused(units, "must name a \".weight\" tensor");
  }
  {
    std::map<std::string, QuantizedWeight> units;
    units["model.layers.9.mlp.experts.0.gate_proj.weight"] = good.at(name);
    expect_refused(units, "no such tensor");
  }
}

TEST(ExportTest, ExportFormatNamesAndContainerBits) {
  EXPECT_EQ(*EnumFromName<ExportFormat>("vllm"), ExportFormat::kVllm);
  EXPECT_EQ(*EnumFromName<ExportFormat>("native"), ExportFormat::kNative);
  EXPECT_FALSE(EnumFromName<ExportFormat>("gguf").has_value());
  EXPECT_EQ(ContainerBits(2, ExportFormat::kVllm), 4);
  EXPECT_EQ(ContainerBits(3, ExportFormat::kVllm), 4);
  EXPECT_EQ(ContainerBits(4, ExportFormat::kVllm), 4);
  EXPECT_EQ(ContainerBits(5, ExportFormat::kVllm), 8);
  EXPECT_EQ(ContainerBits(8, ExportFormat::kVllm), 8);
  EXPECT_EQ(ContainerBits(3, ExportFormat::kNative), 3);
}

}  // namespace
}  // namespace quant::quant
