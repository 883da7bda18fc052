// RTN with GPTQ's quantizer conventions (DESIGN.md section 5): a scalar reference that defines
// the bytes, and the tensor version used in production, which must match it exactly.
#include "worker/quant/quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace quant::quant {
namespace {

int MaxQ(int bits) { return (1 << bits) - 1; }

// float -> bf16 -> float, round to nearest even: the same rounding c10::BFloat16 applies on
// conversion, so the reference and the tensor path store the same scale bits. Inputs are
// finite and positive here (scale > 0), so NaN handling is not needed.
float RoundToBf16_ref(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof(u));
  // Adding 0x7fff plus the lowest kept bit rounds the low 16 bits to nearest, ties to even.
  const uint32_t bias = 0x7fffu + ((u >> 16) & 1u);
  u = (u + bias) & 0xffff0000u;
  float out = 0;
  std::memcpy(&out, &u, sizeof(out));
  return out;
}

// One group's parameters, GPTQ's find_params written out scalar by scalar.
void GroupParams_ref(const float* w, int64_t n, const QuantScheme& scheme, float* scale,
                     int32_t* zero) {
  // The grid always contains 0, so a group of all-positive (or all-negative) weights still
  // represents 0 exactly.
  float xmin = 0.0f;
  float xmax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    xmin = std::min(xmin, w[i]);
    xmax = std::max(xmax, w[i]);
  }
  const bool sym = scheme.grid == Grid::kSymmetric;
  if (sym) {
    xmax = std::max(std::fabs(xmin), xmax);
    // GPTQ mirrors xmin only where it is negative; an all-non-negative group keeps xmin = 0.
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0.0f && xmax == 0.0f) {  // all-zero group: any non-degenerate grid will do
    xmin = -1.0f;
    xmax = 1.0f;
  }
  const int maxq = MaxQ(scheme.bits);
  const float scale_fp32 = (xmax - xmin) / static_cast<float>(maxq);
  const float scale_stored = RoundToBf16_ref(scale_fp32);
  *scale = scale_stored;
  if (sym) {
    *zero = (maxq + 1) / 2;
  } else {
    const float zero_scale = kZeroFromFp32Scale ? scale_fp32 : scale_stored;
    // nearbyint under the default rounding mode is round half to even, as torch.round.
    *zero = static_cast<int32_t>(std::nearbyint(-xmin / zero_scale));
  }
}

uint8_t Code_ref(float w, float scale, int32_t zero, int maxq) {
  float q = std::nearbyint(w / scale) + static_cast<float>(zero);
  q = std::min(std::max(q, 0.0f), static_cast<float>(maxq));
  return static_cast<uint8_t>(q);
}

}  // namespace

absl::Status ValidateScheme(const QuantScheme& scheme) {
  if (scheme.bits < kMinBits || scheme.bits > kMaxBits) {
    return absl::InvalidArgumentError(absl::StrCat("QuantScheme.bits must be in ", kMinBits, "..",
                                                   kMaxBits, ", got ", scheme.bits));
  }
  if (scheme.group_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantScheme.group_size must be > 0, got ", scheme.group_size));
  }
  return absl::OkStatus();
}

int EffectiveGroupSize(const QuantScheme& scheme, int64_t in_features) {
  QUANT_CHECK(scheme.group_size > 0);
  QUANT_CHECK(in_features >= 0);
  if (in_features % scheme.group_size == 0) return scheme.group_size;
  return static_cast<int>(in_features);
}

at::Tensor QuantizedWeight::Dequantize() const {
  QUANT_CHECK(codes.defined() && codes.dim() == 2);
  QUANT_CHECK(group_size > 0);
  const int64_t out = codes.size(0);
  const int64_t in = codes.size(1);
  QUANT_CHECK(in % group_size == 0);
  const int64_t groups = in / group_size;
  QUANT_CHECK(scales.dim() == 2 && scales.size(0) == out && scales.size(1) == groups);
  QUANT_CHECK(zeros.dim() == 2 && zeros.size(0) == out && zeros.size(1) == groups);
  // (q - zero) is a small integer, exact in float; one rounding in the product, as in the ref.
  at::Tensor q = codes.to(at::kFloat).view({out, groups, group_size});
  at::Tensor centred = q - zeros.to(at::kFloat).unsqueeze(-1);
  return (scales.unsqueeze(-1) * centred).view({out, in});
}

void GroupRange(const at::Tensor& w_group, const QuantScheme& scheme, at::Tensor* xmin_out,
                at::Tensor* xmax_out) {
  const at::Tensor zeros_like_row = at::zeros({w_group.size(0)}, w_group.options());
  at::Tensor xmin = at::minimum(w_group.amin(1), zeros_like_row);
  at::Tensor xmax = at::maximum(w_group.amax(1), zeros_like_row);
  if (scheme.grid == Grid::kSymmetric) {
    xmax = at::maximum(xmin.abs(), xmax);
    xmin = at::where(xmin < 0, -xmax, xmin);
  }
  const at::Tensor degenerate = at::logical_and(xmin == 0, xmax == 0);
  *xmin_out = at::where(degenerate, at::full_like(xmin, -1.0), xmin);
  *xmax_out = at::where(degenerate, at::full_like(xmax, 1.0), xmax);
}

void ComputeGroupParams(const at::Tensor& w_group, const QuantScheme& scheme, at::Tensor* scale,
                        at::Tensor* zero) {
  QUANT_CHECK(ValidateScheme(scheme).ok());
  QUANT_CHECK(w_group.dim() == 2 && w_group.scalar_type() == at::kFloat);
  QUANT_CHECK(w_group.size(1) > 0);
  at::Tensor xmin, xmax;
  GroupRange(w_group, scheme, &xmin, &xmax);
  const bool sym = scheme.grid == Grid::kSymmetric;

  const int maxq = MaxQ(scheme.bits);
  // Divide by a tensor, not a Scalar: a scalar divisor may be turned into a multiplication by
  // its reciprocal on some backends, which is not bit-identical to the reference's division.
  const at::Tensor scale_fp32 = (xmax - xmin) / at::full_like(xmax, static_cast<double>(maxq));
  const at::Tensor scale_stored = scale_fp32.to(at::kBFloat16).to(at::kFloat);
  *scale = scale_stored;
  if (sym) {
    *zero = at::full(xmax.sizes(), (maxq + 1) / 2, xmax.options().dtype(at::kInt));
  } else {
    const at::Tensor& zero_scale = kZeroFromFp32Scale ? scale_fp32 : scale_stored;
    *zero = at::round(-xmin / zero_scale).to(at::kInt);
  }
}

at::Tensor QuantizeToCodes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero,
                           int bits) {
  QUANT_CHECK(bits >= kMinBits && bits <= kMaxBits);
  QUANT_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat);
  QUANT_CHECK(scale.dim() == 1 && scale.size(0) == w.size(0));
  QUANT_CHECK(zero.dim() == 1 && zero.size(0) == w.size(0));
  at::Tensor q = at::round(w / scale.unsqueeze(1)) + zero.to(at::kFloat).unsqueeze(1);
  return at::clamp(q, 0, MaxQ(bits)).to(at::kByte);
}

absl::StatusOr<QuantizedWeight> RtnQuantizer::Quantize(const at::Tensor& weight,
                                                       const QuantScheme& scheme,
                                                       const UnitContext& /*context*/) const {
  RETURN_IF_ERROR(ValidateScheme(scheme));
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RTN expects a 2-D weight [out, in], got ",
        weight.defined() ? absl::StrCat(weight.dim(), "-D") : std::string("undefined")));
  }
  if (!c10::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat("RTN expects a floating-point weight, got ",
                                                   c10::toString(weight.scalar_type())));
  }
  const int64_t out = weight.size(0);
  const int64_t in = weight.size(1);
  // bf16/fp16 inputs upcast exactly; the grid is computed in float32 as in the reference.
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  if (w.numel() > 0 && !at::isfinite(w).all().item<bool>()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RTN weight [", out, ", ", in, "] has non-finite values"));
  }

  QuantizedWeight result;
  result.scheme = scheme;
  result.group_size = EffectiveGroupSize(scheme, in);
  const int64_t groups = in / result.group_size;
  if (w.numel() == 0) {
    result.codes = at::empty({out, in}, w.options().dtype(at::kByte));
    result.scales = at::empty({out, groups}, w.options());
    result.zeros = at::empty({out, groups}, w.options().dtype(at::kInt));
    return result;
  }
  // Row-major [out, in] viewed as one row per group: [out * groups, group_size].
  const at::Tensor w_groups = w.view({out * groups, result.group_size});
  at::Tensor scale;
  at::Tensor zero;
  ComputeGroupParams(w_groups, scheme, &scale, &zero);
  result.codes = QuantizeToCodes(w_groups, scale, zero, scheme.bits).view({out, in});
  result.scales = scale.view({out, groups});
  result.zeros = zero.view({out, groups});
  return result;
}

void RtnQuantize_ref(const float* w, int64_t rows, int64_t cols, const QuantScheme& scheme,
                     uint8_t* codes, float* scales, int32_t* zeros) {
  QUANT_CHECK(ValidateScheme(scheme).ok());
  const int64_t group = EffectiveGroupSize(scheme, cols);
  const int64_t groups = cols / group;
  const int maxq = MaxQ(scheme.bits);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* wg = w + r * cols + g * group;
      float scale = 0;
      int32_t zero = 0;
      GroupParams_ref(wg, group, scheme, &scale, &zero);
      scales[r * groups + g] = scale;
      zeros[r * groups + g] = zero;
      for (int64_t c = 0; c < group; ++c) {
        codes[r * cols + g * group + c] = Code_ref(wg[c], scale, zero, maxq);
      }
    }
  }
}

}  // namespace quant::quant
