// Calibration statistics captured during a forward pass (DESIGN.md section 4, phase 1): per
// linear (and per expert) H = 2 X^T X / n in float32 and the number of tokens that reached it.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "worker/model/model.h"

namespace quant::model {

struct HessianStats {
  at::Tensor xtx;       // float32 [in, in], running sum of X^T X
  int64_t tokens = 0;   // rows of X seen
  // H = 2 X^T X / n; identity when no token was seen (the caller reports the fallback).
  at::Tensor Hessian() const;
};

// Accumulates X^T X per linear of the layers it is attached to. Linears that share an input
// (gate/up, q_a/kv_a) are accumulated once and shared.
class HessianCollector : public ForwardObserver {
 public:
  void OnLinearInput(int layer, const std::string& linear, const at::Tensor& x) override;
  // Key: "model.layers.{layer}.{linear}" (the weight name without ".weight").
  const std::map<std::string, HessianStats>& stats() const { return stats_; }
  void Clear() { stats_.clear(); }
  // Puts back statistics saved by another process (quant-worker's task handoff).
  void Restore(const std::string& key, HessianStats stats) { stats_[key] = std::move(stats); }

 private:
  std::map<std::string, HessianStats> stats_;
  // The last input and its X^T X: gate/up (and q_a/kv_a) get the very same tensor object.
  at::Tensor last_x_;
  at::Tensor last_xtx_;
};

}  // namespace quant::model
