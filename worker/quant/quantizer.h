// The one interface every quantizer implements (RTN, GPTQ, GSQ): a unit's weight in, integer
// codes + per-group scales + zero points out, the dequantized weight on request.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "absl/status/statusor.h"
#include "job/job_enums.h"

namespace quant::quant {

inline constexpr int kDefaultGroupSize = 128;  // GPTQ/GSQ convention (DESIGN.md section 5)
inline constexpr int kMinBits = 2;             // DESIGN.md section 5: 2..8-bit codes in uint8
inline constexpr int kMaxBits = 8;

// Which scale the asymmetric zero point is computed from: false = the stored (bf16-rounded)
// scale, true = the fp32 scale before rounding. Codes and w' always use the stored scale.
// false is what reproduces ../shared/anchors.json: with the eval job's fake quantization on
// kjv_val, tiny-qwen3-moe experts asym 2/3/8-bit and tiny-deepseek-v3 experts asym 3/8-bit match
// the anchors' ppl to 1e-5 and flip rate exactly (2-bit: 26.70292 vs 26.70293), while true
// misses by 1e-3..3e-3 in ppl (26.70610) with other flip rates. (The anchors' description
// suggested true; the numbers say otherwise.) Sym grids do not depend on it. The scalar
// reference and the tensor version both read this one flag.
inline constexpr bool kZeroFromFp32Scale = false;

struct QuantScheme {
  int bits = 4;  // 2..8
  Grid grid = Grid::kSymmetric;
  int group_size = kDefaultGroupSize;  // columns per group; per-channel when in % group != 0
};

// Validates bits in 2..8 and group_size > 0; InvalidArgument naming the field otherwise.
absl::Status ValidateScheme(const QuantScheme& scheme);

// Effective group size for a weight with `in_features` columns: the scheme's group when it
// divides in_features, else in_features (one group per row: the per-channel fallback).
int EffectiveGroupSize(const QuantScheme& scheme, int64_t in_features);

// Codes u in [0, 2^bits - 1]; w' = scale * (u - zero), per group of `group_size` input columns.
struct QuantizedWeight {
  QuantScheme scheme;
  int group_size = 0;  // effective group size
  at::Tensor codes;    // uint8 [out, in]
  at::Tensor scales;   // float32 [out, in/group_size], every value exactly representable in bf16
  at::Tensor zeros;    // int32 [out, in/group_size]

  // float32 [out, in].
  at::Tensor Dequantize() const;
};

// What a quantizer may use besides the weight. Fields a method does not need stay undefined.
struct UnitContext {
  at::Tensor hessian;       // float32 [in, in], H = 2 X^T X / n; undefined: identity
  int64_t tokens_seen = 0;  // calibration tokens that reached this unit
};

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  virtual std::string name() const = 0;
  // `weight` is float32 [out, in] on any device; the result lives on the same device.
  virtual absl::StatusOr<QuantizedWeight> Quantize(const at::Tensor& weight,
                                                   const QuantScheme& scheme,
                                                   const UnitContext& context) const = 0;
};

// Round-to-nearest with the GPTQ quantizer conventions (DESIGN.md section 5).
class RtnQuantizer : public Quantizer {
 public:
  std::string name() const override { return "rtn"; }
  absl::StatusOr<QuantizedWeight> Quantize(const at::Tensor& weight, const QuantScheme& scheme,
                                           const UnitContext& context) const override;
};

// The clipped range of each row of w_group [rows, g] by the GPTQ conventions (0 always inside;
// symmetric: mirrored; all-zero rows: -1..1), as float32 [rows].
void GroupRange(const at::Tensor& w_group, const QuantScheme& scheme, at::Tensor* xmin,
                at::Tensor* xmax);

// Per-group scale and zero for the RTN conventions: w [rows, g] float32 (each row one group)
// -> scale float32 [rows] (rounded to bf16, the stored dtype) and zero int32 [rows].
// Exposed for GPTQ, which uses the same grid. Precondition: ValidateScheme(scheme).ok().
void ComputeGroupParams(const at::Tensor& w_group, const QuantScheme& scheme, at::Tensor* scale,
                        at::Tensor* zero);

// Codes for w [rows, k] float32 against per-row scale float32 [rows] and zero int32 [rows]:
// clamp(round(w / scale) + zero, 0, 2^bits - 1) as uint8 [rows, k], round half to even.
// GPTQ calls it one column at a time with the params of the column's group.
at::Tensor QuantizeToCodes(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero,
                           int bits);

// Plain scalar reference of RTN over a row-major float buffer; defines the bytes the tensor
// version must produce (STYLE.md 1). codes: rows*cols; scales and zeros: rows*(cols/group) with
// group = EffectiveGroupSize(scheme, cols). Precondition: ValidateScheme(scheme).ok().
void RtnQuantize_ref(const float* w, int64_t rows, int64_t cols, const QuantScheme& scheme,
                     uint8_t* codes, float* scales, int32_t* zeros);

}  // namespace quant::quant
