// GPTQ (Frantar et al. 2022) with the reference code's conventions (DESIGN.md section 5):
// H = 2 X^T X / n, relative damping, dead columns, lazy block updates of 128 columns,
// optional act-order with static groups, and the MSE grid search for group scales.
#pragma once

#include <vector>

#include "worker/quant/quantizer.h"

namespace quant::quant {

struct GptqOptions {
  double damp = 0.01;          // times mean(diag H); DESIGN.md 5 (the GSQ reference uses 0.1)
  int block_size = 128;        // lazy-batch block (GPTQ paper)
  bool act_order = false;      // columns by descending diag(H), with static groups
  bool mse_scale_search = true;  // off: the min/max RTN grid
  // The MSE search shrinks [xmin, xmax] by p = 1 - i/grid for i < max_shrink*grid and keeps the
  // p minimising sum |q(w) - w|^norm: GPTQ's Quantizer(mse=True) defaults.
  int mse_grid = 100;
  double mse_max_shrink = 0.8;
  double mse_norm = 2.4;
  // CUDA path only (the CPU path keeps its bytes). One Cholesky of the flipped Hessian gives the
  // update matrix directly (gptq.cc, UpdateMatrixOneCholesky): 1/3 n^3 FLOPs instead of 4/3 n^3
  // for Cholesky, inverse and Cholesky again; the same updates in exact arithmetic. Off: the
  // reference's route.
  bool cuda_one_cholesky = true;
  // How the one-Cholesky route factors the Hessians. cuda_cholesky_block > 0: all of them at
  // once, blocked (ReversedCholeskyBlocked below): diagonal blocks of this many columns, the
  // panels and trailing updates as batched fp32 GEMMs over every Hessian. 0: cuSOLVER's potrf
  // on each whole flipped Hessian, one at a time (cuda_cholesky_per_matrix, spread over
  // cuda_cholesky_streams CUDA streams) or in one batched call (potrfBatched, which libtorch
  // picks for a batch). docs/benchmarks.md has them timed.
  int cuda_cholesky_block = 512;
  int cuda_cholesky_leaf = 128;  // the blocked route's smallest diagonal block (cuSOLVER there)
  bool cuda_cholesky_per_matrix = true;
  int cuda_cholesky_streams = 1;
  // Columns between full-width trailing updates (a multiple of block_size; 0: after every
  // block, as the reference): inside it each block updates only the rest of this span, so W is
  // swept cols / cuda_outer_block times with GEMMs of depth cuda_outer_block instead of
  // cols / block_size times with depth block_size. Same FLOPs.
  int cuda_outer_block = 1024;
};

// Group parameters with the MSE shrink search; w_group [rows, g] float32 -> scale/zero [rows].
// Candidate scales are rounded to bf16 before they are scored, so the stored scale is the one
// that won. Without search it equals ComputeGroupParams.
void ComputeGroupParamsMse(const at::Tensor& w_group, const QuantScheme& scheme,
                           const GptqOptions& options, at::Tensor* scale, at::Tensor* zero);

// The reversed Cholesky factor of each matrix of a [D, n, n] float32 batch: R upper triangular
// with A = R R^T (R = J chol(J A J) J, J the reversal), written in place over a's upper triangle
// (its strict lower triangle zeroed); only a's upper triangle is read. Right-looking from the
// bottom-right corner in diagonal blocks of `block` columns (each factored the same way with a
// quarter of the block, down to `leaf`, where the flipped block goes to linalg_cholesky_ex), the
// panels through the diagonal block's inverse and the trailing updates as batched GEMMs over all
// D matrices in column panels of `block`. Returns info [D] int32 (0: every leaf was positive
// definite). Preconditions: a contiguous in its last two dimensions, block >= leaf >= 1.
at::Tensor ReversedCholeskyBlocked(const at::Tensor& a, int64_t block, int64_t leaf);

class GptqQuantizer : public Quantizer {
 public:
  explicit GptqQuantizer(GptqOptions options = {}) : options_(options) {}
  std::string name() const override { return "gptq"; }
  // context.hessian [in, in] float32 (undefined: identity, the no-token fallback).
  absl::StatusOr<QuantizedWeight> Quantize(const at::Tensor& weight, const QuantScheme& scheme,
                                           const UnitContext& context) const override;
  // All members at once (e.g. one projection of every expert of a layer): the number of tensor
  // ops does not grow with the member count. hessians[i] undefined: identity.
  absl::StatusOr<std::vector<QuantizedWeight>> QuantizeBatch(
      const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& hessians,
      const QuantScheme& scheme) const;
  const GptqOptions& options() const { return options_; }

 private:
  GptqOptions options_;
};

}  // namespace quant::quant
