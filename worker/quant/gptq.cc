// GPTQ: column-by-column quantization with error feedback through the inverse Hessian's
// Cholesky factor, in blocks (the reference's fasterquant, written for batched tensors).
#include "worker/quant/gptq.h"

#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#if defined(QUANT_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/gptq_block_cuda.h"
#endif
#if defined(QUANT_TORCH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif


namespace quant::quant {
namespace {

at::Tensor Fake(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero, int maxq) {
  at::Tensor q = at::clamp(at::round(w / scale) + zero, 0, maxq);
  return scale * (q - zero);
}

// One block of columns on the GPU: the block's group parameters first (dynamic groups read W at
// the block's start, exactly what the column loop reads), then kernels/gptq_block.cu quantizes
// the block's columns for every row of every member in one launch (the CPU path's column loop
// would be ~10 launches per column), and its codes go to their (possibly permuted) columns.
// group_of_col [cols] int32 and orig_cols [cols] int64 (undefined: no permutation) are on the
// GPU, made once per batch: no host-to-device copy (a stream sync) per block. w1, err1 and w0 may
// be views of wider matrices (last dimension contiguous): the kernel takes their row strides, so
// no block is copied out or back; without a permutation the codes go straight into `codes`.
template <typename GroupParams>
absl::Status BlockCuda(const at::Tensor& w, const at::Tensor& w0, at::Tensor& w1,
                       at::Tensor& err1, const at::Tensor& hinv1, const at::Tensor& scales,
                       const at::Tensor& zero_f, at::Tensor& codes, GroupParams& group_params,
                       const at::Tensor& group_of_col, const at::Tensor& orig_cols,
                       bool static_groups, int64_t i1, int64_t group, int maxq) {
#if defined(QUANT_WITH_CUDA)
  const int64_t batch = w.size(0), rows = w.size(1), cols = w.size(2), count = w1.size(2);
  if (!static_groups) {
    for (int64_t col = i1; col < i1 + count; ++col) {
      if (col % group == 0) {
        group_params(w.narrow(2, col, std::min<int64_t>(group, cols - col)), col / group);
      }
    }
  }
  at::Tensor goc = group_of_col.narrow(0, i1, count);
  at::Tensor u = hinv1.contiguous();
  at::Tensor block_codes = orig_cols.defined() ? at::empty({batch, rows, count}, codes.options())
                                               : codes.narrow(2, i1, count);
  const at::Tensor* views[] = {&w1, &err1, &w0, &block_codes};
  for (const at::Tensor* t : views) {
    if (t->defined() && (t->stride(2) != 1 || t->stride(0) != rows * t->stride(1))) {
      return absl::InternalError("GPTQ block on CUDA: a block view with unexpected strides");
    }
  }
  kernels::GptqBlockArgs a;
  a.members = batch;
  a.rows = rows;
  a.count = count;
  a.groups = scales.size(2);
  a.maxq = maxq;
  a.group_of_col = goc.data_ptr<int32_t>();
  a.hinv = u.data_ptr<float>();
  a.scales = scales.data_ptr<float>();
  a.zeros = zero_f.data_ptr<float>();
  a.w = w1.data_ptr<float>();
  a.codes = block_codes.data_ptr<uint8_t>();
  a.err = err1.data_ptr<float>();
  if (w0.defined()) a.w0 = w0.data_ptr<float>();
  a.ld_w = w1.stride(1);
  a.ld_err = err1.stride(1);
  a.ld_codes = block_codes.stride(1);
  if (w0.defined()) a.ld_w0 = w0.stride(1);
  if (cudaError_t e = kernels::GptqBlockCuda(a, nullptr); e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("GPTQ block on CUDA: ", cudaGetErrorString(e)));
  }
  if (orig_cols.defined()) codes.index_copy_(2, orig_cols.narrow(0, i1, count), block_codes);
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError("GPTQ on CUDA: this build has no CUDA kernels");
#endif
}

#if defined(QUANT_TORCH_CUDA)
// Each matrix's potrf on one of `count` CUDA streams (libtorch's pool), joined back into the
// current stream before returning: independent factorizations overlap their latency-bound panel
// steps. l and k are the current stream's; info [D] int32.
absl::StatusOr<at::Tensor> CholeskyOnStreams(const at::Tensor& k, at::Tensor& l, int count) {
  const c10::cuda::CUDAStream main = c10::cuda::getCurrentCUDAStream();
  cudaEvent_t event;
  if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess ||
      cudaEventRecord(event, main.stream()) != cudaSuccess) {
    return absl::InternalError("GPTQ: CUDA event for the Cholesky streams");
  }
  std::vector<c10::cuda::CUDAStream> side;
  for (int s = 0; s < count; ++s) {
    side.push_back(c10::cuda::getStreamFromPool());
    if (cudaStreamWaitEvent(side.back().stream(), event, 0) != cudaSuccess) {
      cudaEventDestroy(event);
      return absl::InternalError("GPTQ: CUDA stream wait for the Cholesky streams");
    }
  }
  std::vector<at::Tensor> infos;
  for (int64_t d = 0; d < k.size(0); ++d) {
    const c10::cuda::CUDAStreamGuard guard(side[d % count]);
    auto [ld, id] = at::linalg_cholesky_ex(k.select(0, d));
    l.select(0, d).copy_(ld);
    id.record_stream(main);  // read on the main stream below
    infos.push_back(id);
  }
  for (const c10::cuda::CUDAStream& s : side) {  // the main stream waits for every side stream
    if (cudaEventRecord(event, s.stream()) != cudaSuccess ||
        cudaStreamWaitEvent(main.stream(), event, 0) != cudaSuccess) {
      cudaEventDestroy(event);
      return absl::InternalError("GPTQ: CUDA join of the Cholesky streams");
    }
  }
  cudaEventDestroy(event);  // released once its last record completes
  return at::stack(infos);
}
#endif

// The CUDA path's update matrix from one Cholesky. GPTQ's column loop with U = chol(H^-1) (upper,
// H^-1 = U^T U) leaves W - Q = E U (W the weights before any update, Q dequantized, E the scaled
// errors), so E = (W - Q) U^-1. With J the reversal, chol(J H J) = L gives H = R R^T with
// R = J L J upper, hence U = R^-1, E = (W - Q) R, and column j, quantized from W_j minus
// sum_{i<j} E_i U_ij, is quantized from W_j + (1/R_jj) sum_{i<j} (W - Q)_i R_ij. The block kernel
// (GptqBlockArgs::w0) and the trailing GEMMs apply w_j -= e_i V_ij with e_i = (W - Q)_i and
// V_ij = -R_ij / R_jj for i < j. Only V's strict upper triangle is read (its diagonal is 1).
// h [D, n, n] (contiguous) is consumed: the blocked route factors it in place; the others flip
// it and free it before the factor's memory arrives.
absl::StatusOr<at::Tensor> UpdateMatrixOneCholesky(at::Tensor h, const GptqOptions& options) {
  at::Tensor r, info;
  if (options.cuda_cholesky_block > 0) {
    info = ReversedCholeskyBlocked(h, options.cuda_cholesky_block,
                                   std::min(options.cuda_cholesky_leaf,
                                            options.cuda_cholesky_block));
    r = std::move(h);
  } else {
    at::Tensor k = h.flip({1, 2});  // J H J
    h.reset();
    at::Tensor l;
    if (options.cuda_cholesky_per_matrix) {
      l = at::empty_like(k);
#if defined(QUANT_TORCH_CUDA)
      if (options.cuda_cholesky_streams > 1 && k.is_cuda()) {
        ASSIGN_OR_RETURN(info, CholeskyOnStreams(k, l, options.cuda_cholesky_streams));
      }
#endif
      if (!info.defined()) {
        std::vector<at::Tensor> infos;
        for (int64_t d = 0; d < k.size(0); ++d) {
          auto [ld, id] = at::linalg_cholesky_ex(k.select(0, d));
          l.select(0, d).copy_(ld);
          infos.push_back(id);
        }
        info = at::stack(infos);
      }
    } else {
      std::tie(l, info) = at::linalg_cholesky_ex(k);
    }
    k.reset();
    r = l.flip({1, 2});  // R = J L J
  }
  if (info.max().item<int64_t>() != 0) {  // the one host sync of the factorization
    return absl::InvalidArgumentError(
        "GPTQ: a damped Hessian is not positive definite (raise damp)");
  }
  at::Tensor neg_dinv = r.diagonal(0, 1, 2).reciprocal().neg_();  // [D, n]: -1 / R_jj
  r.mul_(neg_dinv.unsqueeze(1));  // column j times -1 / R_jj
  r.diagonal(0, 1, 2).fill_(1.0);
  return r;
}

// R^-1 for a batch of upper triangular R [D, b, b] (only the upper triangle read):
// [[R1, R2], [0, R3]]^-1 = [[R1^-1, -R1^-1 R2 R3^-1], [0, R3^-1]], halving down to `leaf`
// columns, where a triangular solve against I gives the inverse. Contiguous result.
at::Tensor UpperInverse(const at::Tensor& r, int64_t leaf) {
  const int64_t d = r.size(0), b = r.size(1);
  if (b <= leaf) {
    at::Tensor eye = at::eye(b, r.options()).expand({d, b, b});
    return at::linalg_solve_triangular(r, eye, /*upper=*/true);
  }
  const int64_t h = b / 2;
  at::Tensor out = at::zeros({d, b, b}, r.options());
  at::Tensor i1 = UpperInverse(r.narrow(1, 0, h).narrow(2, 0, h), leaf);
  at::Tensor i3 = UpperInverse(r.narrow(1, h, b - h).narrow(2, h, b - h), leaf);
  out.narrow(1, 0, h).narrow(2, 0, h).copy_(i1);
  out.narrow(1, h, b - h).narrow(2, h, b - h).copy_(i3);
  out.narrow(1, 0, h).narrow(2, h, b - h).copy_(
      at::bmm(at::bmm(i1, r.narrow(1, 0, h).narrow(2, h, b - h)), i3).neg_());
  return out;
}

}  // namespace

at::Tensor ReversedCholeskyBlocked(const at::Tensor& a, int64_t block, int64_t leaf) {
  const int64_t d = a.size(0), n = a.size(1);
  at::Tensor info = at::zeros({d}, a.options().dtype(at::kInt));
  for (int64_t j1 = n; j1 > 0;) {
    const int64_t j0 = std::max<int64_t>(0, j1 - block), b = j1 - j0;
    // A = [[A11, A12], [A12^T, A22]] with A22 the b x b corner: A22 = R22 R22^T,
    // A12 = R12 R22^T, and A11 - R12 R12^T is what is left to factor.
    at::Tensor a22 = a.narrow(1, j0, b).narrow(2, j0, b);
    if (b <= leaf) {  // R22 = J chol(J A22 J) J; cuSOLVER reads the flipped lower = A22's upper
      auto [l, leaf_info] = at::linalg_cholesky_ex(a22.flip({1, 2}));
      a22.copy_(l.flip({1, 2}));
      info.add_(leaf_info.ne(0));
    } else {
      info.add_(ReversedCholeskyBlocked(a22, std::max(leaf, block / 4), leaf).ne(0));
    }
    if (j0 > 0) {
      at::Tensor a12 = a.narrow(1, 0, j0).narrow(2, j0, b);  // [D, j0, b]
      at::Tensor r12 = at::bmm(a12, UpperInverse(a22, leaf).transpose(1, 2));  // A12 R22^-T
      a12.copy_(r12);
      a.narrow(1, j0, b).narrow(2, 0, j0).zero_();
      // The upper triangle of A11 -= R12 R12^T, a column panel at a time (rows down to the
      // panel's diagonal tile, which is computed whole).
      for (int64_t c0 = 0; c0 < j0; c0 += block) {
        const int64_t c1 = std::min(c0 + block, j0);
        a.narrow(1, 0, c1).narrow(2, c0, c1 - c0).baddbmm_(
            r12.narrow(1, 0, c1), r12.narrow(1, c0, c1 - c0).transpose(1, 2), 1.0, -1.0);
      }
    }
    j1 = j0;
  }
  return info;
}

void ComputeGroupParamsMse(const at::Tensor& w_group, const QuantScheme& scheme,
                           const GptqOptions& options, at::Tensor* scale, at::Tensor* zero) {
  ComputeGroupParams(w_group, scheme, scale, zero);
  if (!options.mse_scale_search) return;
  const int maxq = (1 << scheme.bits) - 1;
  const bool sym = scheme.grid == Grid::kSymmetric;
  // The same clipped range as ComputeGroupParams, before shrinking.
  at::Tensor xmin, xmax;
  GroupRange(w_group, scheme, &xmin, &xmax);

  at::Tensor best = at::full_like(xmin, std::numeric_limits<float>::infinity());
  at::Tensor best_scale = scale->clone();
  at::Tensor best_zero = zero->to(at::kFloat);
  const int steps = static_cast<int>(options.mse_max_shrink * options.mse_grid);
  for (int i = 0; i < steps; ++i) {
    const double p = 1.0 - static_cast<double>(i) / options.mse_grid;
    at::Tensor xmin1 = xmin * p;
    at::Tensor xmax1 = xmax * p;
    at::Tensor scale1_fp32 = (xmax1 - xmin1) / at::full_like(xmax1, static_cast<double>(maxq));
    at::Tensor scale1 = scale1_fp32.to(at::kBFloat16).to(at::kFloat);
    at::Tensor zero1 = sym ? at::full_like(xmin1, (maxq + 1) / 2)
                           : at::round(-xmin1 / (kZeroFromFp32Scale ? scale1_fp32 : scale1));
    auto error = [&](const at::Tensor& s) {
      return (Fake(w_group, s.unsqueeze(1), zero1.unsqueeze(1), maxq) - w_group)
          .abs_()
          .pow_(options.mse_norm)
          .sum(1);
    };
    // The reference quantizer also tries the negated scale: it mirrors the grid, which moves
    // the extra level of a two's-complement grid ({-4..3} at 3 bits) to the other side.
    at::Tensor e_pos = error(scale1);
    at::Tensor e_neg = error(-scale1);
    at::Tensor use_neg = e_neg < e_pos;
    at::Tensor err = at::where(use_neg, e_neg, e_pos);
    at::Tensor chosen = at::where(use_neg, -scale1, scale1);
    at::Tensor better = err < best;
    best = at::where(better, err, best);
    best_scale = at::where(better, chosen, best_scale);
    best_zero = at::where(better, zero1, best_zero);
  }
  *scale = best_scale;
  *zero = best_zero.to(at::kInt);
}

absl::StatusOr<QuantizedWeight> GptqQuantizer::Quantize(const at::Tensor& weight,
                                                        const QuantScheme& scheme,
                                                        const UnitContext& context) const {
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError("GPTQ expects a 2-D weight [out, in]");
  }
  ASSIGN_OR_RETURN(std::vector<QuantizedWeight> q,
                   QuantizeBatch({weight}, {context.hessian}, scheme));
  return std::move(q[0]);
}

absl::StatusOr<std::vector<QuantizedWeight>> GptqQuantizer::QuantizeBatch(
    const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& hessians,
    const QuantScheme& scheme) const {
  RETURN_IF_ERROR(ValidateScheme(scheme));
  if (weights.empty() || hessians.size() != weights.size()) {
    return absl::InvalidArgumentError("GPTQ: one Hessian (or undefined) per weight");
  }
  if (options_.act_order && weights.size() > 1) {
    // Act-order permutes each member's columns differently: run members one at a time.
    std::vector<QuantizedWeight> out;
    for (size_t m = 0; m < weights.size(); ++m) {
      ASSIGN_OR_RETURN(std::vector<QuantizedWeight> one,
                       QuantizeBatch({weights[m]}, {hessians[m]}, scheme));
      out.push_back(std::move(one[0]));
    }
    return out;
  }
  const int64_t batch = static_cast<int64_t>(weights.size());
  const int64_t rows = weights[0].size(0);
  const int64_t cols = weights[0].size(1);
  std::vector<at::Tensor> ws, hs;
  for (size_t m = 0; m < weights.size(); ++m) {
    if (weights[m].dim() != 2 || weights[m].size(0) != rows || weights[m].size(1) != cols) {
      return absl::InvalidArgumentError("GPTQ: batched weights must share one 2-D shape");
    }
    ws.push_back(weights[m].to(at::kFloat));
    const at::Tensor& h = hessians[m];
    if (h.defined() && (h.dim() != 2 || h.size(0) != cols || h.size(1) != cols)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GPTQ: Hessian is not [", cols, ", ", cols, "]"));
    }
    hs.push_back(h.defined() ? h.to(weights[m].device(), at::kFloat)
                             : at::eye(cols, weights[m].options().dtype(at::kFloat)));
  }
  const bool cuda = ws[0].is_cuda();
  // On the GPU, members that share one Hessian tensor (gate and up of an expert) share its
  // factorization: h holds the distinct Hessians. When each is shared by the same number k of
  // members, those members' rows are stacked into one [k rows, cols] member (no per-member copy
  // of the factor; longer GEMMs); otherwise member m uses h[of[m]]. (The CPU path keeps one per
  // member, so its bytes stay as they were.)
  at::Tensor of;  // [B] indices into h, or undefined: h[m] for member m
  std::vector<std::vector<int64_t>> members_of;  // stacked: members of each distinct Hessian
  if (cuda) {
    std::vector<at::Tensor> distinct;
    std::vector<int64_t> index;
    for (const at::Tensor& hm : hs) {
      int64_t j = 0;
      while (j < static_cast<int64_t>(distinct.size()) && !distinct[j].is_same(hm)) ++j;
      if (j == static_cast<int64_t>(distinct.size())) {
        distinct.push_back(hm);
        members_of.emplace_back();
      }
      index.push_back(j);
      members_of[j].push_back(static_cast<int64_t>(index.size()) - 1);
    }
    bool equal = true;
    for (const auto& ms : members_of) equal = equal && ms.size() == members_of[0].size();
    if (distinct.size() < hs.size()) {
      hs = distinct;
      if (!equal) of = at::tensor(index, at::kLong).to(ws[0].device());
    }
    if (!equal) members_of.clear();
  }
  at::Tensor w;  // [B, rows, cols], or stacked [D, k rows, cols]
  if (!members_of.empty()) {  // one copy of each member into its place
    const int64_t k = static_cast<int64_t>(members_of[0].size());
    w = at::empty({static_cast<int64_t>(members_of.size()), k * rows, cols}, ws[0].options());
    for (size_t d = 0; d < members_of.size(); ++d) {
      for (int64_t t = 0; t < k; ++t) {
        w.select(0, static_cast<int64_t>(d)).narrow(0, t * rows, rows).copy_(ws[members_of[d][t]]);
      }
    }
  } else {
    w = at::stack(ws, 0).contiguous();
  }
  ws.clear();
  const int64_t nb = w.size(0), nr = w.size(1);  // the members and rows computed on
  auto per_member = [&](const at::Tensor& t) { return of.defined() ? t.index_select(0, of) : t; };
  at::Tensor h = at::stack(hs, 0).contiguous();  // [B or distinct, cols, cols]
  const int maxq = (1 << scheme.bits) - 1;
  const int group = EffectiveGroupSize(scheme, cols);
  const int64_t groups = cols / group;

  // Dead inputs (never active) carry no information: H_ii = 1, w = 0 (reference convention).
  {
    at::Tensor diag = h.diagonal(0, 1, 2);
    at::Tensor dead = diag == 0;
    diag.masked_fill_(dead, 1.0);
    w.masked_fill_(per_member(dead).unsqueeze(1), 0.0);
  }

  at::Tensor scales = at::empty({nb, nr, groups}, w.options());
  at::Tensor zero_f = at::empty({nb, nr, groups}, w.options());
  at::Tensor codes = at::empty({nb, nr, cols}, w.options().dtype(at::kByte));
  auto group_params = [&](const at::Tensor& span, int64_t g) {
    at::Tensor s, z;
    ComputeGroupParamsMse(span.reshape({nb * nr, span.size(2)}), scheme, options_, &s, &z);
    scales.select(2, g).copy_(s.view({nb, nr}));
    zero_f.select(2, g).copy_(z.view({nb, nr}));
  };

  // Static groups (needed with act-order): parameters from the original weight per group.
  const bool static_groups = options_.act_order;
  if (static_groups) {
    for (int64_t g = 0; g < groups; ++g) group_params(w.narrow(2, g * group, group), g);
  }
  std::vector<int64_t> perm_host;
  if (options_.act_order) {  // batch == 1 here
    at::Tensor perm = std::get<1>(h[0].diagonal().sort(/*stable=*/true, 0, /*descending=*/true));
    w = w.index_select(2, perm);
    h = h.index_select(1, perm).index_select(2, perm);
    at::Tensor p = perm.cpu().contiguous();
    perm_host.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + cols);
  }

  at::Tensor damp = options_.damp * h.diagonal(0, 1, 2).mean(1, /*keepdim=*/true);  // [B, 1]
  h.diagonal(0, 1, 2).add_(damp);
  // The upper-triangular update matrix: row i holds the coefficients for column i onward. The
  // reference's U = chol(H^-1) (Cholesky, inverse, Cholesky), or on the GPU by default V from one
  // Cholesky (UpdateMatrixOneCholesky).
  at::Tensor hinv;
  at::Tensor w_orig;  // one-Cholesky form: W before any update (the errors are W - Q)
  if (cuda && options_.cuda_one_cholesky) {
    w_orig = w.clone();
    ASSIGN_OR_RETURN(hinv, UpdateMatrixOneCholesky(std::move(h), options_));
  } else {
    at::Tensor l = at::linalg_cholesky(h);
    if (cuda) {  // the inverse from the factor directly (potri: a third of the solve's FLOPs)
      hinv = at::linalg_cholesky(at::cholesky_inverse(l), /*upper=*/true);
    } else {
      at::Tensor eye = at::eye(cols, h.options()).expand({h.size(0), cols, cols});
      hinv = at::linalg_cholesky(at::cholesky_solve(eye, l), /*upper=*/true);
    }
  }

  // Spans of `outer` columns: inside one, each block's trailing update stops at the span's end;
  // the span's scaled errors then update the rest of W in one deeper GEMM. The CPU path (and
  // cuda_outer_block 0) has one span: the reference's order. A group must not cross a span's end
  // (its parameters read W at its first column, which must hold every earlier column's update).
  int64_t outer = cols;
  if (cuda && options_.cuda_outer_block > 0) {
    outer = std::max<int64_t>(1, options_.cuda_outer_block / options_.block_size) *
            options_.block_size;
    if (outer % group != 0) outer = cols;
  }
  at::Tensor group_of_col, orig_cols;  // CUDA: per (permuted) column, on the GPU
  if (cuda) {
    std::vector<int32_t> goc(cols);
    for (int64_t c = 0; c < cols; ++c) {
      goc[c] = static_cast<int32_t>((perm_host.empty() ? c : perm_host[c]) / group);
    }
    group_of_col = at::tensor(at::ArrayRef<int32_t>(goc), at::kInt).to(w.device());
    if (!perm_host.empty()) {
      orig_cols = at::tensor(at::ArrayRef<int64_t>(perm_host), at::kLong).to(w.device());
    }
  }
  for (int64_t o1 = 0; o1 < cols; o1 += outer) {
    const int64_t o2 = std::min(o1 + outer, cols);
    const bool spans = o2 < cols;
    at::Tensor err_span = spans ? at::empty({nb, nr, o2 - o1}, w.options()) : at::Tensor();
    for (int64_t i1 = o1; i1 < o2; i1 += options_.block_size) {
      const int64_t i2 = std::min<int64_t>(i1 + options_.block_size, o2);
      const int64_t count = i2 - i1;
      // On the GPU the kernel works on W's block in place (its columns are not read again) and
      // writes its errors straight into the span's; the CPU path works on copies.
      at::Tensor w1, err1;
      if (cuda) {
        w1 = w.narrow(2, i1, count);
        err1 = spans ? err_span.narrow(2, i1 - o1, count) : at::empty({nb, nr, count}, w.options());
      } else {
        w1 = w.narrow(2, i1, count).clone();
        err1 = at::zeros_like(w1);
      }
      const at::Tensor slab = per_member(hinv.narrow(1, i1, count));  // [B, count, cols]
      at::Tensor hinv1 = slab.narrow(2, i1, count);
      if (cuda) {
        at::Tensor w0;  // the block's weights before any update (one-Cholesky form)
        if (w_orig.defined()) w0 = w_orig.narrow(2, i1, count);
        RETURN_IF_ERROR(BlockCuda(w, w0, w1, err1, hinv1, scales, zero_f, codes, group_params,
                                  group_of_col, orig_cols, static_groups, i1, group, maxq));
      } else {
        for (int64_t i = 0; i < count; ++i) {
          const int64_t col = i1 + i;
          const int64_t orig_col = options_.act_order ? perm_host[col] : col;
          const int64_t g = orig_col / group;
          if (!static_groups && col % group == 0) {
            // Dynamic groups read W, which holds the state at the start of this block for the
            // block's own columns (in-block updates live in w1 until the block ends), as the
            // reference does.
            group_params(w.narrow(2, col, std::min<int64_t>(group, cols - col)), g);
          }
          at::Tensor s = scales.select(2, g);  // [B, rows]
          at::Tensor z = zero_f.select(2, g);
          at::Tensor wc = w1.select(2, i);
          at::Tensor q = at::clamp(at::round(wc / s) + z, 0, maxq);
          codes.select(2, orig_col).copy_(q);
          at::Tensor d = hinv1.select(1, i).select(1, i).unsqueeze(1);  // [B, 1]
          at::Tensor e = (wc - s * (q - z)) / d;
          at::Tensor row = hinv1.select(1, i).narrow(1, i, count - i);  // [B, count - i]
          w1.narrow(2, i, count - i).sub_(e.unsqueeze(2) * row.unsqueeze(1));
          err1.select(2, i).copy_(e);
        }
      }
      if (i2 < o2) {
        if (cuda) {  // in place: no product tensor, one pass over W's span
          w.narrow(2, i2, o2 - i2).baddbmm_(err1, slab.narrow(2, i2, o2 - i2), 1.0, -1.0);
        } else {
          w.narrow(2, i2, cols - i2).sub_(at::bmm(err1, slab.narrow(2, i2, cols - i2)));
        }
      }
      if (spans && !cuda) err_span.narrow(2, i1 - o1, count).copy_(err1);
    }
    if (spans) {
      const at::Tensor span_rows = per_member(hinv.narrow(1, o1, o2 - o1));  // [B, span, cols]
      w.narrow(2, o2, cols - o2).baddbmm_(err_span, span_rows.narrow(2, o2, cols - o2), 1.0, -1.0);
    }
  }
  std::vector<QuantizedWeight> out(batch);
  at::Tensor zeros = zero_f.to(at::kInt);
  auto emit = [&](int64_t m, int64_t b, int64_t r0) {
    QuantizedWeight& q = out[m];
    q.scheme = scheme;
    q.group_size = group;
    q.codes = codes[b].narrow(0, r0, rows).clone();
    q.scales = scales[b].narrow(0, r0, rows).clone();
    q.zeros = zeros[b].narrow(0, r0, rows).clone();
  };
  if (!members_of.empty()) {
    for (size_t d = 0; d < members_of.size(); ++d) {
      for (size_t t = 0; t < members_of[d].size(); ++t) {
        emit(members_of[d][t], static_cast<int64_t>(d), static_cast<int64_t>(t) * rows);
      }
    }
  } else {
    for (int64_t m = 0; m < batch; ++m) emit(m, m, 0);
  }
  return out;
}

}  // namespace quant::quant
