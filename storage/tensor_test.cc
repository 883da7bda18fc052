// Tests for dtype tables and scalar conversions. Every decoder is checked exhaustively against
// a formula written here from the format definitions (sign * 2^(e - bias) * (1 + m / 2^bits)),
// independent of the bit manipulation in tensor.cc.
#include "storage/tensor.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace quant::storage {
namespace {

// Value of a binary float with the given field widths, from the textbook definition.
double DecodeIeeeLike(uint32_t bits, int exp_bits, int mant_bits, int bias, bool has_inf) {
  const bool negative = (bits >> (exp_bits + mant_bits)) & 1;
  const uint32_t exp = (bits >> mant_bits) & ((1u << exp_bits) - 1);
  const uint32_t mant = bits & ((1u << mant_bits) - 1);
  const uint32_t exp_max = (1u << exp_bits) - 1;
  double mag;
  if (has_inf && exp == exp_max) {
    mag = mant == 0 ? std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::quiet_NaN();
  } else if (exp == 0) {
    mag = std::ldexp(static_cast<double>(mant), 1 - bias - mant_bits);
  } else {
    mag = std::ldexp(1.0 + std::ldexp(static_cast<double>(mant), -mant_bits),
                     static_cast<int>(exp) - bias);
  }
  return negative ? -mag : mag;
}

TEST(DTypeTest, NamesSizesAndParseAgree) {
  const struct {
    DType dtype;
    const char* name;
    int64_t size;
  } kCases[] = {{DType::kBF16, "BF16", 2}, {DType::kF16, "F16", 2},        {DType::kF32, "F32", 4},
                {DType::kF64, "F64", 8},   {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kI8, "I8", 1},
                {DType::kU8, "U8", 1},     {DType::kI16, "I16", 2},        {DType::kI32, "I32", 4},
                {DType::kI64, "I64", 8},   {DType::kBool, "BOOL", 1}};
  for (const auto& c : kCases) {
    EXPECT_EQ(DTypeName(c.dtype), c.name);
    EXPECT_EQ(DTypeSize(c.dtype), c.size) << c.name;
    absl::StatusOr<DType> parsed = ParseDType(c.name);
    ASSERT_TRUE(parsed.ok()) << c.name;
    EXPECT_EQ(*parsed, c.dtype);
  }
}

TEST(DTypeTest, UnknownNameIsInvalidArgumentNamingIt) {
  for (const char* bad : {"", "f32", "F8_E5M2", "Q4_0", "BF16 "}) {
    absl::StatusOr<DType> parsed = ParseDType(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(std::string("\"") + bad + "\""), std::string::npos)
        << parsed.status();
  }
}

TEST(NumElementsTest, ScalarEmptyAndProduct) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({0, 5}), 0);
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
}

TEST(BF16Test, DecodesAll65536AgainstFormula) {
  for (uint32_t v = 0; v < 65536; ++v) {
    const double want = DecodeIeeeLike(v, 8, 7, 127, /*has_inf=*/true);
    const float got = BF16ToFloat(static_cast<uint16_t>(v));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << v;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << v;
      EXPECT_EQ(std::signbit(got), std::signbit(want)) << v;
    }
  }
}

TEST(BF16Test, RoundTripsEveryNonNaNValue) {
  for (uint32_t v = 0; v < 65536; ++v) {
    const float f = BF16ToFloat(static_cast<uint16_t>(v));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(f)))) << v;
    } else {
      EXPECT_EQ(FloatToBF16(f), v);
    }
  }
}

TEST(BF16Test, RoundsToNearestEvenOnHandPickedCases) {
  // 1 + 2^-8 lies halfway between bf16 1.0 (0x3f80, even) and 1 + 2^-7 (0x3f81): ties to even.
  EXPECT_EQ(FloatToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 0x3f81 (odd) and 0x3f82 (even): goes up.
  EXPECT_EQ(FloatToBF16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above and below the first halfway point.
  EXPECT_EQ(FloatToBF16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(FloatToBF16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 0.0f)), 0x3f80);
  EXPECT_EQ(FloatToBF16(-1.0f - std::ldexp(1.0f, -8)), 0xbf80);
  EXPECT_EQ(FloatToBF16(-1.0f - 3 * std::ldexp(1.0f, -8)), 0xbf82);
  // The largest float is past the halfway point above bf16's largest finite: overflows to inf.
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(FloatToBF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBF16(-0.0f), 0x8000);
  // The smallest float subnormal (2^-149) is below half of bf16's smallest subnormal (2^-133).
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // NaNs stay NaN, including one whose payload sits only in the low 16 bits.
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::bit_cast<float>(0xff800001u)))));
}

// Nearest-even by comparing distances in double (exact for these values) instead of bit tricks.
uint16_t NearestEvenBF16ByDistance(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint16_t down = static_cast<uint16_t>(bits >> 16);  // toward zero
  const uint16_t up = static_cast<uint16_t>(down + 1);      // away from zero (may reach inf)
  const double lo = BF16ToFloat(down);
  const double hi = BF16ToFloat(up);
  const double d = x;
  const double dist_lo = std::fabs(d - lo);
  const double dist_hi = std::fabs(hi - d);
  if (dist_lo < dist_hi) return down;
  if (dist_hi < dist_lo) return up;
  return (down & 1) == 0 ? down : up;
}

TEST(BF16Test, RandomFloatsMatchDistanceBasedRounding) {
  std::mt19937 rng(12345);
  int checked = 0;
  for (int i = 0; i < 1000000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (!std::isfinite(x)) continue;
    // Values that round past bf16's largest finite are covered by the hand-picked test.
    if (std::fabs(x) >= BF16ToFloat(0x7f7f)) continue;
    ASSERT_EQ(FloatToBF16(x), NearestEvenBF16ByDistance(x)) << std::bit_cast<uint32_t>(x);
    ++checked;
  }
  EXPECT_GT(checked, 900000);
}

TEST(F16Test, DecodesAll65536AgainstFormula) {
  for (uint32_t v = 0; v < 65536; ++v) {
    const double want = DecodeIeeeLike(v, 5, 10, 15, /*has_inf=*/true);
    const float got = F16ToFloat(static_cast<uint16_t>(v));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << v;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << v;
      EXPECT_EQ(std::signbit(got), std::signbit(want)) << v;
    }
  }
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
}

TEST(ArrayDecodeTest, MatchesScalarDecodeOnAllValues) {
  std::vector<uint16_t> all(65536);
  for (uint32_t v = 0; v < 65536; ++v) all[v] = static_cast<uint16_t>(v);
  std::vector<float> bf16(all.size()), f16(all.size());
  BF16ToFloatArray(all.data(), static_cast<int64_t>(all.size()), bf16.data());
  F16ToFloatArray(all.data(), static_cast<int64_t>(all.size()), f16.data());
  for (uint32_t v = 0; v < 65536; ++v) {
    ASSERT_EQ(std::bit_cast<uint32_t>(bf16[v]), std::bit_cast<uint32_t>(BF16ToFloat(all[v])));
    ASSERT_EQ(std::bit_cast<uint32_t>(f16[v]), std::bit_cast<uint32_t>(F16ToFloat(all[v])));
  }
}

TEST(F8E4M3Test, DecodesAll256AgainstFormula) {
  for (uint32_t v = 0; v < 256; ++v) {
    const float got = F8E4M3ToFloat(static_cast<uint8_t>(v));
    // e4m3fn: bias 7, no infinities; only S.1111.111 is NaN.
    if ((v & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(got)) << v;
      continue;
    }
    const double want = DecodeIeeeLike(v, 4, 3, 7, /*has_inf=*/false);
    EXPECT_EQ(static_cast<double>(got), want) << v;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << v;
  }
}

TEST(F8E4M3Test, KnownValues) {
  EXPECT_EQ(F8E4M3ToFloat(0x7e), 448.0f);  // largest finite, S.1111.110
  EXPECT_EQ(F8E4M3ToFloat(0xfe), -448.0f);
  EXPECT_EQ(F8E4M3ToFloat(0x78), 256.0f);                // exponent 15 is finite in the fn variant
  EXPECT_EQ(F8E4M3ToFloat(0x38), 1.0f);                  // exponent 7 = bias
  EXPECT_EQ(F8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(F8E4M3ToFloat(0x07), 7 * std::ldexp(1.0f, -9));  // largest subnormal
  EXPECT_EQ(F8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));      // smallest subnormal
  EXPECT_EQ(F8E4M3ToFloat(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(F8E4M3ToFloat(0x80)));
  EXPECT_TRUE(std::isnan(F8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(F8E4M3ToFloat(0xff)));
  int nans = 0;
  for (int v = 0; v < 256; ++v) nans += std::isnan(F8E4M3ToFloat(static_cast<uint8_t>(v)));
  EXPECT_EQ(nans, 2);
}

}  // namespace
}  // namespace quant::storage
