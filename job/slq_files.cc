#include "job/slq_files.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace quant::tasks {

absl::StatusOr<ProbeTable> ParseProbeCache(std::string_view text, const std::string& label) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("probes") || !j["probes"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": not a probe cache (delete it to probe again)"));
  }
  ProbeTable table;
  for (const auto& [unit, by_bits] : j["probes"].items()) {
    if (!by_bits.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(label, ": bad entry for ", unit));
    }
    for (const auto& [bits_text, p] : by_bits.items()) {
      int bits = 0;
      if (!absl::SimpleAtoi(bits_text, &bits) || bits < 1 || bits > 32 || !p.is_object() ||
          !p.contains("kl") || !p.contains("ear_loss") || !p["kl"].is_number() ||
          !p["ear_loss"].is_number() || !std::isfinite(p["kl"].get<double>()) ||
          !std::isfinite(p["ear_loss"].get<double>())) {
        return absl::InvalidArgumentError(
            absl::StrCat(label, ": bad entry for ", unit, " (delete the file to probe again)"));
      }
      table[unit][bits] = {p["kl"].get<double>(), p["ear_loss"].get<double>()};
    }
  }
  return table;
}

std::string SerializeProbeCache(const ProbeTable& table) {
  nlohmann::json probes = nlohmann::json::object();
  for (const auto& [unit, by_bits] : table) {
    for (const auto& [bits, p] : by_bits) {
      probes[unit][std::to_string(bits)] = {{"kl", p.kl}, {"ear_loss", p.ear_loss}};
    }
  }
  return nlohmann::json{{"probes", probes}}.dump(1) + "\n";
}

absl::StatusOr<SlqAllocation> ParseAllocation(std::string_view text, const std::string& label,
                                              const std::vector<SlqUnitTable>& table) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object of unit: bits"));
  }
  SlqAllocation a;
  double bits_sum = 0, params = 0;
  for (const SlqUnitTable& row : table) {
    if (!j.contains(row.unit) || !j[row.unit].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": no integer bitwidth for unit ", row.unit));
    }
    const int64_t bits = j[row.unit].get<int64_t>();
    if (std::find(row.bits.begin(), row.bits.end(), bits) == row.bits.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": ", bits, " bits for ", row.unit, " is not a probed candidate"));
    }
    a.bits.push_back(static_cast<int>(bits));
    bits_sum += static_cast<double>(bits) * static_cast<double>(row.params);
    params += static_cast<double>(row.params);
  }
  if (j.size() != table.size()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": names units this job does not have"));
  }
  a.average_bits = params > 0 ? bits_sum / params : 0;
  return a;
}

double PredictedEarLoss(double sum_of_squared_ear_losses) {
  return kEarMargin * std::sqrt(std::max(0.0, sum_of_squared_ear_losses));
}

}  // namespace quant::tasks
