// Tensor-name rules for the quantization scopes; names follow the official Hugging Face
// checkpoints of DeepSeek-V3 / Kimi-K2 and Qwen3-MoE (README, "RTN anchor").
#include "job/scope.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace quant::quant {
namespace {

constexpr std::string_view kWeightSuffix = ".weight";

// Debian's absl 20220623 has its own string_view type, so the std::string_view parts use the
// C++20 standard library rather than absl's string helpers.
std::vector<std::string_view> SplitAtDots(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = text.find('.', start);
    if (dot == std::string_view::npos) {
      parts.push_back(text.substr(start));
      return parts;
    }
    parts.push_back(text.substr(start, dot - start));
    start = dot + 1;
  }
}

bool IsIndex(std::string_view part) {
  if (part.empty()) return false;
  for (char c : part) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// `parts` is the module path (the name without ".weight") split at dots.
// A routed expert's linear: ... mlp . experts . <n> . <linear>
bool IsRoutedExpertLinear(const std::vector<std::string_view>& parts) {
  const size_t n = parts.size();
  return n >= 4 && parts[n - 4] == "mlp" && parts[n - 3] == "experts" && IsIndex(parts[n - 2]);
}

bool IsProjection(std::string_view module) {
  // kv_a_proj_with_mqa is DeepSeek MLA's joint KV-down and rope-key projection.
  return module.ends_with("_proj") || module == "kv_a_proj_with_mqa";
}

bool InAttentionOrMlp(const std::vector<std::string_view>& parts) {
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i] == "self_attn" || parts[i] == "mlp") return true;
  }
  return false;
}

}  // namespace

bool InQuantScope(const std::string& tensor_name, Scope scope) {
  const std::string_view name(tensor_name);
  if (!name.ends_with(kWeightSuffix)) return false;
  const std::string_view path = name.substr(0, name.size() - kWeightSuffix.size());
  const std::vector<std::string_view> parts = SplitAtDots(path);
  if (IsRoutedExpertLinear(parts)) return true;
  if (scope == Scope::kExperts) return false;
  // The router is "mlp.gate": its module name has no "_proj", so it never passes here.
  return IsProjection(parts.back()) && InAttentionOrMlp(parts);
}

absl::StatusOr<Scope> ParseScope(std::string_view text) {
  if (text == "experts") return Scope::kExperts;
  if (text == "all") return Scope::kAll;
  return absl::InvalidArgumentError(absl::StrCat("unknown quantization scope \"", std::string(text),
                                                 "\"; expected \"experts\" or \"all\""));
}

std::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kExperts:
      return "experts";
    case Scope::kAll:
      return "all";
  }
  return "unknown";
}

}  // namespace quant::quant
