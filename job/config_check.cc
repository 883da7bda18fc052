// One pass over the checkpoint's tensor names and shapes, then config.json's counts compared
// with what was found (never a loop over the counts the config claims).
#include "job/config_check.h"

#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace quant::model {
namespace {

constexpr std::string_view kLayers = "model.layers.";
constexpr std::string_view kExperts = "mlp.experts.";
constexpr std::string_view kShared = "mlp.shared_experts.";

// The decimal index at the front of `s` and, in *rest, what follows the '.' after it; nullopt
// unless `s` starts with digits and a '.'.
std::optional<int64_t> TakeIndex(std::string_view s, std::string_view* rest) {
  int64_t value = 0;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, value);
  if (ec != std::errc() || ptr == end || *ptr != '.' || value < 0) return std::nullopt;
  *rest = std::string_view(ptr + 1, static_cast<size_t>(end - ptr - 1));
  return value;
}

// What one layer of the checkpoint holds.
struct LayerTensors {
  std::set<int64_t> experts;
};

// One dimension a tensor must have: the config field that sets it, the size, and how the
// message states the field's value (the size itself unless derived from several fields).
struct Dim {
  const char* field;
  int64_t size;
  std::string stated = "";
};

class Checker {
 public:
  Checker(const ModelConfig& c, const std::string& label) : c_(c), label_(label) {}

  absl::Status FieldError(const char* field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": field '", field, "' ", what));
  }

  // `shape` of tensor `name` against `dims`, naming the first field that disagrees.
  absl::Status Expect(const std::string& name, const std::vector<int64_t>& shape,
                      const std::vector<Dim>& dims) const {
    std::vector<int64_t> want;
    for (const Dim& d : dims) want.push_back(d.size);
    const std::string got = absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
    if (shape.size() != dims.size()) {
      return absl::InvalidArgumentError(absl::StrCat(label_, ": ", name, " has shape ", got,
                                                     ", the config implies [",
                                                     absl::StrJoin(want, ", "), "]"));
    }
    for (size_t i = 0; i < dims.size(); ++i) {
      if (shape[i] == dims[i].size) continue;
      const std::string stated =
          dims[i].stated.empty() ? absl::StrCat(dims[i].size) : dims[i].stated;
      return FieldError(dims[i].field,
                        absl::StrCat("is ", stated, ", but ", name, " has shape ", got));
    }
    return absl::OkStatus();
  }

  // The shape checks of one tensor; `rest` is its name after "model.layers.<i>." (or the whole
  // name outside the layers).
  absl::Status CheckShape(const std::string& name, std::string_view rest, bool in_layer,
                          const std::vector<int64_t>& shape) const {
    const Dim hidden{"hidden_size", c_.hidden_size};
    if (!in_layer) {
      if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
        return Expect(name, shape, {{"vocab_size", c_.vocab_size}, hidden});
      }
      if (name == "model.norm.weight") return Expect(name, shape, {hidden});
      return absl::OkStatus();
    }
    if (rest == "input_layernorm.weight" || rest == "post_attention_layernorm.weight") {
      return Expect(name, shape, {hidden});
    }
    const Dim dense{"intermediate_size", c_.intermediate_size};
    if (rest == "mlp.gate_proj.weight" || rest == "mlp.up_proj.weight") {
      return Expect(name, shape, {dense, hidden});
    }
    if (rest == "mlp.down_proj.weight") return Expect(name, shape, {hidden, dense});
    if (c_.num_experts <= 0) return absl::OkStatus();  // the expert count check reports them
    const Dim experts{ExpertsField(), c_.num_experts};
    if (rest == "mlp.gate.weight") return Expect(name, shape, {experts, hidden});
    if (rest == "mlp.gate.e_score_correction_bias") return Expect(name, shape, {experts});
    std::string_view projection;
    Dim inner{"moe_intermediate_size", c_.moe_intermediate_size};
    if (rest.starts_with(kShared)) {
      projection = rest.substr(kShared.size());
      const int64_t rows = int64_t{c_.moe_intermediate_size} * c_.n_shared_experts;
      inner = Dim{
          "n_shared_experts", rows,
          absl::StrCat(c_.n_shared_experts, " (", c_.n_shared_experts, " x moe_intermediate_size ",
                       c_.moe_intermediate_size, " = ", rows, ")")};
    } else if (rest.starts_with(kExperts)) {
      std::string_view after;
      if (!TakeIndex(rest.substr(kExperts.size()), &after)) return absl::OkStatus();
      projection = after;
    } else {
      return absl::OkStatus();
    }
    if (projection == "gate_proj.weight" || projection == "up_proj.weight") {
      return Expect(name, shape, {inner, hidden});
    }
    if (projection == "down_proj.weight") return Expect(name, shape, {hidden, inner});
    return absl::OkStatus();
  }

  const char* ExpertsField() const {
    return c_.arch == Arch::kDeepseekV3 ? "n_routed_experts" : "num_experts";
  }
  // The fields that decide which layers are MoE layers.
  std::string MoeLayoutFields() const {
    return c_.arch == Arch::kDeepseekV3 ? "fields 'first_k_dense_replace' and 'moe_layer_freq'"
                                        : "fields 'mlp_only_layers' and 'decoder_sparse_step'";
  }

  absl::Status CheckLayers(const std::map<int64_t, LayerTensors>& layers,
                           int64_t extra_layers) const {
    const int64_t n = c_.num_layers;
    if (!layers.empty() && layers.rbegin()->first >= n + extra_layers) {
      const int64_t last = layers.rbegin()->first;
      return FieldError("num_hidden_layers",
                        absl::StrCat("is ", n, ", but the checkpoint holds tensors of layer ", last,
                                     " (model.layers.", last, ".*)"));
    }
    int64_t next = 0;  // the first layer below n that the checkpoint lacks
    for (const auto& entry : layers) {
      if (entry.first != next || next >= n) break;
      ++next;
    }
    if (next < n) {
      return FieldError(
          "num_hidden_layers",
          absl::StrCat("is ", n, ", but the checkpoint holds no tensors of layer ", next,
                       " (model.layers.", next, ".*; it holds ", layers.size(), " layers)"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckExperts(int64_t layer, const LayerTensors& t) const {
    const std::string where = absl::StrCat("model.layers.", layer, ".mlp.experts.");
    if (!c_.IsMoeLayer(static_cast<int>(layer))) {
      if (t.experts.empty()) return absl::OkStatus();
      if (c_.num_experts <= 0) {
        return FieldError(ExpertsField(), absl::StrCat("is 0 or missing, but the checkpoint "
                                                       "holds experts (",
                                                       where, "*)"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ": ", MoeLayoutFields(), " make layer ", layer,
                       " dense, but the checkpoint holds experts of it (", where, "*)"));
    }
    if (t.experts.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ": ", MoeLayoutFields(), " make layer ", layer,
                       " an MoE layer, but the checkpoint holds no experts of it (", where, "*)"));
    }
    const int64_t e = c_.num_experts;
    if (*t.experts.rbegin() >= e) {
      return FieldError(ExpertsField(),
                        absl::StrCat("is ", e, ", but the checkpoint holds expert ",
                                     *t.experts.rbegin(), " (", where, *t.experts.rbegin(), ".*)"));
    }
    int64_t missing = 0;
    for (const int64_t x : t.experts) {
      if (x != missing) break;
      ++missing;
    }
    if (missing < e) {
      return FieldError(
          ExpertsField(),
          absl::StrCat("is ", e, ", but layer ", layer, " of the checkpoint holds ",
                       t.experts.size(), " experts (none named ", where, missing, ".*)"));
    }
    return absl::OkStatus();
  }

 private:
  const ModelConfig& c_;
  const std::string& label_;
};

// DeepSeek-V3 ships its multi-token-prediction layers after the last decoder layer
// (model.layers.61 of 61); they are not part of the forward pass.
int64_t NextnLayers(const nlohmann::json& config) {
  auto it = config.find("num_nextn_predict_layers");
  if (it == config.end() || !it->is_number_integer()) return 0;
  const int64_t n = it->get<int64_t>();
  return n >= 0 && n <= 1024 ? n : 0;
}

}  // namespace

absl::Status CheckConfigMatchesCheckpoint(const ModelConfig& config,
                                          const storage::Checkpoint& checkpoint,
                                          const std::string& label) {
  const Checker checker(config, label);
  std::map<int64_t, LayerTensors> layers;
  for (const std::string& name : checkpoint.Names()) {
    const storage::TensorInfo* info = checkpoint.Info(name);
    const std::vector<int64_t> shape = info != nullptr ? info->shape : std::vector<int64_t>{};
    std::string_view rest;
    std::optional<int64_t> layer;
    if (name.starts_with(kLayers)) {
      layer = TakeIndex(std::string_view(name).substr(kLayers.size()), &rest);
    }
    if (!layer) {
      RETURN_IF_ERROR(checker.CheckShape(name, name, /*in_layer=*/false, shape));
      continue;
    }
    LayerTensors& t = layers[*layer];
    std::string_view after_expert;
    if (rest.starts_with(kExperts)) {
      if (auto e = TakeIndex(rest.substr(kExperts.size()), &after_expert)) t.experts.insert(*e);
    }
    RETURN_IF_ERROR(checker.CheckShape(name, rest, /*in_layer=*/true, shape));
  }
  RETURN_IF_ERROR(checker.CheckLayers(layers, NextnLayers(checkpoint.config())));
  for (const auto& [layer, tensors] : layers) {
    if (layer >= config.num_layers) break;  // multi-token-prediction layers
    RETURN_IF_ERROR(checker.CheckExperts(layer, tensors));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ReadModelConfig(const storage::Checkpoint& checkpoint) {
  const std::string label = checkpoint.dir() + "/config.json";
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(checkpoint.config(), label));
  RETURN_IF_ERROR(CheckConfigMatchesCheckpoint(config, checkpoint, label));
  return config;
}

}  // namespace quant::model
