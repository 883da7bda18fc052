// HessianCollector: float32 X^T X sums per linear, shared between linears fed the same input.
#include "worker/model/calibration.h"

#include "absl/strings/str_cat.h"

namespace quant::model {

at::Tensor HessianStats::Hessian() const {
  if (tokens == 0) return at::eye(xtx.size(0), xtx.options());
  return xtx * (2.0 / static_cast<double>(tokens));
}

void HessianCollector::OnLinearInput(int layer, const std::string& linear, const at::Tensor& x) {
  const std::string key = absl::StrCat("model.layers.", layer, ".", linear);
  HessianStats& s = stats_[key];
  if (!s.xtx.defined()) {
    s.xtx = at::zeros({x.size(-1), x.size(-1)}, x.options().dtype(at::kFloat));
  }
  if (x.numel() == 0) return;
  if (!last_x_.defined() || !last_x_.is_same(x)) {
    at::Tensor xf = x.to(at::kFloat).reshape({-1, x.size(-1)});
    last_x_ = x;
    last_xtx_ = at::matmul(xf.t(), xf);
  }
  s.xtx.add_(last_xtx_);
  s.tokens += x.numel() / x.size(-1);
}

}  // namespace quant::model
