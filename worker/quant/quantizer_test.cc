// RTN: hand-computed groups pin GPTQ's conventions; the tensor version must reproduce the
// scalar reference byte for byte on odd shapes (STYLE.md 1).
#include "worker/quant/quantizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace quant::quant {
namespace {

using ::testing::HasSubstr;

struct RefResult {
  at::Tensor codes;   // uint8 [rows, cols]
  at::Tensor scales;  // float32 [rows, groups]
  at::Tensor zeros;   // int32 [rows, groups]
};

RefResult RunRef(const at::Tensor& weight, const QuantScheme& scheme) {
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  const int64_t rows = w.size(0);
  const int64_t cols = w.size(1);
  const int64_t groups = cols / EffectiveGroupSize(scheme, cols);
  RefResult ref;
  ref.codes = at::zeros({rows, cols}, at::kByte);
  ref.scales = at::zeros({rows, groups}, at::kFloat);
  ref.zeros = at::zeros({rows, groups}, at::kInt);
  RtnQuantize_ref(w.data_ptr<float>(), rows, cols, scheme, ref.codes.data_ptr<uint8_t>(),
                  ref.scales.data_ptr<float>(), ref.zeros.data_ptr<int32_t>());
  return ref;
}

// Byte equality, stricter than at::equal for floats (distinguishes -0 from +0).
bool SameBytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ac = a.contiguous();
  const at::Tensor bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.nbytes()) == 0;
}

QuantScheme Scheme(int bits, Grid grid, int group_size = kDefaultGroupSize) {
  QuantScheme scheme;
  scheme.bits = bits;
  scheme.grid = grid;
  scheme.group_size = group_size;
  return scheme;
}

QuantizedWeight QuantizeOrDie(const at::Tensor& w, const QuantScheme& scheme) {
  absl::StatusOr<QuantizedWeight> result = RtnQuantizer().Quantize(w, scheme, UnitContext{});
  EXPECT_TRUE(result.ok()) << result.status();
  return *std::move(result);
}

float Bf16(float x) { return at::tensor({x}).to(at::kBFloat16).to(at::kFloat).item<float>(); }

TEST(ValidateSchemeTest, AcceptsTwoToEightBits) {
  for (int bits = 2; bits <= 8; ++bits) {
    EXPECT_TRUE(ValidateScheme(Scheme(bits, Grid::kSymmetric)).ok()) << bits;
  }
}

TEST(ValidateSchemeTest, RejectsBitsOutsideRangeNamingBits) {
  for (int bits : {-1, 0, 1, 9, 16}) {
    const absl::Status status = ValidateScheme(Scheme(bits, Grid::kAsymmetric));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bits;
    EXPECT_THAT(std::string(status.message()), HasSubstr("bits")) << bits;
  }
}

TEST(ValidateSchemeTest, RejectsNonPositiveGroup) {
  const absl::Status status = ValidateScheme(Scheme(4, Grid::kSymmetric, 0));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("group_size"));
}

TEST(EffectiveGroupSizeTest, PerChannelWhenGroupDoesNotDivide) {
  const QuantScheme scheme = Scheme(4, Grid::kSymmetric);
  EXPECT_EQ(EffectiveGroupSize(scheme, 128), 128);
  EXPECT_EQ(EffectiveGroupSize(scheme, 256), 128);
  EXPECT_EQ(EffectiveGroupSize(scheme, 7168), 128);  // Kimi-K2 hidden size
  EXPECT_EQ(EffectiveGroupSize(scheme, 64), 64);     // tiny-qwen3-moe expert down_proj
  EXPECT_EQ(EffectiveGroupSize(scheme, 200), 200);
  EXPECT_EQ(EffectiveGroupSize(scheme, 1), 1);
}

// w = {-1, 0, 0.5, 2}, 2 bits, asymmetric: xmin -1, xmax 2, scale 3/3 = 1 (exact in bf16),
// zero round(1/1) = 1; codes round(w) + 1 with 0.5 -> 0 (half to even).
TEST(RtnTest, HandComputedAsymmetric) {
  const at::Tensor w = at::tensor({-1.0f, 0.0f, 0.5f, 2.0f}).view({1, 4});
  const QuantizedWeight q = QuantizeOrDie(w, Scheme(2, Grid::kAsymmetric, 4));
  EXPECT_EQ(q.group_size, 4);
  EXPECT_EQ(q.scales.item<float>(), 1.0f);
  EXPECT_EQ(q.zeros.item<int32_t>(), 1);
  EXPECT_TRUE(SameBytes(q.codes, at::tensor({0, 1, 1, 3}, at::kByte).view({1, 4})));
  EXPECT_TRUE(at::equal(q.Dequantize(), at::tensor({-1.0f, 0.0f, 0.0f, 2.0f}).view({1, 4})));
}

// Same w, symmetric: xmax = max(|-1|, 2) = 2, xmin = -2, scale = 4/3 -> bf16 1.3359375,
// zero (3+1)/2 = 2; w/scale = {-0.749, 0, 0.374, 1.497} rounds to {-1, 0, 0, 1}.
TEST(RtnTest, HandComputedSymmetric) {
  const at::Tensor w = at::tensor({-1.0f, 0.0f, 0.5f, 2.0f}).view({1, 4});
  const QuantizedWeight q = QuantizeOrDie(w, Scheme(2, Grid::kSymmetric, 4));
  EXPECT_EQ(q.scales.item<float>(), 1.3359375f);
  EXPECT_EQ(q.scales.item<float>(), Bf16(4.0f / 3.0f));
  EXPECT_EQ(q.zeros.item<int32_t>(), 2);
  EXPECT_TRUE(SameBytes(q.codes, at::tensor({1, 2, 2, 3}, at::kByte).view({1, 4})));
}

// GPTQ mirrors xmin only where it is negative: a symmetric group with no negative weight keeps
// xmin = 0, so scale = xmax / maxq while the zero stays at (maxq+1)/2 and the top is clipped.
TEST(RtnTest, SymmetricNonNegativeGroupKeepsGptqQuirk) {
  const at::Tensor w = at::tensor({0.0f, 1.0f, 2.0f, 3.0f}).view({1, 4});
  const QuantizedWeight q = QuantizeOrDie(w, Scheme(2, Grid::kSymmetric, 4));
  EXPECT_EQ(q.scales.item<float>(), 1.0f);
  EXPECT_EQ(q.zeros.item<int32_t>(), 2);
  EXPECT_TRUE(SameBytes(q.codes, at::tensor({2, 3, 3, 3}, at::kByte).view({1, 4})));
}

// All-zero group: xmin, xmax = -1, +1, so scale = 2/maxq and zero lands mid-grid; w' = 0.
TEST(RtnTest, AllZeroGroup) {
  const at::Tensor w = at::zeros({2, 4});
  for (Grid grid : {Grid::kSymmetric, Grid::kAsymmetric}) {
    const QuantizedWeight q = QuantizeOrDie(w, Scheme(2, grid, 4));
    EXPECT_EQ(q.scales[0][0].item<float>(), Bf16(2.0f / 3.0f));
    // Symmetric: (3+1)/2 = 2. Asymmetric from the bf16 scale: 1 / 0.66796875 = 1.497 -> 1.
    // From the fp32 scale: 1 / 0.6666667 = 1.49999996 rounds to the float 1.5 (half an ulp
    // there is 6e-8), and round(1.5) = 2 (half to even).
    const int asym_zero = kZeroFromFp32Scale ? 2 : 1;
    EXPECT_EQ(q.zeros[0][0].item<int32_t>(), grid == Grid::kSymmetric ? 2 : asym_zero);
    EXPECT_TRUE(at::equal(q.Dequantize(), w));
  }
}

// The zero point comes from the stored bf16 scale unless kZeroFromFp32Scale says otherwise.
// Find a group where the two choices disagree and check which one won.
TEST(RtnTest, AsymmetricZeroUsesTheConfiguredScale) {
  const QuantScheme scheme = Scheme(8, Grid::kAsymmetric, 2);
  const int maxq = 255;
  bool found = false;
  for (int i = 1; i < 4096 && !found; ++i) {
    const float a = static_cast<float>(i) / 4096.0f;  // xmin = -a, xmax = 1
    const float scale_fp32 = (1.0f + a) / static_cast<float>(maxq);
    const float scale_bf16 = Bf16(scale_fp32);
    const int z_fp32 = static_cast<int>(std::nearbyint(a / scale_fp32));
    const int z_bf16 = static_cast<int>(std::nearbyint(a / scale_bf16));
    if (z_fp32 == z_bf16) continue;
    found = true;
    const at::Tensor w = at::tensor({-a, 1.0f}).view({1, 2});
    const RefResult ref = RunRef(w, scheme);
    EXPECT_EQ(ref.zeros.item<int32_t>(), kZeroFromFp32Scale ? z_fp32 : z_bf16) << "a=" << a;
    EXPECT_EQ(ref.scales.item<float>(), scale_bf16);
    EXPECT_EQ(QuantizeOrDie(w, scheme).zeros.item<int32_t>(), ref.zeros.item<int32_t>());
  }
  EXPECT_TRUE(found) << "no group found where the two zero-point conventions differ";
}

// Weights shaped like the cases that break fast paths: rows of zeros, rows of one sign, a lone
// outlier, values already on the bf16 grid (as checkpoint weights are), exact ties.
at::Tensor OddWeights(int64_t rows, int64_t cols, int64_t seed) {
  at::manual_seed(seed);
  // 0.02: the init std of the tiny models (initializer_range in config.json).
  at::Tensor w = at::randn({rows, cols}) * 0.02;
  w = w.to(at::kBFloat16).to(at::kFloat);
  for (int64_t r = 0; r < rows; ++r) {
    switch (r % 6) {
      case 1:
        w[r].zero_();
        break;
      case 2:
        w[r].abs_();
        break;
      case 3:
        w[r].abs_().neg_();
        break;
      case 4:
        w[r][cols / 2].fill_(0.5);  // an outlier 25 std out
        break;
      case 5:  // small integers: w/scale lands on exact halves for some scales
        w[r].copy_(at::randint(-4, 5, {cols}).to(at::kFloat) * 0.25);
        break;
      default:
        break;
    }
  }
  return w;
}

TEST(RtnTest, TensorMatchesRefOnOddShapes) {
  int cases = 0;
  for (int64_t rows : {1, 6, 13}) {
    for (int64_t cols : {1, 5, 64, 127, 128, 129, 200, 256, 384, 640}) {
      for (int group : {kDefaultGroupSize, 32}) {
        const at::Tensor w = OddWeights(rows, cols, rows * 1000 + cols);
        for (int bits = 2; bits <= 8; ++bits) {
          for (Grid grid : {Grid::kSymmetric, Grid::kAsymmetric}) {
            const QuantScheme scheme = Scheme(bits, grid, group);
            const RefResult ref = RunRef(w, scheme);
            const QuantizedWeight q = QuantizeOrDie(w, scheme);
            const std::string where = "rows " + std::to_string(rows) + " cols " +
                                      std::to_string(cols) + " group " + std::to_string(group) +
                                      " bits " + std::to_string(bits) +
                                      (grid == Grid::kSymmetric ? " sym" : " asym");
            ASSERT_EQ(q.group_size, EffectiveGroupSize(scheme, cols)) << where;
            ASSERT_TRUE(SameBytes(q.codes, ref.codes)) << where;
            ASSERT_TRUE(SameBytes(q.scales, ref.scales)) << where;
            ASSERT_TRUE(SameBytes(q.zeros, ref.zeros)) << where;
            // Dequantize against the definition w' = scale * (q - zero), scalar by scalar.
            const at::Tensor deq = q.Dequantize();
            const int64_t g = q.group_size;
            auto codes = ref.codes.accessor<uint8_t, 2>();
            auto scales = ref.scales.accessor<float, 2>();
            auto zeros = ref.zeros.accessor<int32_t, 2>();
            auto got = deq.accessor<float, 2>();
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t c = 0; c < cols; ++c) {
                const float want =
                    scales[r][c / g] * static_cast<float>(codes[r][c] - zeros[r][c / g]);
                ASSERT_EQ(got[r][c], want) << where << " at " << r << "," << c;
              }
            }
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 3 * 10 * 2 * 7 * 2);
}

TEST(RtnTest, ScalesAreBf16AndCodesInRange) {
  const at::Tensor w = OddWeights(12, 384, 7);
  for (int bits = 2; bits <= 8; ++bits) {
    for (Grid grid : {Grid::kSymmetric, Grid::kAsymmetric}) {
      const QuantizedWeight q = QuantizeOrDie(w, Scheme(bits, grid));
      EXPECT_EQ(q.codes.scalar_type(), at::kByte);
      EXPECT_EQ(q.scales.scalar_type(), at::kFloat);
      EXPECT_EQ(q.zeros.scalar_type(), at::kInt);
      EXPECT_TRUE(at::equal(q.scales, q.scales.to(at::kBFloat16).to(at::kFloat)));
      EXPECT_TRUE((q.scales > 0).all().item<bool>());
      EXPECT_LE(q.codes.max().item<int>(), (1 << bits) - 1);
      EXPECT_GE(q.zeros.min().item<int>(), 0);
      EXPECT_LE(q.zeros.max().item<int>(), (1 << bits) - 1);
    }
  }
}

// On mixed-sign groups the error is half a step inside the grid. At the range ends two more
// terms appear: the rounded zero moves the grid by up to half a step, and the bf16 scale's
// relative error (up to 2^-8, bf16's unit roundoff: 8 significant bits) grows to maxq * 2^-8
// steps at the far end: more than a whole step at 8 bits, a real cost of storing bf16 scales.
TEST(RtnTest, ReconstructionErrorWithinBound) {
  at::manual_seed(11);
  const at::Tensor w = at::randn({16, 256});
  for (int bits = 2; bits <= 8; ++bits) {
    const float bound = 0.5f + static_cast<float>((1 << bits) - 1) / 256.0f + 1e-3f;
    for (Grid grid : {Grid::kSymmetric, Grid::kAsymmetric}) {
      const QuantizedWeight q = QuantizeOrDie(w, Scheme(bits, grid));
      const at::Tensor step = q.scales.repeat_interleave(q.group_size, 1);
      const at::Tensor err = (q.Dequantize() - w).abs() / step;
      EXPECT_LE(err.max().item<float>(), bound) << bits;
    }
  }
}

TEST(RtnTest, Bf16InputMatchesFloatInput) {
  const at::Tensor w = OddWeights(6, 256, 3);
  const QuantScheme scheme = Scheme(3, Grid::kAsymmetric);
  const QuantizedWeight from_float = QuantizeOrDie(w, scheme);
  const QuantizedWeight from_bf16 = QuantizeOrDie(w.to(at::kBFloat16), scheme);
  EXPECT_TRUE(SameBytes(from_float.codes, from_bf16.codes));
  EXPECT_TRUE(SameBytes(from_float.scales, from_bf16.scales));
  EXPECT_TRUE(SameBytes(from_float.zeros, from_bf16.zeros));
}

TEST(RtnTest, Deterministic) {
  const at::Tensor w = OddWeights(13, 640, 5);
  const QuantScheme scheme = Scheme(4, Grid::kSymmetric);
  const QuantizedWeight a = QuantizeOrDie(w, scheme);
  const QuantizedWeight b = QuantizeOrDie(w.clone(), scheme);
  EXPECT_TRUE(SameBytes(a.codes, b.codes));
  EXPECT_TRUE(SameBytes(a.scales, b.scales));
}

TEST(RtnTest, EmptyWeights) {
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{0, 128}, std::vector<int64_t>{4, 0}}) {
    const at::Tensor w = at::zeros(shape);
    const QuantizedWeight q = QuantizeOrDie(w, Scheme(4, Grid::kAsymmetric));
    EXPECT_EQ(q.codes.sizes(), w.sizes());
    EXPECT_EQ(q.Dequantize().sizes(), w.sizes());
    const RefResult ref = RunRef(w, Scheme(4, Grid::kAsymmetric));
    EXPECT_TRUE(SameBytes(q.scales, ref.scales));
  }
}

TEST(RtnTest, RejectsBadInput) {
  const RtnQuantizer rtn;
  const UnitContext context;
  const absl::StatusOr<QuantizedWeight> bad_bits =
      rtn.Quantize(at::zeros({2, 128}), Scheme(9, Grid::kSymmetric), context);
  EXPECT_EQ(bad_bits.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_bits.status().message()), HasSubstr("bits"));

  const absl::StatusOr<QuantizedWeight> one_d =
      rtn.Quantize(at::zeros({128}), Scheme(4, Grid::kSymmetric), context);
  EXPECT_EQ(one_d.status().code(), absl::StatusCode::kInvalidArgument);

  at::Tensor nan_weight = at::zeros({2, 128});
  nan_weight[1][3] = std::numeric_limits<float>::quiet_NaN();
  const absl::StatusOr<QuantizedWeight> nan =
      rtn.Quantize(nan_weight, Scheme(4, Grid::kSymmetric), context);
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);

  const absl::StatusOr<QuantizedWeight> ints =
      rtn.Quantize(at::zeros({2, 128}, at::kInt), Scheme(4, Grid::kSymmetric), context);
  EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
}

// GPTQ quantizes one column at a time with the params of its group; the result must agree
// with RTN on the whole group.
TEST(RtnTest, QuantizeToCodesColumnwiseMatchesWhole) {
  const at::Tensor w = OddWeights(6, 128, 9);
  const QuantScheme scheme = Scheme(3, Grid::kAsymmetric);
  at::Tensor scale;
  at::Tensor zero;
  ComputeGroupParams(w, scheme, &scale, &zero);
  const at::Tensor whole = QuantizeToCodes(w, scale, zero, scheme.bits);
  for (int64_t c = 0; c < w.size(1); ++c) {
    const at::Tensor col = QuantizeToCodes(w.narrow(1, c, 1), scale, zero, scheme.bits);
    ASSERT_TRUE(SameBytes(col, whole.narrow(1, c, 1).contiguous())) << c;
  }
  EXPECT_TRUE(SameBytes(whole, QuantizeOrDie(w, scheme).codes));
}

}  // namespace
}  // namespace quant::quant
