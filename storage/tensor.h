// Framework-free tensors that storage hands out: dtype, shape and bytes (storage depends on
// nothing of ours, DESIGN.md section 2; worker/ turns these into torch tensors).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::storage {

// The safetensors dtypes we read or write. Names match the safetensors header strings.
enum class DType { kBF16, kF16, kF32, kF64, kF8E4M3, kI8, kU8, kI16, kI32, kI64, kBool };

// Size of one element in bytes.
int64_t DTypeSize(DType dtype);
// "BF16", "F32", "F8_E4M3", ...
std::string_view DTypeName(DType dtype);
// Parses a header dtype string; InvalidArgument naming the string when unknown.
absl::StatusOr<DType> ParseDType(std::string_view name);

int64_t NumElements(const std::vector<int64_t>& shape);

// A dense, row-major tensor in host memory.
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // NumElements(shape) * DTypeSize(dtype) bytes

  int64_t numel() const { return NumElements(shape); }
  template <typename T> T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <typename T> const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
};

// Scalar conversions used by readers and writers (round-to-nearest-even for bf16).
float BF16ToFloat(uint16_t v);
uint16_t FloatToBF16(float v);
float F16ToFloat(uint16_t v);
float F8E4M3ToFloat(uint8_t v);

// Array forms of the decoders above (same results, element by element): the loops sit beside
// the scalar code so the compiler inlines and vectorizes them. `src` and `dst` hold n elements.
void BF16ToFloatArray(const uint16_t* src, int64_t n, float* dst);
void F16ToFloatArray(const uint16_t* src, int64_t n, float* dst);

}  // namespace quant::storage
