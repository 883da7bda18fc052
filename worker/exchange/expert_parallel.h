// Expert parallelism over an Exchange: member r of a gang of G holds routed experts
// [E r / G, E (r + 1) / G) (OwnedExperts). Each MoE forward sends every routed token's row to
// its expert's owner, the owner runs its experts (observed there: Hessians and GSQ targets),
// and the outputs come back and are combined in the in-process loop's order, so the result is
// bit for bit what one process computes.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <utility>

#include "absl/status/status.h"
#include "worker/exchange/exchange.h"
#include "worker/model/model.h"

namespace quant::exchange {

// [first, last) of the routed experts that rank `rank` of `size` owns.
std::pair<int, int> OwnedExperts(int rank, int size, int num_experts);

class ExpertParallelRunner : public model::ExpertRunner {
 public:
  ExpertParallelRunner(Exchange* exchange, int num_experts);
  at::Tensor Run(const model::Model& model, const model::LayerWeights& w, const at::Tensor& x,
                 const at::Tensor& topk_weights, const at::Tensor& order,
                 const at::Tensor& counts, model::ForwardObserver* obs) override;
  // A step in which this member has no batch of its own: it still serves its experts.
  absl::Status Idle(const model::Model& model, const model::LayerWeights& w,
                    model::ForwardObserver* obs);
  // The first failure of the exchange (Run cannot return one); the forward's result is invalid
  // after a failure.
  absl::Status status() const { return status_; }
  // Routed (token, expert) rows this member's experts ran, per expert.
  const std::map<int, int64_t>& tokens_served() const { return tokens_served_; }

 private:
  // Runs this member's experts on what each source sent; returns the replies.
  std::vector<std::string> Serve(const model::Model& model, const model::LayerWeights& w,
                                 const std::vector<std::string>& received,
                                 model::ForwardObserver* obs);
  Exchange* exchange_;
  int num_experts_;
  absl::Status status_;
  std::map<int, int64_t> tokens_served_;
};

}  // namespace quant::exchange
