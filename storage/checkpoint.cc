// Checkpoint directories: config.json + index + shards, validated on open so that later reads
// fail only on I/O, and fp8 block dequantization (DeepSeek-V3 / Kimi-K2 weight_scale_inv).
#include "storage/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <set>
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

std::string JoinPath(std::string_view dir, std::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(Absl(dir), Absl(name));
  return absl::StrCat(Absl(dir), "/", Absl(name));
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Reads a whole small file (config or index JSON); errors name the path.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot stat"));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read: not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxJsonFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", st.st_size, " bytes is larger than the limit of ", kMaxJsonFileBytes));
  }
  std::string text;
  char buf[1 << 16];
  while (true) {
    const ssize_t got = ::read(fd, buf, sizeof(buf));
    if (got < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat(path, ": read failed"));
    }
    if (got == 0) break;
    text.append(buf, static_cast<size_t>(got));
    if (text.size() > kMaxJsonFileBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than the limit of ", kMaxJsonFileBytes, " bytes"));
    }
  }
  return text;
}

absl::StatusOr<json> ReadJsonObject(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
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
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = dir;

  const std::string config_path = JoinPath(dir, kConfigFile);
  ASSIGN_OR_RETURN(ckpt->config_, ReadJsonObject(config_path));
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
  const std::string index_path = JoinPath(dir, kIndexFile);
  const std::string single_path = JoinPath(dir, kSingleShardFile);
  const bool has_index = PathExists(index_path);
  if (has_index) {
    ASSIGN_OR_RETURN(json index, ReadJsonObject(index_path));
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
  } else if (!IsRegularFile(single_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kIndexFile, " nor ", kSingleShardFile, " found"));
  }

  // Open each shard once, in name order so errors are deterministic.
  std::map<std::string, size_t> shard_index;
  if (!has_index) {
    shard_index.emplace(kSingleShardFile, 0);
  } else {
    for (const auto& [name, shard] : weight_map) shard_index.emplace(shard, 0);
  }
  for (auto& [file, idx] : shard_index) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard,
                     SafetensorsFile::Open(JoinPath(dir, file)));
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
  return ckpt;
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

bool Checkpoint::Has(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, unused] : tensors_) names.push_back(name);
  return names;
}

const TensorInfo* Checkpoint::Info(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.second;
}

absl::StatusOr<HostTensor> Checkpoint::ReadRaw(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": no tensor ", Quote(name)));
  }
  return shards_[it->second.first]->Read(*it->second.second);
}

absl::StatusOr<HostTensor> Checkpoint::ReadF32(std::string_view name) const {
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
