// ExportCheckpoint: validates the units, plans every output tensor and its shard, streams the
// shards (one tensor in memory at a time, SHA-256 on the fly), then index, config.json and the
// manifest, into `<out_dir>.tmp-<pid>`, renamed into place last (docs/formats.md).
#include "worker/quant/export.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/atomic_file.h"
#include "common/sha256.h"
#include "common/status.h"
#include "storage/packing.h"
#include "storage/tensor.h"

namespace quant::quant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using storage::DType;
using storage::HostTensor;

// Debian's Abseil has its own absl::string_view, which StrCat takes; std::string_view goes
// through std::string.
std::string S(std::string_view s) { return std::string(s); }

// Files copied beside the weights when the source has them (what a Hugging Face loader and
// vLLM read besides config.json).
// Side files, config and index are small; a bigger one is not what we think it is.
constexpr uint64_t kMaxSideFileBytes = 1ull << 30;
constexpr const char* kSideFiles[] = {"tokenizer.json",         "tokenizer_config.json",
                                      "generation_config.json", "special_tokens_map.json",
                                      "tokenizer.model",        "chat_template.jinja"};
constexpr char kConfigFile[] = "config.json";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kFp8ScaleSuffix[] = "_scale_inv";
constexpr char kWeightSuffix[] = ".weight";
constexpr char kToolName[] = "moe-quant";

// ---- A file that hashes what it writes (common/atomic_file.h's rule, common/sha256.h).

struct FileRecord {
  std::string file;  // name inside the checkpoint directory
  uint64_t bytes = 0;
  std::string sha256;
};

class HashingFile {
 public:
  static absl::StatusOr<std::unique_ptr<HashingFile>> Create(const std::string& path) {
    ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
    return std::unique_ptr<HashingFile>(new HashingFile(std::move(file)));
  }
  absl::Status Write(const void* data, size_t n) {
    sha_.Update(data, n);
    return file_->Write(data, n);
  }
  // Durable under its name: the directory's rename at the end must not publish data still in
  // the page cache.
  absl::StatusOr<FileRecord> Finish() {
    RETURN_IF_ERROR(file_->Commit());
    return FileRecord{fs::path(file_->path()).filename().string(), file_->bytes(),
                      sha_.HexDigest()};
  }

 private:
  explicit HashingFile(std::unique_ptr<AtomicFile> file) : file_(std::move(file)) {}
  std::unique_ptr<AtomicFile> file_;
  Sha256 sha_;
};

absl::StatusOr<FileRecord> WriteWholeFile(const std::string& path, std::string_view bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<HashingFile> file, HashingFile::Create(path));
  RETURN_IF_ERROR(file->Write(bytes.data(), bytes.size()));
  return file->Finish();
}

// ---- Units: validated, moved to the CPU, in the form the writer needs.

// A unit as the format stores it (storage::PackedLinear), with the host tensors its arrays
// point into.
struct UnitPlan : storage::PackedLinear {
  std::string weight_name;  // "...gate_proj.weight" (the key of `units`)
  at::Tensor codes_cpu;     // uint8 [out, in], CPU, contiguous
  at::Tensor scales_cpu;    // float32 [out, groups]
  at::Tensor zeros_cpu;     // int32 [out, groups]
};

std::string ShapeText(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) absl::StrAppend(&out, i ? ", " : "", sizes[i]);
  return out + "]";
}

absl::StatusOr<UnitPlan> PlanUnit(const storage::Checkpoint& source, const std::string& name,
                                  const QuantizedWeight& qw, ExportFormat format) {
  auto bad = [&](const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat("export unit \"", name, "\": ", problem));
  };
  if (!name.ends_with(kWeightSuffix)) return bad("a unit must name a \".weight\" tensor");
  const storage::TensorInfo* info = source.Info(name);
  if (info == nullptr) return bad(absl::StrCat("no such tensor in ", source.dir()));
  if (info->shape.size() != 2) return bad("the source tensor is not 2-D");
  RETURN_IF_ERROR(ValidateScheme(qw.scheme));
  if (!qw.codes.defined() || qw.codes.dim() != 2 || qw.codes.scalar_type() != at::kByte) {
    return bad("codes must be a uint8 [out, in] tensor");
  }
  UnitPlan u;
  u.weight_name = name;
  u.module = name.substr(0, name.size() - std::strlen(kWeightSuffix));
  u.out = qw.codes.size(0);
  u.in = qw.codes.size(1);
  if (std::vector<int64_t>{u.out, u.in} != info->shape) {
    return bad(absl::StrCat("codes are ", ShapeText(qw.codes.sizes()), " but the source weight is ",
                            ShapeText(info->shape)));
  }
  if (qw.group_size <= 0 || u.in % qw.group_size != 0) {
    return bad(absl::StrCat("group_size ", qw.group_size, " does not divide in = ", u.in));
  }
  u.group_size = qw.group_size;
  u.groups = u.in / u.group_size;
  u.channel = u.groups == 1;
  u.bits = qw.scheme.bits;
  u.container = ContainerBits(u.bits, format);
  u.symmetric = qw.scheme.grid == Grid::kSymmetric;
  const std::vector<int64_t> group_shape = {u.out, u.groups};
  if (!qw.scales.defined() || qw.scales.sizes().vec() != group_shape ||
      qw.scales.scalar_type() != at::kFloat) {
    return bad(absl::StrCat("scales must be float32 ", ShapeText(group_shape)));
  }
  if (!qw.zeros.defined() || qw.zeros.sizes().vec() != group_shape ||
      !c10::isIntegralType(qw.zeros.scalar_type(), /*includeBool=*/false)) {
    return bad(absl::StrCat("zeros must be an integer tensor ", ShapeText(group_shape)));
  }
  u.codes_cpu = qw.codes.to(at::kCPU).contiguous();
  u.scales_cpu = qw.scales.to(at::kCPU).contiguous();
  u.zeros_cpu = qw.zeros.to(at::kCPU).to(at::kInt).contiguous();
  u.codes = u.codes_cpu.data_ptr<uint8_t>();
  u.scales = u.scales_cpu.data_ptr<float>();
  u.zeros = u.zeros_cpu.data_ptr<int32_t>();
  const int maxq = (1 << u.bits) - 1;
  if (u.codes_cpu.numel() > 0 && u.codes_cpu.max().item<int>() > maxq) {
    return bad(absl::StrCat("a code exceeds 2^", u.bits, " - 1 = ", maxq));
  }
  const int32_t* zeros = u.zeros;
  const float* scales = u.scales;
  const int sym_zero = storage::SymmetricZero(u.bits);
  for (int64_t i = 0; i < u.zeros_cpu.numel(); ++i) {
    if (zeros[i] < 0 || zeros[i] > maxq) {
      return bad(absl::StrCat("zero point ", zeros[i], " outside [0, ", maxq, "]"));
    }
    if (u.symmetric && zeros[i] != sym_zero) {
      return bad(absl::StrCat("symmetric grid with zero point ", zeros[i],
                              " (must be 2^(bits-1) = ", sym_zero, ")"));
    }
    // The stored scale is bf16; a value that is not exactly bf16 would be rounded on export and
    // the checkpoint would no longer decode to what the quantizer measured.
    const float s = scales[i];
    if (!std::isfinite(s) || storage::BF16ToFloat(storage::FloatToBF16(s)) != s) {
      return bad(absl::StrCat("scale ", s, " is not a finite bf16 value"));
    }
  }
  return u;
}

// ---- Output plan: every tensor of the new checkpoint, what produces it, and its shard.

enum class Producer { kCopy, kFp8ToBf16, kUnitPart };

struct OutTensor {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  Producer producer = Producer::kCopy;
  std::string source_name;  // kCopy, kFp8ToBf16
  size_t unit = 0;          // kUnitPart: index into the unit plans, and which part
  storage::PackedPart part = storage::PackedPart::kPacked;
  size_t shard = 0;
};

absl::StatusOr<std::vector<uint8_t>> Produce(const OutTensor& t, const storage::Checkpoint& source,
                                             const std::vector<UnitPlan>& units) {
  std::vector<uint8_t> bytes;
  switch (t.producer) {
    case Producer::kCopy: {
      ASSIGN_OR_RETURN(HostTensor raw, source.ReadRaw(t.source_name));
      return std::move(raw.bytes);
    }
    case Producer::kFp8ToBf16: {
      ASSIGN_OR_RETURN(HostTensor f32, source.ReadF32(t.source_name));
      bytes.resize(f32.numel() * sizeof(uint16_t));
      uint16_t* dst = reinterpret_cast<uint16_t*>(bytes.data());
      const float* src = f32.data<float>();
      for (int64_t i = 0; i < f32.numel(); ++i) dst[i] = storage::FloatToBF16(src[i]);
      return bytes;
    }
    default:
      break;
  }
  QUANT_CHECK(t.producer == Producer::kUnitPart);
  return storage::PackedBytes(units[t.unit], t.part);
}

// One shard, streamed: header from the plan, then each tensor as it is produced.
absl::StatusOr<FileRecord> WriteShard(const std::string& path,
                                      const std::vector<const OutTensor*>& tensors,
                                      const storage::Checkpoint& source,
                                      const std::vector<UnitPlan>& units,
                                      const std::function<bool()>& should_stop,
                                      size_t* produced, size_t total) {
  // The layout SafetensorsWriter writes: __metadata__ first, tensors in offset order, header
  // padded with spaces so the data section starts 8-byte aligned.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const OutTensor* t : tensors) {
    header[t->name] = {{"dtype", S(storage::DTypeName(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes}}};
    offset += t->bytes;
  }
  std::string header_json = header.dump();
  header_json.append((8 - header_json.size() % 8) % 8, ' ');
  uint8_t prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(header_json.size() >> (8 * i));

  ASSIGN_OR_RETURN(std::unique_ptr<HashingFile> file, HashingFile::Create(path));
  RETURN_IF_ERROR(file->Write(prefix, sizeof(prefix)));
  RETURN_IF_ERROR(file->Write(header_json.data(), header_json.size()));
  for (const OutTensor* t : tensors) {
    if (should_stop && should_stop()) {
      return absl::CancelledError(
          absl::StrCat("export: stopped before tensor ", *produced, " of ", total));
    }
    ++*produced;
    absl::StatusOr<std::vector<uint8_t>> bytes = Produce(*t, source, units);
    if (!bytes.ok()) {
      return absl::Status(bytes.status().code(),
                          absl::StrCat(path, ": cannot write tensor \"", t->name,
                                       "\": ", bytes.status().message()));
    }
    QUANT_CHECK(bytes->size() == t->bytes);
    RETURN_IF_ERROR(file->Write(bytes->data(), bytes->size()));
  }
  return file->Finish();
}

// A Linear module that stays in 16 bits: a 2-D ".weight" that is not an embedding (norms and
// biases are 1-D). Listed in quantization_config.ignore so vLLM loads it unquantized.
bool IsUnquantizedLinear(const std::string& name, const storage::TensorInfo& info) {
  return name.ends_with(kWeightSuffix) && info.shape.size() == 2 &&
         name.find("embed_tokens") == std::string::npos;
}

// Directory entries: removes `path` and everything below; errors are ignored (cleanup).
void RemoveAllQuietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

// Renames `from` onto `to`. Without `replace`, fails when `to` exists (RENAME_NOREPLACE: a
// directory created meanwhile is never replaced). With `replace`, swaps the two atomically
// (RENAME_EXCHANGE), so `from` then holds the old directory; `*swapped` says so.
absl::Status RenameIntoPlace(const std::string& from, const std::string& to, bool replace,
                             bool* swapped) {
  *swapped = false;
  const unsigned flags = replace ? RENAME_EXCHANGE : RENAME_NOREPLACE;
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags) == 0) {
    *swapped = replace;
    return absl::OkStatus();
  }
  if (errno == EEXIST || errno == ENOTEMPTY) {
    return absl::AlreadyExistsError(absl::StrCat(to, ": already exists (appeared during export)"));
  }
  if (errno != EINVAL && errno != ENOSYS) {
    return absl::ErrnoToStatus(errno, absl::StrCat(to, ": cannot rename ", from, " to it"));
  }
  // The file system has no renameat2 flags: move the old directory aside first.
  if (replace) {
    const std::string aside = absl::StrCat(to, ".old-", ::getpid());
    RemoveAllQuietly(aside);
    if (::rename(to.c_str(), aside.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(to, ": cannot move aside to ", aside));
    }
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const int err = errno;
      ::rename(aside.c_str(), to.c_str());  // put the old one back
      return absl::ErrnoToStatus(err, absl::StrCat(to, ": cannot rename ", from, " to it"));
    }
    RemoveAllQuietly(aside);
    return absl::OkStatus();
  }
  if (fs::exists(to)) {
    return absl::AlreadyExistsError(absl::StrCat(to, ": already exists (appeared during export)"));
  }
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(to, ": cannot rename ", from, " to it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExportStats> ExportInto(const storage::Checkpoint& source,
                                       const std::vector<UnitPlan>& units,
                                       const ExportOptions& options, const std::string& tmp) {
  // Plan: the copied tensors and the units' parts, sorted by name, in greedy shards.
  std::map<std::string, size_t> unit_index;
  for (size_t i = 0; i < units.size(); ++i) unit_index[units[i].weight_name] = i;
  std::vector<OutTensor> plan;
  std::vector<std::string> ignore;
  ExportStats stats;
  double other_bits = 0;
  for (const std::string& name : source.Names()) {
    if (unit_index.count(name)) continue;
    const storage::TensorInfo* info = source.Info(name);
    QUANT_CHECK(info != nullptr);
    if (name.ends_with(kFp8ScaleSuffix)) {
      const storage::TensorInfo* base =
          source.Info(name.substr(0, name.size() - std::strlen(kFp8ScaleSuffix)));
      if (base != nullptr && base->dtype == DType::kF8E4M3) continue;  // its weight goes bf16
    }
    OutTensor t;
    t.name = name;
    t.shape = info->shape;
    t.source_name = name;
    if (info->dtype == DType::kF8E4M3) {
      t.dtype = DType::kBF16;
      t.producer = Producer::kFp8ToBf16;
    } else {
      t.dtype = info->dtype;
      t.producer = Producer::kCopy;
    }
    const int64_t numel = storage::NumElements(t.shape);
    t.bytes = static_cast<uint64_t>(numel * storage::DTypeSize(t.dtype));
    stats.total_params += numel;
    other_bits += 8.0 * static_cast<double>(t.bytes);
    if (IsUnquantizedLinear(name, *info)) {
      ignore.push_back(name.substr(0, name.size() - std::strlen(kWeightSuffix)));
    }
    plan.push_back(std::move(t));
  }
  double quant_bits_true = 0;
  double quant_bits_stored = 0;
  std::vector<storage::PackedLinear> linears(units.begin(), units.end());
  for (size_t i = 0; i < units.size(); ++i) {
    const UnitPlan& u = units[i];
    stats.quantized_params += u.out * u.in;
    // Exact counts (docs/formats.md): codes, bf16 scales, zero points of asymmetric grids.
    quant_bits_true += storage::StoredBits(u, u.bits);
    quant_bits_stored += storage::StoredBits(u, u.container);
    for (const storage::PackedTensor& p : storage::PackedTensorsOf(u)) {
      OutTensor t;
      t.name = p.name;
      t.dtype = p.dtype;
      t.shape = p.shape;
      t.bytes = p.bytes;
      t.producer = Producer::kUnitPart;
      t.unit = i;
      t.part = p.part;
      plan.push_back(std::move(t));
    }
  }
  stats.total_params += stats.quantized_params;
  if (stats.quantized_params > 0) {
    stats.bits_per_quantized_param_true = quant_bits_true / stats.quantized_params;
    stats.bits_per_quantized_param_stored = quant_bits_stored / stats.quantized_params;
  }
  if (stats.total_params > 0) {
    stats.bits_per_param_true = (quant_bits_true + other_bits) / stats.total_params;
    stats.bits_per_param_stored = (quant_bits_stored + other_bits) / stats.total_params;
  }
  stats.container_note = storage::ContainerNote(linears, options.format);
  std::sort(plan.begin(), plan.end(),
            [](const OutTensor& a, const OutTensor& b) { return a.name < b.name; });
  for (size_t i = 1; i < plan.size(); ++i) {
    if (plan[i].name == plan[i - 1].name) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.dir(), ": tensor \"", plan[i].name,
                       "\" exists in the source and would also be written for a quantized unit"));
    }
  }
  size_t n_shards = 0;
  uint64_t shard_bytes = 0;
  uint64_t total_size = 0;
  for (OutTensor& t : plan) {
    if (n_shards == 0 || (shard_bytes > 0 &&
                          shard_bytes + t.bytes > static_cast<uint64_t>(options.max_shard_bytes))) {
      ++n_shards;
      shard_bytes = 0;
    }
    t.shard = n_shards - 1;
    shard_bytes += t.bytes;
    total_size += t.bytes;
  }

  // Shards, streamed.
  std::vector<std::vector<const OutTensor*>> by_shard(n_shards);
  for (const OutTensor& t : plan) by_shard[t.shard].push_back(&t);
  json weight_map = json::object();
  json shard_records = json::array();
  size_t produced = 0;
  for (size_t s = 0; s < n_shards; ++s) {
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, n_shards);
    ASSIGN_OR_RETURN(FileRecord record,
                     WriteShard(tmp + "/" + file, by_shard[s], source, units,
                                options.should_stop, &produced, plan.size()));
    for (const OutTensor* t : by_shard[s]) weight_map[t->name] = file;
    shard_records.push_back({{"file", file}, {"bytes", record.bytes}, {"sha256", record.sha256}});
    stats.shards.push_back(file);
    stats.bytes_written += static_cast<int64_t>(record.bytes);
  }

  // Side files, then index and config.json, then the manifest last.
  json file_records = json::array();
  auto record_file = [&](const FileRecord& r) {
    file_records.push_back({{"file", r.file}, {"bytes", r.bytes}, {"sha256", r.sha256}});
    stats.bytes_written += static_cast<int64_t>(r.bytes);
  };
  const storage::ObjectStore& store = source.store();
  for (const char* name : kSideFiles) {
    ASSIGN_OR_RETURN(const bool exists, store.Exists(name));
    if (!exists) continue;
    ASSIGN_OR_RETURN(std::string bytes, store.Read(name, kMaxSideFileBytes));
    ASSIGN_OR_RETURN(FileRecord r, WriteWholeFile(tmp + "/" + name, bytes));
    record_file(r);
  }
  const json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  ASSIGN_OR_RETURN(FileRecord index_record,
                   WriteWholeFile(tmp + "/" + kIndexFile, index.dump(2) + "\n"));
  record_file(index_record);
  json config = source.config();
  config.erase("quantization_config");  // fp8's (its weights are bf16 now) or none
  if (!units.empty()) {
    config["quantization_config"] = storage::QuantizationConfig(linears, ignore, options.format);
  }
  ASSIGN_OR_RETURN(FileRecord config_record,
                   WriteWholeFile(tmp + "/" + kConfigFile, config.dump(2) + "\n"));
  record_file(config_record);

  // Fingerprint: the source's config.json and index bytes as stored, and the job options.
  std::string fingerprint_input;
  ASSIGN_OR_RETURN(fingerprint_input, store.Read(kConfigFile, kMaxSideFileBytes));
  fingerprint_input.push_back('\0');
  ASSIGN_OR_RETURN(const bool has_index, store.Exists(kIndexFile));
  if (has_index) {
    ASSIGN_OR_RETURN(std::string index_bytes, store.Read(kIndexFile, kMaxSideFileBytes));
    fingerprint_input += index_bytes;
  }
  fingerprint_input.push_back('\0');
  fingerprint_input += options.job_options.dump();
  json unit_records = json::object();
  for (const UnitPlan& u : units) {
    unit_records[u.weight_name] = {{"bits", u.bits},
                                   {"container_bits", u.container},
                                   {"grid", u.symmetric ? "sym" : "asym"},
                                   {"group_size", u.group_size},
                                   {"strategy", u.channel ? "channel" : "group"}};
  }
  const json manifest = {
      {"format_version", kManifestFormatVersion},
      {"tool", kToolName},
      {"tool_version", options.tool_version},
      {"fingerprint", Sha256Hex(fingerprint_input)},
      {"options", options.job_options},
      {"export", S(NameOf(options.format))},
      {"shards", shard_records},
      {"files", file_records},
      {"units", unit_records},
      {"bits_per_param",
       {{"quantized_params", stats.quantized_params},
        {"total_params", stats.total_params},
        {"bits_per_quantized_param_true", stats.bits_per_quantized_param_true},
        {"bits_per_quantized_param_stored", stats.bits_per_quantized_param_stored},
        {"bits_per_param_true", stats.bits_per_param_true},
        {"bits_per_param_stored", stats.bits_per_param_stored},
        {"container_note", stats.container_note}}}};
  ASSIGN_OR_RETURN(FileRecord manifest_record,
                   WriteWholeFile(tmp + "/" + kManifestFile, manifest.dump(2) + "\n"));
  stats.bytes_written += static_cast<int64_t>(manifest_record.bytes);
  RETURN_IF_ERROR(SyncDirectory(tmp));
  return stats;
}

}  // namespace

absl::StatusOr<ExportStats> ExportCheckpoint(const storage::Checkpoint& source,
                                             const std::map<std::string, QuantizedWeight>& units,
                                             const ExportOptions& options) {
  std::string out_dir = options.out_dir;
  while (out_dir.size() > 1 && out_dir.back() == '/') out_dir.pop_back();
  if (out_dir.empty()) return absl::InvalidArgumentError("export: out_dir is empty");
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("export: max_shard_bytes must be > 0, got ", options.max_shard_bytes));
  }
  if (source.num_packed() > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        source.dir(), ": the source is already packed-quantized; export from the original"));
  }
  // Before any work: an existing output is an error unless it may be replaced.
  std::error_code ec;
  const fs::file_status out_status = fs::symlink_status(out_dir, ec);
  const bool out_exists = fs::exists(out_status);
  if (out_exists && !options.overwrite) {
    return absl::AlreadyExistsError(
        absl::StrCat(out_dir, ": already exists (pass overwrite to replace it)"));
  }
  if (out_exists && !fs::is_directory(out_status)) {
    return absl::FailedPreconditionError(
        absl::StrCat(out_dir, ": exists and is not a directory; not replacing it"));
  }
  std::vector<UnitPlan> plans;
  plans.reserve(units.size());
  for (const auto& [name, qw] : units) {
    ASSIGN_OR_RETURN(UnitPlan plan, PlanUnit(source, name, qw, options.format));
    plans.push_back(std::move(plan));
  }

  const std::string tmp = absl::StrCat(out_dir, ".tmp-", ::getpid());
  RemoveAllQuietly(tmp);  // left by a crashed run of a process with our pid
  if (::mkdir(tmp.c_str(), 0755) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": cannot create the export directory"));
  }
  absl::StatusOr<ExportStats> stats = ExportInto(source, plans, options, tmp);
  bool swapped = false;
  absl::Status status = stats.status();
  if (status.ok()) status = RenameIntoPlace(tmp, out_dir, out_exists, &swapped);
  if (!status.ok()) {
    RemoveAllQuietly(tmp);
    return status;
  }
  if (swapped) RemoveAllQuietly(tmp);  // the old checkpoint, now under the temporary name
  // Persisting the rename is best effort: the checkpoint is complete and in place either way.
  const std::string parent = fs::path(out_dir).parent_path().string();
  SyncDirectory(parent.empty() ? "." : parent).IgnoreError();
  return stats;
}

}  // namespace quant::quant
