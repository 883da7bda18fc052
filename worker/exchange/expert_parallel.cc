#include "worker/exchange/expert_parallel.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace quant::exchange {
namespace {

// Message layout, source -> owner: int64 has_batch, int64 width, int64 count per owned expert,
// then each expert's rows (float32 [count, width]) in expert order. Owner -> source: the
// experts' output rows in the same order.
void Append(std::string* out, const void* p, size_t n) {
  out->append(static_cast<const char*>(p), n);
}

void AppendRows(std::string* out, const at::Tensor& t) {
  const at::Tensor c = t.to(at::kFloat).contiguous();
  Append(out, c.data_ptr(), c.nbytes());
}

}  // namespace

std::pair<int, int> OwnedExperts(int rank, int size, int num_experts) {
  return {static_cast<int>(int64_t{num_experts} * rank / size),
          static_cast<int>(int64_t{num_experts} * (rank + 1) / size)};
}

ExpertParallelRunner::ExpertParallelRunner(Exchange* exchange, int num_experts)
    : exchange_(exchange), num_experts_(num_experts) {}

std::vector<std::string> ExpertParallelRunner::Serve(const model::Model& model,
                                                     const model::LayerWeights& w,
                                                     const std::vector<std::string>& received,
                                                     model::ForwardObserver* obs) {
  const auto [first, last] = OwnedExperts(exchange_->rank(), exchange_->size(), num_experts_);
  std::vector<std::string> replies(received.size());
  // Sources in rank order: their batches in the order one process forwards them.
  for (size_t s = 0; s < received.size(); ++s) {
    const std::string& m = received[s];
    const size_t header = sizeof(int64_t) * (2 + (last - first));
    if (m.size() < sizeof(int64_t) * 2) {
      if (status_.ok()) status_ = absl::DataLossError("expert exchange: short message");
      continue;
    }
    int64_t head[2];
    std::memcpy(head, m.data(), sizeof(head));
    if (head[0] == 0) continue;  // that source had no batch this step
    const int64_t width = head[1];
    std::vector<int64_t> count(last - first);
    if (m.size() < header) {
      if (status_.ok()) status_ = absl::DataLossError("expert exchange: short header");
      continue;
    }
    std::memcpy(count.data(), m.data() + 2 * sizeof(int64_t), count.size() * sizeof(int64_t));
    size_t pos = header;
    for (int e = first; e < last; ++e) {
      const int64_t rows = count[e - first];
      const size_t bytes = static_cast<size_t>(rows * width) * sizeof(float);
      if (pos + bytes > m.size()) {
        if (status_.ok()) status_ = absl::DataLossError("expert exchange: rows past the message");
        break;
      }
      at::Tensor xe = at::empty({rows, width}, at::kFloat);
      if (bytes > 0) std::memcpy(xe.data_ptr(), m.data() + pos, bytes);
      pos += bytes;
      xe = xe.to(model.device(), model.scalar_type());
      at::Tensor ye = model.ExpertMlp(w, e, xe, obs);
      tokens_served_[e] += rows;
      AppendRows(&replies[s], ye.cpu());
    }
  }
  return replies;
}

at::Tensor ExpertParallelRunner::Run(const model::Model& model, const model::LayerWeights& w,
                                     const at::Tensor& x, const at::Tensor& topk_weights,
                                     const at::Tensor& order, const at::Tensor& counts,
                                     model::ForwardObserver* obs) {
  const int ranks = exchange_->size();
  const int64_t k = topk_weights.size(1);
  const int64_t width = x.size(1);
  const int64_t* count = counts.data_ptr<int64_t>();
  std::vector<int64_t> start(num_experts_ + 1, 0);
  for (int e = 0; e < num_experts_; ++e) start[e + 1] = start[e] + count[e];
  const at::Tensor x_host = x.cpu();
  const at::Tensor order_host = order.cpu();
  std::vector<std::string> send(ranks);
  for (int d = 0; d < ranks; ++d) {
    const auto [first, last] = OwnedExperts(d, ranks, num_experts_);
    const int64_t head[2] = {1, width};
    Append(&send[d], head, sizeof(head));
    Append(&send[d], count + first, sizeof(int64_t) * (last - first));
    for (int e = first; e < last; ++e) {
      at::Tensor token_idx = at::floor_divide(order_host.narrow(0, start[e], count[e]), k);
      AppendRows(&send[d], x_host.index_select(0, token_idx));
    }
  }
  at::Tensor out = at::zeros_like(x);
  auto received = exchange_->AllToAll(send);
  if (!received.ok()) {
    if (status_.ok()) status_ = received.status();
    return out;
  }
  auto back = exchange_->AllToAll(Serve(model, w, *received, obs));
  if (!back.ok()) {
    if (status_.ok()) status_ = back.status();
    return out;
  }
  // Combine in expert order, exactly as the in-process loop does.
  std::vector<size_t> pos(ranks, 0);
  for (int e = 0; e < num_experts_; ++e) {
    int d = 0;
    while (OwnedExperts(d, ranks, num_experts_).second <= e) ++d;
    const int64_t m = count[e];
    const size_t bytes = static_cast<size_t>(m * width) * sizeof(float);
    if (pos[d] + bytes > (*back)[d].size()) {
      if (status_.ok()) status_ = absl::DataLossError("expert exchange: short reply");
      return out;
    }
    at::Tensor ye = at::empty({m, width}, at::kFloat);
    if (bytes > 0) std::memcpy(ye.data_ptr(), (*back)[d].data() + pos[d], bytes);
    pos[d] += bytes;
    if (m == 0) continue;
    at::Tensor slots = order.narrow(0, start[e], m);
    at::Tensor token_idx = at::floor_divide(slots, k);
    at::Tensor weight = topk_weights.reshape({-1}).index_select(0, slots).unsqueeze(-1);
    ye = ye.to(x.device(), x.scalar_type());
    out.index_add_(0, token_idx, (ye * weight).to(out.scalar_type()));
  }
  return out;
}

absl::Status ExpertParallelRunner::Idle(const model::Model& model, const model::LayerWeights& w,
                                        model::ForwardObserver* obs) {
  const int64_t head[2] = {0, 0};
  std::vector<std::string> send(exchange_->size(),
                                std::string(reinterpret_cast<const char*>(head), sizeof(head)));
  auto received = exchange_->AllToAll(send);
  if (!received.ok()) return status_ = received.status();
  auto back = exchange_->AllToAll(Serve(model, w, *received, obs));
  if (!back.ok()) return status_ = back.status();
  return status_;
}

}  // namespace quant::exchange
