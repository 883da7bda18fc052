// The writer's half of the packed-weight formats (docs/formats.md), torch-free: what tensors a
// quantized linear becomes, their bytes, and the quantization_config that names them, for the
// compressed-tensors pack-quantized format vLLM loads and for ours (native, true bit widths).
// The reader's half is Checkpoint::IndexPackedWeights / ReadPacked (storage/checkpoint.h);
// both take their names and constants from storage/packing.h. The exporter
// (worker/quant/export.cc) validates quantized units, plans shards and writes files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "storage/tensor.h"

namespace quant::storage {

enum class ExportFormat { kVllm, kNative };

// Bits each stored code takes: vLLM's compressed-tensors kernels take 4- and 8-bit weights, so
// kVllm widens 2-3 bit codes to 4 and 5-7 bit codes to 8; kNative stores the true bits.
int ContainerBits(int bits, ExportFormat format);

// One quantized linear as the formats store it: host arrays the caller owns and has validated
// (codes < 2^bits, zeros in range and 2^(bits-1) for a symmetric grid, scales exact in bf16).
struct PackedLinear {
  std::string module;  // "...gate_proj" (the weight is module + ".weight")
  int64_t out = 0, in = 0;
  int64_t groups = 0;  // scales per row
  int64_t group_size = 0;
  int bits = 0;        // true bits
  int container = 0;   // stored bits per code and zero point (ContainerBits)
  bool symmetric = true;
  bool channel = false;             // one group per row: strategy "channel"
  const uint8_t* codes = nullptr;   // [out, in]
  const float* scales = nullptr;    // [out, groups]
  const int32_t* zeros = nullptr;   // [out, groups]
};

// The tensors a linear becomes, in this order: weight_packed (I32), weight_scale (BF16),
// weight_zero_point (I32, asymmetric grids only), weight_shape (I64 [2]).
enum class PackedPart { kPacked, kScale, kZeroPoint, kShape };
struct PackedTensor {
  PackedPart part = PackedPart::kPacked;
  std::string name;  // module + suffix
  DType dtype = DType::kI32;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};
std::vector<PackedTensor> PackedTensorsOf(const PackedLinear& u);

// The bytes of one of them (PackedTensorsOf's `bytes` long).
std::vector<uint8_t> PackedBytes(const PackedLinear& u, PackedPart part);

// The linear's exact size at `bits` per code: codes, bf16 scales, zero points (asymmetric).
double StoredBits(const PackedLinear& u, int bits);

// config.json's quantization_config: one config group per (bits, grid, strategy, group size);
// `ignore` lists the linears left in 16 bits.
nlohmann::json QuantizationConfig(const std::vector<PackedLinear>& units,
                                  const std::vector<std::string>& ignore, ExportFormat format);

// "2, 3-bit codes stored in 4-bit containers (vLLM's kernels take 4 and 8 bits)", or "".
std::string ContainerNote(const std::vector<PackedLinear>& units, ExportFormat format);

}  // namespace quant::storage
