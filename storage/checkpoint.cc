// Checkpoint directories: config.json + index + shards, validated on open so that later reads
// fail only on I/O, fp8 block dequantization (DeepSeek-V3 / Kimi-K2 weight_scale_inv), and
// packed quantized linears (compressed-tensors pack-quantized, native dense-packed) decoded.
#include "storage/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <regex>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant::storage {
namespace {

using nlohmann::json;

// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// which StrCat and friends take; std::string_view arguments go through this.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr char kConfigFile[] = "config.json";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kSingleShardFile[] = "model.safetensors";
constexpr char kScaleSuffix[] = "_scale_inv";
// DeepSeek-V3's quantization_config.weight_block_size, the default when a config omits it.
constexpr int64_t kDefaultFp8Block = 128;
// config.json and the index are small (Kimi-K2's index is a few MB); a bigger one is not ours.
constexpr uint64_t kMaxJsonFileBytes = 256ull << 20;

std::string Quote(std::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(Absl(s)), "\"");
}

// A small JSON file of the checkpoint (config or index); errors name its path or URL.
absl::StatusOr<json> ReadJsonObject(const ObjectStore& store, const std::string& name) {
  const std::string path = store.Label(name);
  ASSIGN_OR_RETURN(std::string text, store.Read(name, kMaxJsonFileBytes));
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& e) {
    // e.what() names the line and column; nlohmann escapes the offending token.
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    // The last-read token can be as long as the file; a message stays short.
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", what));
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a JSON object, got ", parsed.type_name()));
  }
  return parsed;
}

// A shard named by the index must be a plain file name inside the checkpoint directory: no
// separators, no "." or "..", so an index cannot point reads outside the directory.
bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

bool IsIntegerDType(DType dtype) {
  switch (dtype) {
    case DType::kI8:
    case DType::kU8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kBool:
      return true;
    default:
      return false;
  }
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&out, i ? ", " : "", shape[i]);
  return out + "]";
}

// One quantization_config.config_groups entry, as far as decoding packed weights needs it.
struct PackedGroup {
  std::string name;
  int bits = 0;
  bool symmetric = true;
  bool channel = false;     // strategy "channel": one scale per output row
  int64_t group_size = 0;   // strategy "group"
  std::string unsupported;  // why weights of this group cannot be decoded; empty when they can
};

// The weights scheme of one group. Shapes of JSON that no writer produces are errors at once;
// schemes we do not decode (float types, tensor/block strategies) only fail a module that uses
// them, so a mixed checkpoint still opens.
absl::StatusOr<PackedGroup> ParsePackedGroup(const std::string& name, const json& group,
                                             const std::string& config_path) {
  PackedGroup out;
  out.name = name;
  const std::string where = absl::StrCat(config_path, ": quantization_config.config_groups.", name);
  const json weights = group.value("weights", json());
  if (weights.is_null()) {
    out.unsupported = "has no \"weights\" scheme";
    return out;
  }
  if (!weights.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".weights must be an object, got ", weights.type_name()));
  }
  const json type = weights.value("type", json("int"));
  if (type != "int") {
    out.unsupported = absl::StrCat("has weights type ", type.dump(), " (only \"int\" is packed)");
    return out;
  }
  const json bits = weights.value("num_bits", json());
  if (!bits.is_number_integer() || bits.get<int64_t>() < kMinPackBits ||
      bits.get<int64_t>() > kMaxPackBits) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".weights.num_bits must be an integer in ", kMinPackBits, "..",
                     kMaxPackBits, ", got ", bits.dump()));
  }
  out.bits = bits.get<int>();
  const json symmetric = weights.value("symmetric", json(true));
  if (!symmetric.is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".weights.symmetric must be true or false, got ", symmetric.dump()));
  }
  out.symmetric = symmetric.get<bool>();
  const json strategy = weights.value("strategy", json());
  if (strategy == "channel") {
    out.channel = true;
  } else if (strategy == "group") {
    const json group_size = weights.value("group_size", json());
    if (!group_size.is_number_integer() || group_size.get<int64_t>() <= 0 ||
        group_size.get<int64_t>() > (int64_t{1} << 31)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".weights.group_size must be a positive integer, got ", group_size.dump()));
    }
    out.group_size = group_size.get<int64_t>();
  } else {
    out.unsupported = absl::StrCat("has weights strategy ", strategy.dump(),
                                   " (packed weights are decoded for \"group\" and \"channel\")");
  }
  const json actorder = weights.value("actorder", json());
  if (actorder == "group") {
    out.unsupported = "has actorder \"group\" (weight_g_idx is not decoded)";
  }
  return out;
}

// compressed-tensors marks a regex target with this prefix; others are names or class names.
constexpr char kRegexPrefix[] = "re:";

// quantization_config.config_groups targets -> group, with compressed-tensors' precedence: an
// exact module name, then a "re:" regex (matched from the start, as Python's re.match), then
// the class name "Linear" (every packed module is a linear).
class TargetMatcher {
 public:
  absl::Status Add(const std::string& target, size_t group, const std::string& where) {
    if (target.starts_with(kRegexPrefix)) {
      try {
        regexes_.emplace_back(
            std::regex(target.substr(std::strlen(kRegexPrefix)), std::regex::ECMAScript), group);
      } catch (const std::regex_error& e) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": target ", Quote(target), " is not a valid regex: ", e.what()));
      }
    } else if (target == "Linear") {
      if (!linear_) linear_ = group;
    } else {
      exact_.emplace(target, group);  // the first group naming a module wins
    }
    return absl::OkStatus();
  }
  std::optional<size_t> Match(const std::string& module) const {
    if (auto it = exact_.find(module); it != exact_.end()) return it->second;
    for (const auto& [re, group] : regexes_) {
      if (std::regex_search(module, re, std::regex_constants::match_continuous)) return group;
    }
    return linear_;
  }

 private:
  std::unordered_map<std::string, size_t> exact_;
  std::vector<std::pair<std::regex, size_t>> regexes_;
  std::optional<size_t> linear_;
};

}  // namespace

void DequantFp8Blocks_ref(const uint8_t* fp8, int64_t rows, int64_t cols, const float* scale_inv,
                          int64_t block, float* out) {
  DequantFp8Blocks_ref(fp8, rows, cols, scale_inv, block, block, out);
}

void DequantFp8Blocks_ref(const uint8_t* fp8, int64_t rows, int64_t cols, const float* scale_inv,
                          int64_t block_rows, int64_t block_cols, float* out) {
  QUANT_CHECK(rows >= 0 && cols >= 0 && block_rows > 0 && block_cols > 0);
  // A local copy of the decode table keeps the inner loop free of calls into tensor.cc.
  std::array<float, 256> decode;
  for (int v = 0; v < 256; ++v) decode[v] = F8E4M3ToFloat(static_cast<uint8_t>(v));
  const int64_t scale_cols = CeilDiv(cols, block_cols);
  for (int64_t i = 0; i < rows; ++i) {
    // W[i][j] = fp8[i][j] * scale_inv[i / block_rows][j / block_cols]; the last block row and
    // column may be partial.
    const float* scale_row = scale_inv + (i / block_rows) * scale_cols;
    const uint8_t* src = fp8 + i * cols;
    float* dst = out + i * cols;
    for (int64_t jb = 0; jb < scale_cols; ++jb) {
      const float scale = scale_row[jb];
      const int64_t end = std::min(cols, (jb + 1) * block_cols);
      for (int64_t j = jb * block_cols; j < end; ++j) dst[j] = decode[src[j]] * scale;
    }
  }
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  if (dir.starts_with("file://")) return Open(LocalPathOf(dir));
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = dir;
  if (IsS3Location(dir)) {
    ASSIGN_OR_RETURN(ckpt->store_, OpenObjectStore(dir));
    return OpenFrom(std::move(ckpt));
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(dir, ": checkpoint directory does not exist"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot stat checkpoint directory"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": not a directory"));
  }
  ASSIGN_OR_RETURN(ckpt->store_, OpenObjectStore(dir));
  return OpenFrom(std::move(ckpt));
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::OpenFrom(
    std::unique_ptr<Checkpoint> ckpt) {
  const ObjectStore& store = *ckpt->store_;
  const std::string& dir = ckpt->dir_;
  const std::string config_path = store.Label(kConfigFile);
  ASSIGN_OR_RETURN(ckpt->config_, ReadJsonObject(store, kConfigFile));
  if (ckpt->config_.contains("quantization_config")) {
    const json& qc = ckpt->config_["quantization_config"];
    if (!qc.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config_path, ": quantization_config must be an object, got ", qc.type_name()));
    }
    const json method = qc.value("quant_method", json());
    if (method == "fp8") {
      ckpt->fp8_allowed_ = true;
      const json fmt = qc.value("fmt", json("e4m3"));
      if (fmt != "e4m3") {
        return absl::InvalidArgumentError(absl::StrCat(config_path, ": quantization_config.fmt ",
                                                       fmt.dump(),
                                                       " is not supported (only \"e4m3\")"));
      }
      const json block = qc.value("weight_block_size", json());
      if (!block.is_null()) {
        if (!block.is_array() || block.size() != 2 || !block[0].is_number_unsigned() ||
            !block[1].is_number_unsigned() || block[0].get<uint64_t>() == 0 ||
            block[1].get<uint64_t>() == 0 || block[0].get<uint64_t>() > (1u << 30) ||
            block[1].get<uint64_t>() > (1u << 30)) {
          return absl::InvalidArgumentError(
              absl::StrCat(config_path,
                           ": quantization_config.weight_block_size must be two positive "
                           "integers, got ",
                           block.dump()));
        }
        ckpt->fp8_block_rows_ = block[0].get<int64_t>();
        ckpt->fp8_block_cols_ = block[1].get<int64_t>();
      } else {
        ckpt->fp8_block_rows_ = kDefaultFp8Block;
        ckpt->fp8_block_cols_ = kDefaultFp8Block;
      }
    }
  }

  // tensor name -> shard file name, from the index or from the single shard.
  std::map<std::string, std::string> weight_map;
  const std::string index_path = store.Label(kIndexFile);
  ASSIGN_OR_RETURN(const bool has_index, store.Exists(kIndexFile));
  if (has_index) {
    ASSIGN_OR_RETURN(json index, ReadJsonObject(store, kIndexFile));
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": missing \"weight_map\" object"));
    }
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string() || !IsPlainFileName(shard.get_ref<const std::string&>())) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry ", Quote(name),
                         " must name a shard file in the directory, got ", shard.dump()));
      }
      weight_map.emplace(name, shard.get<std::string>());
    }
    if (weight_map.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map is empty"));
    }
  } else {
    ASSIGN_OR_RETURN(const bool has_single, store.Exists(kSingleShardFile));
    if (!has_single) {
      return absl::NotFoundError(
          absl::StrCat(dir, ": neither ", kIndexFile, " nor ", kSingleShardFile, " found"));
    }
  }

  // Open each shard once, in name order so errors are deterministic.
  std::map<std::string, size_t> shard_index;
  if (!has_index) {
    shard_index.emplace(kSingleShardFile, 0);
  } else {
    for (const auto& [name, shard] : weight_map) shard_index.emplace(shard, 0);
  }
  for (auto& [file, idx] : shard_index) {
    ASSIGN_OR_RETURN(std::unique_ptr<ByteSource> source, store.Open(file));
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard,
                     SafetensorsFile::Open(std::move(source)));
    idx = ckpt->shards_.size();
    ckpt->shards_.push_back(std::move(shard));
  }

  if (!has_index) {
    for (const TensorInfo& info : ckpt->shards_[0]->header().tensors) {
      ckpt->tensors_.emplace(info.name, std::make_pair(size_t{0}, &info));
    }
  } else {
    for (const auto& [name, file] : weight_map) {
      const size_t idx = shard_index.at(file);
      const TensorInfo* info = ckpt->shards_[idx]->Find(name);
      if (info == nullptr) {
        return absl::NotFoundError(absl::StrCat(index_path, ": tensor ", Quote(name),
                                                " is mapped to shard ", ckpt->shards_[idx]->path(),
                                                ", which has no such tensor"));
      }
      ckpt->tensors_.emplace(name, std::make_pair(idx, info));
    }
  }
  RETURN_IF_ERROR(ckpt->CheckDTypes(config_path));
  RETURN_IF_ERROR(ckpt->IndexPackedWeights(config_path));
  return ckpt;
}

const std::string& Checkpoint::ShardPath(std::string_view stored_name) const {
  auto it = tensors_.find(stored_name);
  QUANT_CHECK(it != tensors_.end());
  return shards_[it->second.first]->path();
}

absl::Status Checkpoint::IndexPackedWeights(const std::string& config_path) {
  constexpr std::string_view kPacked = kWeightPackedSuffix;
  std::vector<std::string> modules;
  for (const auto& [name, unused] : tensors_) {
    if (name.ends_with(kPacked)) modules.push_back(name.substr(0, name.size() - kPacked.size()));
  }
  if (modules.empty()) return absl::OkStatus();
  const std::string first_packed = modules.front() + std::string(kPacked);

  // Which format: compressed-tensors pack-quantized or ours.
  const json qc = config_.value("quantization_config", json());
  const json method = qc.is_object() ? qc.value("quant_method", json()) : json();
  PackLayout layout = PackLayout::kDense;
  if (method == kCompressedTensorsMethod) {
    // compressed-tensors packs floor(32 / b) values per word; for 4 and 8 bits that is dense.
    layout = PackLayout::kWordAligned;
    const json format = qc.value("format", json());
    if (format != kPackQuantizedFormat) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path, ": quantization_config.format is ", format.dump(), " but ",
                       ShardPath(first_packed), " stores packed tensors such as ",
                       Quote(first_packed), " (expected \"", Absl(kPackQuantizedFormat), "\")"));
    }
  } else if (method == kNativeMethod) {
    layout = PackLayout::kDense;
    const json format = qc.value("format", json());
    const json version = qc.value("version", json());
    if (format != kNativeFormat) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": quantization_config.format ",
                                                     format.dump(), " is not \"",
                                                     Absl(kNativeFormat), "\""));
    }
    if (version != kNativeFormatVersion) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path, ": quantization_config.version expected ", kNativeFormatVersion,
                       ", got ", version.dump()));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(ShardPath(first_packed), ": tensor ", Quote(first_packed), " is packed but ",
                     config_path, " has no quantization_config with quant_method \"",
                     Absl(kCompressedTensorsMethod), "\" or \"", Absl(kNativeMethod), "\""));
  }

  const json groups_json = qc.value("config_groups", json());
  if (!groups_json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": quantization_config.config_groups must be an object, got ",
                     groups_json.type_name()));
  }
  std::vector<PackedGroup> groups;
  TargetMatcher matcher;
  for (const auto& [group_name, group] : groups_json.items()) {
    const std::string where =
        absl::StrCat(config_path, ": quantization_config.config_groups.", group_name);
    if (!group.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " must be an object, got ", group.type_name()));
    }
    ASSIGN_OR_RETURN(PackedGroup parsed, ParsePackedGroup(group_name, group, config_path));
    const json targets = group.value("targets", json());
    if (!targets.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".targets must be a list of strings, got ", targets.type_name()));
    }
    for (const json& target : targets) {
      if (!target.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".targets must hold strings, got ", target.dump()));
      }
      RETURN_IF_ERROR(matcher.Add(target.get<std::string>(), groups.size(), where));
    }
    groups.push_back(std::move(parsed));
  }

  for (const std::string& module : modules) {
    PackedEntry entry;
    PackedWeight& p = entry.weight;
    p.module = module;
    p.weight_name = module + ".weight";
    p.packed_name = module + std::string(kWeightPackedSuffix);
    p.scale_name = module + std::string(kWeightScaleSuffix);
    p.shape_name = module + std::string(kWeightShapeSuffix);
    const std::string zero_name = module + std::string(kWeightZeroPointSuffix);
    const std::string& shard = ShardPath(p.packed_name);
    auto bad = [&](const std::string& tensor, const std::string& problem) {
      const std::string& file = tensors_.count(tensor) ? ShardPath(tensor) : shard;
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": tensor ", Quote(tensor), " ", problem));
    };
    if (tensors_.count(p.weight_name)) {
      return bad(p.weight_name, absl::StrCat("is stored beside the packed ", Quote(p.packed_name),
                                             "; a linear is either packed or not"));
    }
    if (tensors_.count(module + ".weight_g_idx")) {
      return bad(module + ".weight_g_idx", "is not supported (act-order group indices)");
    }
    const std::optional<size_t> group_index = matcher.Match(module);
    if (!group_index) {
      return absl::InvalidArgumentError(
          absl::StrCat(shard, ": packed tensor ", Quote(p.packed_name), " matches no target of ",
                       config_path, " quantization_config.config_groups"));
    }
    const PackedGroup& group = groups[*group_index];
    if (!group.unsupported.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(shard, ": packed tensor ", Quote(p.packed_name), " belongs to config group ",
                       group.name, " of ", config_path, ", which ", group.unsupported));
    }
    p.config_group = group.name;
    p.bits = group.bits;
    p.layout = layout;
    p.symmetric = group.symmetric;

    // weight_shape first: it sizes everything else.
    auto shape_it = tensors_.find(p.shape_name);
    if (shape_it == tensors_.end()) {
      return absl::NotFoundError(absl::StrCat(shard, ": packed tensor ", Quote(p.packed_name),
                                              " has no ", Quote(p.shape_name),
                                              " in the checkpoint"));
    }
    const TensorInfo& shape_info = *shape_it->second.second;
    if ((shape_info.dtype != DType::kI64 && shape_info.dtype != DType::kI32) ||
        shape_info.shape != std::vector<int64_t>{2}) {
      return bad(p.shape_name,
                 absl::StrCat("must be I64 [2], got ", Absl(DTypeName(shape_info.dtype)), " ",
                              ShapeText(shape_info.shape)));
    }
    ASSIGN_OR_RETURN(HostTensor shape_value, shards_[shape_it->second.first]->Read(shape_info));
    for (int i = 0; i < 2; ++i) {
      const int64_t v = shape_info.dtype == DType::kI64 ? shape_value.data<int64_t>()[i]
                                                        : shape_value.data<int32_t>()[i];
      // 2^31 rows or columns is far beyond any linear (Kimi-K2's largest is 163840); the bound
      // keeps out * in and the word counts far from overflow.
      if (v <= 0 || v > (int64_t{1} << 31)) {
        return bad(p.shape_name, absl::StrCat("holds ", v, "; dimensions must be in 1..2^31"));
      }
      (i == 0 ? p.out : p.in) = v;
    }
    p.group_size = group.channel ? p.in : group.group_size;
    const int64_t groups_per_row = group.channel ? 1 : CeilDiv(p.in, p.group_size);

    auto expect = [&](const std::string& tensor, std::vector<DType> dtypes,
                      std::vector<int64_t> shape, const std::string& why) -> absl::Status {
      auto it = tensors_.find(tensor);
      if (it == tensors_.end()) {
        return absl::NotFoundError(absl::StrCat(shard, ": packed tensor ", Quote(p.packed_name),
                                                " has no ", Quote(tensor), " in the checkpoint"));
      }
      const TensorInfo& info = *it->second.second;
      if (std::find(dtypes.begin(), dtypes.end(), info.dtype) == dtypes.end() ||
          info.shape != shape) {
        std::string want;
        for (size_t i = 0; i < dtypes.size(); ++i) {
          absl::StrAppend(&want, i ? "/" : "", Absl(DTypeName(dtypes[i])));
        }
        return bad(tensor,
                   absl::StrCat("must be ", want, " ", ShapeText(shape), " (", why, "), got ",
                                Absl(DTypeName(info.dtype)), " ", ShapeText(info.shape)));
      }
      return absl::OkStatus();
    };
    const std::string scheme = absl::StrCat(
        "weight [", p.out, ", ", p.in, "] at ", p.bits, " bits ", Absl(PackLayoutName(layout)),
        group.channel ? ", per channel" : absl::StrCat(", groups of ", p.group_size));
    RETURN_IF_ERROR(expect(p.packed_name, {DType::kI32},
                           {p.out, PackedWordCount(p.in, p.bits, layout)}, scheme));
    RETURN_IF_ERROR(expect(p.scale_name, {DType::kBF16, DType::kF16, DType::kF32},
                           {p.out, groups_per_row}, scheme));
    if (!p.symmetric) {
      p.zero_point_name = zero_name;
      RETURN_IF_ERROR(expect(zero_name, {DType::kI32},
                             {PackedWordCount(p.out, p.bits, layout), groups_per_row},
                             scheme + ", zero points packed along the output dim"));
    }
    for (const std::string* part : {&p.packed_name, &p.scale_name, &p.shape_name}) {
      hidden_.insert(*part);
    }
    // A symmetric module's stray zero point (older compressed-tensors wrote all-zero ones) is
    // hidden too: the loader must not see it as a tensor of its own.
    if (tensors_.count(zero_name)) hidden_.insert(zero_name);
    entry.logical.name = p.weight_name;
    entry.logical.dtype = DType::kF32;
    entry.logical.shape = {p.out, p.in};
    packed_.emplace(p.weight_name, std::move(entry));
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::CheckDTypes(const std::string& config_path) const {
  for (const auto& [name, entry] : tensors_) {
    const TensorInfo& info = *entry.second;
    const std::string& shard = shards_[entry.first]->path();
    const bool is_weight = absl::EndsWith(name, ".weight");
    if (is_weight && IsIntegerDType(info.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(shard, ": tensor ", Quote(name), " is ",
                                                     Absl(DTypeName(info.dtype)),
                                                     "; a .weight must be a floating-point dtype"));
    }
    if (info.dtype != DType::kF8E4M3) continue;
    if (!fp8_allowed_) {
      return absl::InvalidArgumentError(
          absl::StrCat(shard, ": tensor ", Quote(name), " is F8_E4M3 but ", config_path,
                       " has no quantization_config with quant_method \"fp8\""));
    }
    if (!is_weight || info.shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          shard, ": tensor ", Quote(name), " is F8_E4M3; only 2-D \".weight\" tensors may be fp8"));
    }
    const std::string scale_name = name + kScaleSuffix;
    auto it = tensors_.find(scale_name);
    if (it == tensors_.end()) {
      return absl::NotFoundError(absl::StrCat(shard, ": fp8 tensor ", Quote(name), " has no ",
                                              Quote(scale_name), " in the checkpoint"));
    }
    const TensorInfo& scale = *it->second.second;
    const std::vector<int64_t> want = {CeilDiv(info.shape[0], fp8_block_rows_),
                                       CeilDiv(info.shape[1], fp8_block_cols_)};
    if (scale.dtype != DType::kF32 || scale.shape != want) {
      std::string got_shape = "[";
      for (size_t i = 0; i < scale.shape.size(); ++i) {
        absl::StrAppend(&got_shape, i ? ", " : "", scale.shape[i]);
      }
      got_shape += "]";
      return absl::InvalidArgumentError(
          absl::StrCat(shards_[it->second.first]->path(), ": ", Quote(scale_name), " must be F32 [",
                       want[0], ", ", want[1], "] (weight [", info.shape[0], ", ", info.shape[1],
                       "] in blocks of ", fp8_block_rows_, "x", fp8_block_cols_, "), got ",
                       Absl(DTypeName(scale.dtype)), " ", got_shape));
    }
  }
  return absl::OkStatus();
}

bool Checkpoint::Has(std::string_view name) const {
  return tensors_.find(name) != tensors_.end() || packed_.find(name) != packed_.end();
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size() + packed_.size() - hidden_.size());
  for (const auto& [name, unused] : tensors_) {
    if (!hidden_.contains(name)) names.push_back(name);
  }
  for (const auto& [name, unused] : packed_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> Checkpoint::StoredNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, unused] : tensors_) names.push_back(name);
  return names;
}

const TensorInfo* Checkpoint::Info(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second.second;
  auto packed = packed_.find(name);
  return packed == packed_.end() ? nullptr : &packed->second.logical;
}

const PackedWeight* Checkpoint::Packed(std::string_view weight_name) const {
  auto it = packed_.find(weight_name);
  return it == packed_.end() ? nullptr : &it->second.weight;
}

absl::StatusOr<HostTensor> Checkpoint::ReadRaw(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    auto packed = packed_.find(name);
    if (packed != packed_.end()) return ReadPacked(packed->second.weight);
    return absl::NotFoundError(absl::StrCat(dir_, ": no tensor ", Quote(name)));
  }
  return shards_[it->second.first]->Read(*it->second.second);
}

absl::StatusOr<HostTensor> Checkpoint::ReadPacked(const PackedWeight& p) const {
  // Open checked every part's presence, dtype and shape against weight_shape.
  ASSIGN_OR_RETURN(HostTensor packed, ReadRaw(p.packed_name));
  ASSIGN_OR_RETURN(HostTensor scale_raw, ReadRaw(p.scale_name));
  QUANT_CHECK(packed.dtype == DType::kI32 && scale_raw.shape.size() == 2);
  const int64_t groups = scale_raw.shape[1];
  std::vector<float> scale(static_cast<size_t>(scale_raw.numel()));
  switch (scale_raw.dtype) {
    case DType::kBF16:
      BF16ToFloatArray(scale_raw.data<uint16_t>(), scale_raw.numel(), scale.data());
      break;
    case DType::kF16:
      F16ToFloatArray(scale_raw.data<uint16_t>(), scale_raw.numel(), scale.data());
      break;
    default:
      QUANT_CHECK(scale_raw.dtype == DType::kF32);
      std::copy_n(scale_raw.data<float>(), scale.size(), scale.data());
  }
  std::vector<uint8_t> codes(static_cast<size_t>(p.out * p.in));
  UnpackRows(packed.data<int32_t>(), p.out, p.in, p.bits, p.layout, codes.data());
  std::vector<uint8_t> zeros;
  if (!p.symmetric) {
    ASSIGN_OR_RETURN(HostTensor zero_raw, ReadRaw(p.zero_point_name));
    QUANT_CHECK(zero_raw.dtype == DType::kI32);
    zeros.resize(static_cast<size_t>(p.out * groups));
    UnpackColumns(zero_raw.data<int32_t>(), p.out, groups, p.bits, p.layout, zeros.data());
  }
  HostTensor out;
  out.dtype = DType::kF32;
  out.shape = {p.out, p.in};
  out.bytes.resize(static_cast<size_t>(p.out * p.in) * sizeof(float));
  DequantizeGroups_ref(codes.data(), p.out, p.in, p.group_size, scale.data(),
                       p.symmetric ? nullptr : zeros.data(), SymmetricZero(p.bits),
                       out.data<float>());
  return out;
}

absl::StatusOr<HostTensor> Checkpoint::ReadF32(std::string_view name) const {
  if (auto packed = packed_.find(name); packed != packed_.end()) {
    return ReadPacked(packed->second.weight);
  }
  ASSIGN_OR_RETURN(HostTensor raw, ReadRaw(name));
  if (raw.dtype == DType::kF32) return raw;
  HostTensor out;
  out.dtype = DType::kF32;
  out.shape = raw.shape;
  const int64_t n = raw.numel();
  out.bytes.resize(static_cast<size_t>(n) * sizeof(float));
  float* dst = out.data<float>();
  switch (raw.dtype) {
    case DType::kBF16: {
      BF16ToFloatArray(raw.data<uint16_t>(), n, dst);
      return out;
    }
    case DType::kF16: {
      F16ToFloatArray(raw.data<uint16_t>(), n, dst);
      return out;
    }
    case DType::kF64: {
      const double* src = raw.data<double>();
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
      return out;
    }
    case DType::kF8E4M3: {
      // Open checked the scale's presence, dtype and shape against this weight.
      ASSIGN_OR_RETURN(HostTensor scale, ReadRaw(absl::StrCat(Absl(name), kScaleSuffix)));
      QUANT_CHECK(raw.shape.size() == 2 && scale.dtype == DType::kF32);
      QUANT_CHECK(scale.numel() ==
                  CeilDiv(raw.shape[0], fp8_block_rows_) * CeilDiv(raw.shape[1], fp8_block_cols_));
      DequantFp8Blocks_ref(raw.data<uint8_t>(), raw.shape[0], raw.shape[1], scale.data<float>(),
                           fp8_block_rows_, fp8_block_cols_, dst);
      return out;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(shards_[tensors_.find(name)->second.first]->path(), ": tensor ", Quote(name),
                       " is ", Absl(DTypeName(raw.dtype)),
                       "; ReadF32 decodes floating-point dtypes only (use ReadRaw)"));
  }
}

uint64_t Checkpoint::bytes_read() const {
  uint64_t total = 0;
  for (const auto& shard : shards_) total += shard->bytes_read();
  return total;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& shard : shards_) total += shard->file_size();
  return total;
}

}  // namespace quant::storage
