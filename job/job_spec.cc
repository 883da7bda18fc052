#include "job/job_spec.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "storage/beneath.h"

namespace quant::tasks {
namespace {

constexpr int kMinBits = 2, kMaxBits = 8;

using json = nlohmann::json;

// How a field is named in messages: its JSON key for the service, its flag for qctl.
const std::map<std::string, std::string>& Flags() {
  static const auto* m = new std::map<std::string, std::string>{
      {"model", "--model"}, {"out", "--out"}, {"method", "--method"}, {"bits", "--bits"},
      {"grid", "--grid"}, {"group_size", "--group"}, {"scope", "--scope"},
      {"objective", "--objective"}, {"export", "--export"}, {"calib_inputs", "--calib-inputs"},
      {"device", "--device"}, {"steps", "--steps"}, {"window_tokens", "--seq-len"},
      {"calib_samples", "--calib-samples"},
      {"calib_tokens", "--calib-tokens"}, {"batch_windows", "--batch"}, {"damp", "--damp"},
      {"threads", "--threads"}, {"per_expert_bits", "--per-expert-bits"}, {"slq", "--slq"},
      {"expert_aggregation", "--expert-aggregation"},
      {"slq_bits", "--slq-bits"}, {"target_ear", "--target-ear"}, {"slq_budget", "--bits"},
      {"probe_windows", "--probe-windows"}, {"expert_shards", "--expert-shards"},
      {"calib", "--calib"}, {"eval_text", "--eval-text"}, {"slq_allocation", "--slq-allocation"},
      {"probe_cache_dir", "--probe-cache"}};
  return *m;
}

struct Namer {
  bool flags = false;
  std::string Name(const std::string& key) const {
    if (flags) {
      auto it = Flags().find(key);
      if (it != Flags().end()) return it->second;
    }
    return absl::StrCat("\"", key, "\"");
  }
  absl::Status Bad(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(flags ? "" : "job spec: ", Name(key), ": ", what));
  }
};

// Parsing always names JSON keys.
absl::Status Bad(const std::string& key, const std::string& what) {
  return Namer{}.Bad(key, what);
}

template <typename T>
absl::Status Take(const json& v, const std::string& key, T* out);

template <>
absl::Status Take(const json& v, const std::string& key, std::string* out) {
  if (!v.is_string()) return Bad(key, "must be a string");
  *out = v.get<std::string>();
  if (out->size() > 4096) return Bad(key, "is longer than 4096 bytes");
  return absl::OkStatus();
}

template <>
absl::Status Take(const json& v, const std::string& key, bool* out) {
  if (!v.is_boolean()) return Bad(key, "must be true or false");
  *out = v.get<bool>();
  return absl::OkStatus();
}

template <>
absl::Status Take(const json& v, const std::string& key, int64_t* out) {
  if (!v.is_number_integer()) return Bad(key, "must be an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return Bad(key, "is out of range");
  }
  *out = v.get<int64_t>();
  return absl::OkStatus();
}

template <>
absl::Status Take(const json& v, const std::string& key, int* out) {
  int64_t x = 0;
  RETURN_IF_ERROR(Take(v, key, &x));
  if (x < INT32_MIN || x > INT32_MAX) return Bad(key, "is out of range");
  *out = static_cast<int>(x);
  return absl::OkStatus();
}

template <>
absl::Status Take(const json& v, const std::string& key, uint64_t* out) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    return Bad(key, "must be a non-negative integer");
  }
  *out = v.get<uint64_t>();
  return absl::OkStatus();
}

template <>
absl::Status Take(const json& v, const std::string& key, double* out) {
  if (!v.is_number()) return Bad(key, "must be a number");
  *out = v.get<double>();
  if (!std::isfinite(*out)) return Bad(key, "must be finite");
  return absl::OkStatus();
}

template <>
absl::Status Take(const json& v, const std::string& key, std::vector<int>* out) {
  if (!v.is_array() || v.size() > 16) return Bad(key, "must be a list of at most 16 integers");
  out->clear();
  for (const json& e : v) {
    int x = 0;
    RETURN_IF_ERROR(Take(e, key, &x));
    out->push_back(x);
  }
  return absl::OkStatus();
}

// `text` as one of E's names (job_enums.h), or "<field>: 'text' is not one of a, b".
template <typename E>
absl::Status Choose(const Namer& n, const std::string& key, const std::string& text, E* out) {
  const std::optional<E> e = EnumFromName<E>(text);
  if (!e) {
    return n.Bad(key, absl::StrCat("'", text.substr(0, 64), "' is not one of ", EnumNameList<E>()));
  }
  *out = *e;
  return absl::OkStatus();
}

// A JSON string naming one of E's values.
template <typename E>
absl::Status TakeChoice(const json& v, const std::string& key, E* out) {
  std::string text;
  RETURN_IF_ERROR(Take(v, key, &text));
  return Choose(Namer{}, key, text, out);
}

}  // namespace

nlohmann::json QuantizeJobSpec::ToJson() const {
  return {{"model", model_dir},       {"method", NameOf(method)},
          {"bits", bits},             {"grid", NameOf(grid)},
          {"group_size", group_size}, {"channel_fallback", channel_fallback},
          {"scope", NameOf(scope)},   {"calib", calib_path},
          {"calib_tokens", calib_tokens}, {"window_tokens", window_tokens},
          {"calib_samples", calib_samples},
          {"steps", steps},           {"objective", NameOf(objective)},
          {"export", NameOf(export_format)}, {"seed", seed},
          {"damp", damp},             {"act_order", act_order},
          {"mse_scale_search", mse_scale_search}, {"batch_windows", batch_windows},
          {"calib_inputs", NameOf(calib_inputs)}, {"device", NameOf(device)}, {"slq", slq},
          {"slq_budget", slq_budget}, {"target_ear", target_ear},
          {"slq_bits", slq_bits}, {"probe_windows", probe_windows},
          {"slq_allocation", slq_allocation}, {"per_expert_bits", per_expert_bits},
          {"expert_aggregation", expert_aggregation}};
}

nlohmann::json ServiceJson(const QuantizeJobSpec& spec) {
  nlohmann::json j = spec.ToJson();
  j["out"] = spec.out_dir;
  j["eval_text"] = spec.eval_text;
  j["evaluate"] = spec.evaluate;
  j["threads"] = spec.threads;
  j["expert_shards"] = spec.expert_shards;
  return j;
}

absl::StatusOr<QuantizeJobSpec> SpecFromJson(std::string_view text) {
  if (text.size() > kMaxJobSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("job spec: ", text.size(), " bytes, more than ", kMaxJobSpecBytes));
  }
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("job spec: not a JSON object");
  }
  QuantizeJobSpec s;
  s.overwrite = false;
  const std::map<std::string, std::function<absl::Status(const json&, const std::string&)>>
      fields = {
          {"model", [&](const json& v, const std::string& k) { return Take(v, k, &s.model_dir); }},
          {"out", [&](const json& v, const std::string& k) { return Take(v, k, &s.out_dir); }},
          {"method", [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.method); }},
          {"bits", [&](const json& v, const std::string& k) { return Take(v, k, &s.bits); }},
          {"grid", [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.grid); }},
          {"group_size", [&](const json& v, const std::string& k) { return Take(v, k, &s.group_size); }},
          {"channel_fallback",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.channel_fallback); }},
          {"scope", [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.scope); }},
          {"calib", [&](const json& v, const std::string& k) { return Take(v, k, &s.calib_path); }},
          {"calib_tokens",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.calib_tokens); }},
          {"window_tokens",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.window_tokens); }},
          {"calib_samples",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.calib_samples); }},
          {"steps", [&](const json& v, const std::string& k) { return Take(v, k, &s.steps); }},
          {"objective", [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.objective); }},
          {"export", [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.export_format); }},
          {"seed", [&](const json& v, const std::string& k) { return Take(v, k, &s.seed); }},
          {"damp", [&](const json& v, const std::string& k) { return Take(v, k, &s.damp); }},
          {"act_order", [&](const json& v, const std::string& k) { return Take(v, k, &s.act_order); }},
          {"mse_scale_search",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.mse_scale_search); }},
          {"batch_windows",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.batch_windows); }},
          {"calib_inputs",
           [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.calib_inputs); }},
          {"device", [&](const json& v, const std::string& k) { return TakeChoice(v, k, &s.device); }},
          {"slq", [&](const json& v, const std::string& k) { return Take(v, k, &s.slq); }},
          {"slq_budget", [&](const json& v, const std::string& k) { return Take(v, k, &s.slq_budget); }},
          {"target_ear", [&](const json& v, const std::string& k) { return Take(v, k, &s.target_ear); }},
          {"slq_bits", [&](const json& v, const std::string& k) { return Take(v, k, &s.slq_bits); }},
          {"probe_windows",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.probe_windows); }},
          {"slq_allocation",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.slq_allocation); }},
          {"per_expert_bits",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.per_expert_bits); }},
          {"expert_aggregation",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.expert_aggregation); }},
          {"eval_text", [&](const json& v, const std::string& k) { return Take(v, k, &s.eval_text); }},
          {"evaluate", [&](const json& v, const std::string& k) { return Take(v, k, &s.evaluate); }},
          {"threads", [&](const json& v, const std::string& k) { return Take(v, k, &s.threads); }},
          {"expert_shards",
           [&](const json& v, const std::string& k) { return Take(v, k, &s.expert_shards); }},
      };
  for (const auto& [key, value] : j.items()) {
    auto it = fields.find(key);
    if (it == fields.end()) return Bad(key.substr(0, 64), "is not a job option");
    RETURN_IF_ERROR(it->second(value, key));
  }
  if (s.model_dir.empty()) return Bad("model", "is required");
  if (s.out_dir.empty()) return Bad("out", "is required");
  RETURN_IF_ERROR(ValidateSpecFields(s, /*name_flags=*/false));
  return s;
}

SpecChoices ChoicesOf(const QuantizeJobSpec& s) {
  return {std::string(NameOf(s.method)),        std::string(NameOf(s.grid)),
          std::string(NameOf(s.scope)),         std::string(NameOf(s.objective)),
          std::string(NameOf(s.export_format)), std::string(NameOf(s.device)),
          std::string(NameOf(s.calib_inputs))};
}

absl::Status ApplyChoices(const SpecChoices& text, QuantizeJobSpec* spec) {
  const Namer n{/*flags=*/true};
  RETURN_IF_ERROR(Choose(n, "method", text.method, &spec->method));
  RETURN_IF_ERROR(Choose(n, "grid", text.grid, &spec->grid));
  RETURN_IF_ERROR(Choose(n, "scope", text.scope, &spec->scope));
  RETURN_IF_ERROR(Choose(n, "objective", text.objective, &spec->objective));
  RETURN_IF_ERROR(Choose(n, "export", text.export_format, &spec->export_format));
  RETURN_IF_ERROR(Choose(n, "device", text.device, &spec->device));
  return Choose(n, "calib_inputs", text.calib_inputs, &spec->calib_inputs);
}

bool HasControlCharacter(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

std::vector<std::pair<std::string, std::string>> SpecPaths(const QuantizeJobSpec& s) {
  return {{"model", s.model_dir},          {"out", s.out_dir},
          {"calib", s.calib_path},         {"eval_text", s.eval_text},
          {"slq_allocation", s.slq_allocation}, {"probe_cache_dir", s.probe_cache_dir}};
}

absl::Status CheckSpecInsideRoots(const QuantizeJobSpec& spec,
                                  const std::vector<std::string>& roots, std::string_view what) {
  if (roots.empty()) return absl::OkStatus();
  for (const auto& [field, path] : SpecPaths(spec)) {
    if (path.empty() || field == "probe_cache_dir" || (field == "eval_text" && !spec.evaluate)) {
      continue;
    }
    if (!storage::ResolvesInside(path, roots)) {
      return absl::PermissionDeniedError(
          absl::StrCat("job spec: \"", field, "\": ", path, " ", std::string(what)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSpecFields(const QuantizeJobSpec& s, bool name_flags) {
  // Messages name fields as the caller's user knows them (flags for qctl, keys for the service).
  const Namer n{name_flags};
  for (const auto& [field, path] : SpecPaths(s)) {
    if (HasControlCharacter(path)) return n.Bad(field, "holds a control character");
  }
  if (s.bits < kMinBits || s.bits > kMaxBits) {
    return n.Bad("bits", absl::StrCat(s.bits, " is outside 2..8"));
  }
  if (s.group_size <= 0 || s.group_size > (1 << 20)) {
    return n.Bad("group_size", absl::StrCat(s.group_size, " is not in 1..1048576"));
  }
  if (s.steps < 0 || s.steps > 1000000) {
    return n.Bad("steps", absl::StrCat(s.steps, " is not in 0..1000000"));
  }
  if (s.window_tokens < 2 || s.window_tokens > (1 << 20)) {
    return n.Bad("window_tokens", "must be in 2..1048576");
  }
  if (s.calib_tokens < s.window_tokens || s.calib_tokens > (int64_t{1} << 40)) {
    return n.Bad("calib_tokens", absl::StrCat(s.calib_tokens, " is less than one window of ",
                                            s.window_tokens, " or absurdly large"));
  }
  if (s.calib_samples < 0 || s.calib_samples > (int64_t{1} << 31)) {
    return n.Bad("calib_samples", absl::StrCat(s.calib_samples, " is not in 0..2147483648"));
  }
  if (s.batch_windows <= 0 || s.batch_windows > 65536) {
    return n.Bad("batch_windows", "must be in 1..65536");
  }
  if (!(s.damp >= 0 && s.damp <= 10)) return n.Bad("damp", "must be in 0..10");
  if (s.threads < 0) return n.Bad("threads", "must be >= 0");
  if (s.expert_shards < 1 || s.expert_shards > 4096) {
    return n.Bad("expert_shards", "must be in 1..4096");
  }
  if (s.expert_shards > 1 && s.scope != quant::Scope::kExperts) {
    return n.Bad("expert_shards", "above 1 needs " + n.Name("scope") +
                                      " experts (the gang does not merge attention Hessians yet)");
  }
  if (s.per_expert_bits && !s.slq) return n.Bad("per_expert_bits", "needs " + n.Name("slq"));
  if (s.per_expert_bits && s.export_format != quant::ExportFormat::kNative) {
    return n.Bad("per_expert_bits", absl::StrCat("needs ", n.Name("export"),
                                               " native: vLLM's fused MoE kernels take one "
                                               "scheme for all experts of a layer"));
  }
  if (!s.expert_aggregation.empty() && s.expert_aggregation != "sum" &&
      s.expert_aggregation != "scale" && s.expert_aggregation != "power") {
    return n.Bad("expert_aggregation",
                 absl::StrCat("\"", s.expert_aggregation.substr(0, 32), "\": expected sum, scale or power"));
  }
  if (!s.expert_aggregation.empty() && !s.per_expert_bits) {
    return n.Bad("expert_aggregation", "needs " + n.Name("per_expert_bits"));
  }
  if (s.slq) {
    if (s.slq_bits.empty()) return n.Bad("slq_bits", "has no candidate bitwidth");
    for (int b : s.slq_bits) {
      if (b < kMinBits || b > kMaxBits) return n.Bad("slq_bits", absl::StrCat(b, " is outside 2..8"));
    }
    const auto [lo, hi] = std::minmax_element(s.slq_bits.begin(), s.slq_bits.end());
    if (s.target_ear > 0) {
      if (!(s.target_ear < 1.0)) {
        return n.Bad("target_ear", absl::StrCat(s.target_ear, " must be in (0, 1)"));
      }
    } else if (!(s.slq_budget >= *lo && s.slq_budget <= *hi)) {
      return n.Bad("slq_budget", absl::StrCat("an SLQ budget of ", s.slq_budget,
                                            " is outside the candidates' ", *lo, "..", *hi));
    }
    if (s.probe_windows <= 0 || s.probe_windows > 65536) {
      return n.Bad("probe_windows", "must be in 1..65536");
    }
  } else if (s.target_ear != 0) {
    return n.Bad("target_ear", "needs " + n.Name("slq"));
  }
  if (s.calib_path.empty()) return n.Bad("calib", "is required (a calibration text)");
  return absl::OkStatus();
}

}  // namespace quant::tasks
