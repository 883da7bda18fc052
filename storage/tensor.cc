// Dtype names and sizes for safetensors headers, and the scalar bf16 / f16 / fp8-e4m3fn
// conversions every reader and writer shares.
#include "storage/tensor.h"

#include <array>
#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant::storage {
namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;  // as written in a safetensors header
  int64_t size_bytes;
};

// The one table of names and sizes; ParseDType, DTypeName and DTypeSize all read it.
constexpr std::array<DTypeEntry, 11> kDTypes = {{
    {DType::kBF16, "BF16", 2},
    {DType::kF16, "F16", 2},
    {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},
    {DType::kI16, "I16", 2},
    {DType::kI32, "I32", 4},
    {DType::kI64, "I64", 8},
    {DType::kBool, "BOOL", 1},
}};

const DTypeEntry& Entry(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  QUANT_CHECK(false && "DType missing from kDTypes");
  __builtin_unreachable();
}

}  // namespace

int64_t DTypeSize(DType dtype) { return Entry(dtype).size_bytes; }

std::string_view DTypeName(DType dtype) { return Entry(dtype).name; }

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", absl::string_view(name.data(), name.size()), "\""));
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;  // a scalar (shape []) has one element
  for (int64_t d : shape) {
    QUANT_CHECK(d >= 0);
    // Shapes from files are validated for overflow before they get here (safetensors.cc).
    QUANT_CHECK(!__builtin_mul_overflow(n, d, &n));
  }
  return n;
}

// bf16 is the upper half of an IEEE-754 binary32: [15] sign, [14:7] exponent, [6:0] mantissa.
float BF16ToFloat(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }

uint16_t FloatToBF16(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    // NaN: keep the sign, force a quiet-NaN mantissa bit so truncation cannot yield infinity.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then truncate. Carries
  // ripple into the exponent, so the largest finite floats round up to infinity as RNE requires.
  const uint32_t lsb = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7fffu + lsb) >> 16);
}

// binary16: [15] sign, [14:10] exponent (bias 15), [9:0] mantissa.
float F16ToFloat(uint16_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x8000u) << 16;
  const uint32_t exp = (v >> 10) & 0x1fu;
  uint32_t mant = v & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf or NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal: value = mant * 2^-24. Normalize so the leading 1 sits at bit 10.
    int e = -14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e + 127) << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

namespace {

// float8_e4m3fn (OCP FP8 E4M3, "fn" = finite + NaN): [7] sign, [6:3] exponent (bias 7),
// [2:0] mantissa. No infinities; S.1111.111 (0x7f, 0xff) is NaN, so the largest finite value is
// S.1111.110 = 1.75 * 2^8 = 448. Exponent 0 is subnormal: mantissa/8 * 2^-6.
constexpr float DecodeF8E4M3(uint8_t v) {
  const bool negative = (v & 0x80u) != 0;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 0x7;
  if (exp == 0xf && mant == 0x7) return std::numeric_limits<float>::quiet_NaN();
  float mag;
  if (exp == 0) {
    mag = static_cast<float>(mant) * (1.0f / 512.0f);  // mant/8 * 2^-6
  } else {
    mag = 1.0f + static_cast<float>(mant) / 8.0f;
    for (int e = exp - 7; e > 0; --e) mag *= 2.0f;  // exact: powers of two
    for (int e = exp - 7; e < 0; ++e) mag *= 0.5f;
  }
  return negative ? -mag : mag;
}

constexpr std::array<float, 256> MakeF8E4M3Table() {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = DecodeF8E4M3(static_cast<uint8_t>(i));
  return t;
}

// Decoding by table: dequantizing a checkpoint touches every weight byte once.
constexpr std::array<float, 256> kF8E4M3Table = MakeF8E4M3Table();

}  // namespace

float F8E4M3ToFloat(uint8_t v) { return kF8E4M3Table[v]; }

void BF16ToFloatArray(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToFloat(src[i]);
}

void F16ToFloatArray(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToFloat(src[i]);
}

}  // namespace quant::storage
