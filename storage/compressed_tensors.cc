#include "storage/compressed_tensors.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "storage/packing.h"

namespace quant::storage {
namespace {

using json = nlohmann::json;
constexpr int kScaleBits = 16;  // bf16 scales
constexpr int kMinBits = 2, kMaxBits = 8;

std::string S(std::string_view s) { return std::string(s); }

}  // namespace

int ContainerBits(int bits, ExportFormat format) {
  QUANT_CHECK(bits >= kMinBits && bits <= kMaxBits);
  if (format == ExportFormat::kNative) return bits;
  // vLLM's compressed-tensors WNA16 schemes take 4- and 8-bit weights (DESIGN.md section 7).
  return bits <= 4 ? 4 : 8;
}

std::vector<PackedTensor> PackedTensorsOf(const PackedLinear& u) {
  // Dense packing at 4 and 8 container bits is compressed-tensors' pack_to_int32 layout.
  const PackLayout layout = PackLayout::kDense;
  std::vector<PackedTensor> out;
  auto add = [&](PackedPart part, std::string_view suffix, DType dtype,
                 std::vector<int64_t> shape) {
    PackedTensor t;
    t.part = part;
    t.name = u.module + S(suffix);
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.bytes = static_cast<uint64_t>(NumElements(t.shape) * DTypeSize(dtype));
    out.push_back(std::move(t));
  };
  add(PackedPart::kPacked, kWeightPackedSuffix, DType::kI32,
      {u.out, PackedWordCount(u.in, u.container, layout)});
  add(PackedPart::kScale, kWeightScaleSuffix, DType::kBF16, {u.out, u.groups});
  if (!u.symmetric) {
    add(PackedPart::kZeroPoint, kWeightZeroPointSuffix, DType::kI32,
        {PackedWordCount(u.out, u.container, layout), u.groups});
  }
  add(PackedPart::kShape, kWeightShapeSuffix, DType::kI64, {2});
  return out;
}

std::vector<uint8_t> PackedBytes(const PackedLinear& u, PackedPart part) {
  std::vector<uint8_t> bytes;
  for (const PackedTensor& t : PackedTensorsOf(u)) {
    if (t.part == part) bytes.resize(t.bytes);
  }
  switch (part) {
    case PackedPart::kPacked: {
      // Symmetric codes are stored as q + 2^(container-1) with q = u - 2^(bits-1): the same
      // bytes when container == bits, shifted to the middle of a wider container for vLLM.
      // Asymmetric codes stay u; their zero point carries the offset (w = s (u - z)).
      std::vector<uint8_t> stored(u.codes, u.codes + u.out * u.in);
      if (u.symmetric) {
        const int shift = SymmetricZero(u.container) - SymmetricZero(u.bits);
        for (uint8_t& v : stored) v = static_cast<uint8_t>(v + shift);
      }
      PackRows(stored.data(), u.out, u.in, u.container, PackLayout::kDense,
               reinterpret_cast<int32_t*>(bytes.data()));
      break;
    }
    case PackedPart::kScale: {
      uint16_t* dst = reinterpret_cast<uint16_t*>(bytes.data());
      for (int64_t i = 0; i < u.out * u.groups; ++i) dst[i] = FloatToBF16(u.scales[i]);
      break;
    }
    case PackedPart::kZeroPoint: {
      std::vector<uint8_t> z(static_cast<size_t>(u.out * u.groups));
      for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<uint8_t>(u.zeros[i]);
      PackColumns(z.data(), u.out, u.groups, u.container, PackLayout::kDense,
                  reinterpret_cast<int32_t*>(bytes.data()));
      break;
    }
    case PackedPart::kShape: {
      const int64_t shape[2] = {u.out, u.in};
      std::memcpy(bytes.data(), shape, sizeof(shape));
      break;
    }
  }
  return bytes;
}

double StoredBits(const PackedLinear& u, int bits) {
  const double params = static_cast<double>(u.out) * static_cast<double>(u.in);
  const double groups = static_cast<double>(u.out) * static_cast<double>(u.groups);
  return params * bits + groups * kScaleBits + (u.symmetric ? 0.0 : groups * bits);
}

json QuantizationConfig(const std::vector<PackedLinear>& units,
                        const std::vector<std::string>& ignore, ExportFormat format) {
  // One group per (stored bits, asymmetric, channel, group size).
  using GroupKey = std::tuple<int, bool, bool, int64_t>;
  std::map<GroupKey, std::vector<std::string>> groups;
  for (const PackedLinear& u : units) {
    const int bits = format == ExportFormat::kVllm ? u.container : u.bits;
    groups[{bits, !u.symmetric, u.channel, u.channel ? 0 : u.group_size}].push_back(u.module);
  }
  json config_groups = json::object();
  int index = 0;
  for (auto& [key, targets] : groups) {
    const auto& [bits, asym, channel, group_size] = key;
    std::sort(targets.begin(), targets.end());
    json weights = {{"num_bits", bits},
                    {"type", "int"},
                    {"symmetric", !asym},
                    {"strategy", channel ? "channel" : "group"},
                    {"group_size", channel ? json() : json(group_size)},
                    {"dynamic", false},
                    {"actorder", json()},
                    {"observer", "minmax"}};
    config_groups[absl::StrCat("group_", index++)] = {{"targets", targets},
                                                      {"weights", std::move(weights)},
                                                      {"input_activations", json()},
                                                      {"output_activations", json()}};
  }
  if (format == ExportFormat::kVllm) {
    return {{"quant_method", S(kCompressedTensorsMethod)},
            {"format", S(kPackQuantizedFormat)},
            {"quantization_status", "compressed"},
            {"config_groups", std::move(config_groups)},
            {"ignore", ignore},
            {"kv_cache_scheme", json()}};
  }
  return {{"quant_method", S(kNativeMethod)},
          {"format", S(kNativeFormat)},
          {"version", kNativeFormatVersion},
          {"config_groups", std::move(config_groups)},
          {"ignore", ignore}};
}

std::string ContainerNote(const std::vector<PackedLinear>& units, ExportFormat format) {
  if (format != ExportFormat::kVllm) return "";
  std::map<int, std::set<int>> widened;  // container -> true bits stored in it
  for (const PackedLinear& u : units) {
    if (u.container != u.bits) widened[u.container].insert(u.bits);
  }
  std::string note;
  for (const auto& [container, bits] : widened) {
    std::string list;
    for (int b : bits) absl::StrAppend(&list, list.empty() ? "" : ", ", b);
    absl::StrAppend(&note, note.empty() ? "" : "; ", list, "-bit codes stored in ", container,
                    "-bit containers");
  }
  if (!note.empty()) absl::StrAppend(&note, " (vLLM's kernels take 4 and 8 bits)");
  return note;
}

}  // namespace quant::storage
