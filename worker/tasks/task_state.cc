#include "worker/tasks/task_state.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/metrics.h"
#include "common/atomic_file.h"
#include "common/status.h"
#include "storage/object_store.h"
#include "storage/safetensors.h"
#include "worker/eval/eval_job.h"
#include "worker/eval/eval_pipeline.h"
#include "worker/model/model.h"
#include "job/scope.h"
#include "worker/tokenizer/calib_source.h"
#include "worker/tokenizer/text_stream.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::tasks {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<storage::DType> StorageType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return storage::DType::kF32;
    case at::kByte: return storage::DType::kU8;
    case at::kInt: return storage::DType::kI32;
    case at::kLong: return storage::DType::kI64;
    default:
      return absl::InvalidArgumentError(absl::StrCat("task state: cannot save dtype ",
                                                     at::toString(t)));
  }
}

}  // namespace

absl::Status SaveTensors(const std::string& path,
                         const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const nlohmann::json& metadata) {
  storage::SafetensorsWriter writer;
  writer.SetMetadata("state", metadata.dump());
  for (const auto& [name, t] : tensors) {
    ASSIGN_OR_RETURN(storage::DType dtype, StorageType(t.scalar_type()));
    const at::Tensor c = t.detach().cpu().contiguous();
    storage::HostTensor host;
    host.dtype = dtype;
    host.shape = c.sizes().vec();
    host.bytes.resize(c.nbytes());
    if (c.nbytes() > 0) std::memcpy(host.bytes.data(), c.data_ptr(), c.nbytes());
    RETURN_IF_ERROR(writer.Add(name, std::move(host)));
  }
  fs::create_directories(fs::path(path).parent_path());
  RETURN_IF_ERROR(writer.Write(path));
  std::error_code ec;
  metrics::Default()
      .GetCounter("quant_scratch_bytes_total", "Task state written and read in the scratch.",
                  {{"direction", "written"}})
      .Inc(static_cast<double>(fs::file_size(path, ec)));
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(const std::string& path,
                                                              nlohmann::json* metadata) {
  ASSIGN_OR_RETURN(std::unique_ptr<storage::SafetensorsFile> file,
                   storage::SafetensorsFile::Open(path));
  metrics::Default()
      .GetCounter("quant_scratch_bytes_total", "Task state written and read in the scratch.",
                  {{"direction", "read"}})
      .Inc(static_cast<double>(file->file_size()));
  std::map<std::string, at::Tensor> out;
  for (const storage::TensorInfo& info : file->header().tensors) {
    ASSIGN_OR_RETURN(storage::HostTensor host, file->Read(info));
    out[info.name] = model::HostToTensor(std::move(host));
  }
  if (metadata != nullptr) {
    auto it = file->header().metadata.find("state");
    *metadata = nlohmann::json::parse(it != file->header().metadata.end() ? it->second : "{}",
                                      nullptr, /*allow_exceptions=*/false);
    if (metadata->is_discarded()) {
      return absl::DataLossError(absl::StrCat(path, ": task state metadata is not JSON"));
    }
  }
  return out;
}

absl::Status OpenJob(const QuantizeJobSpec& spec, JobState* job, at::Tensor* windows) {
  RETURN_IF_ERROR(OpenJob(spec, job));
  return MakeCalibrationWindows(job, windows);
}

absl::Status OpenJob(const QuantizeJobSpec& spec, JobState* job) {
  job->spec = spec;
  job->scheme.bits = spec.bits;
  job->scheme.grid = spec.grid;
  job->scheme.group_size = spec.group_size;
  job->scope = spec.scope;
  job->objective = spec.objective;
  ASSIGN_OR_RETURN(job->model, model::Model::Open(spec.model_dir, model::ComputeDType::kF32));
  // --device cuda: weights, activations, Hessians, GPTQ and GSQ on the GPU; quantized units
  // come back to the host for export.
  job->model->SetDevice(at::Device(spec.device == Device::kCuda ? at::kCUDA : at::kCPU));
  // Every in-scope linear must have a grid before any work starts.
  for (const std::string& name : job->model->checkpoint().Names()) {
    if (!quant::InQuantScope(name, job->scope)) continue;
    const storage::TensorInfo* info = job->model->checkpoint().Info(name);
    if (info == nullptr || info->shape.size() != 2) continue;
    if (info->shape[1] % spec.group_size != 0 && !spec.channel_fallback) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", info->shape[1], " input columns are not a multiple of --group ",
          spec.group_size, " and --no-channel-fallback was given"));
    }
  }
  return absl::OkStatus();
}

absl::Status MakeCalibrationWindows(JobState* job, at::Tensor* windows) {
  const QuantizeJobSpec& spec = job->spec;
  metrics::Default()
      .GetCounter("quant_calibration_tokenizations_total",
                  "Calibration sources tokenized into windows (only tasks that forward them).")
      .Inc();
  ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tok,
                   eval::LoadModelTokenizer(job->model->checkpoint()));
  ASSIGN_OR_RETURN(const tokenizer::CalibSource source, tokenizer::ListCalibSource(spec.calib_path));
  const int64_t bos = job->model->checkpoint().config().value("bos_token_id", 0);
  std::vector<int32_t> ids;
  int64_t want_windows = 0;
  if (source.plain_text) {
    // Calibration windows: the shared recipe (BOS + 255 tokens), as many as calib_tokens asks
    // (or --calib-samples, counted in windows here). The text is read only as far as their
    // tokens go, so memory follows calib_tokens, not the file (a 200 MB text read and encoded
    // whole took qctl past 5.6 GB, then std::bad_alloc).
    want_windows = spec.calib_samples > 0 ? spec.calib_samples
                                          : spec.calib_tokens / spec.window_tokens;
    ASSIGN_OR_RETURN(tokenizer::EncodedText calib,
                     tokenizer::EncodeFile(*tok, spec.calib_path, "calibration file",
                                           want_windows * (spec.window_tokens - 1)));
    ids = std::move(calib.ids);
    // The evaluation text is read (in pieces) only after the job; here it must merely be there.
    if (spec.evaluate) RETURN_IF_ERROR(CheckFileReadable(spec.eval_text, "evaluation text"));
    const int64_t have_windows = static_cast<int64_t>(ids.size()) / (spec.window_tokens - 1);
    if (have_windows < want_windows) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.calib_path, ": ", ids.size(), " tokens give ", have_windows, " windows of ",
          spec.window_tokens, ", fewer than the ", want_windows, " that ",
          spec.calib_samples > 0 ? "--calib-samples " : "--calib-tokens ",
          spec.calib_samples > 0 ? spec.calib_samples : spec.calib_tokens, " asks for"));
    }
  } else {
    // Records (tokenizer/calib_source.h): up to --calib-samples of them, packed into one
    // stream; as many windows as they fill, at most calib_tokens' worth. Fewer is fine: a
    // chat data set is as large as it is.
    const storage::ObjectStore& store = job->model->checkpoint().store();
    constexpr char kConfigFile[] = "tokenizer_config.json";
    constexpr uint64_t kMaxConfigBytes = uint64_t{64} << 20;  // real ones are under 1 MiB
    std::optional<tokenizer::ChatTemplateConfig> chat;
    ASSIGN_OR_RETURN(const bool has_config, store.Exists(kConfigFile));
    if (has_config) {
      ASSIGN_OR_RETURN(const std::string text, store.Read(kConfigFile, kMaxConfigBytes));
      ASSIGN_OR_RETURN(chat, tokenizer::ParseTokenizerConfig(text, store.Label(kConfigFile)));
    }
    tokenizer::PackOptions options;
    options.window_tokens = spec.window_tokens;
    options.max_samples = spec.calib_samples;
    options.max_windows = spec.calib_tokens / spec.window_tokens;
    options.bos_id = static_cast<int32_t>(bos);
    const nlohmann::json& config = job->model->checkpoint().config();
    const auto eos = config.find("eos_token_id");
    if (eos != config.end() && eos->is_number_integer()) options.eos_id = eos->get<int32_t>();
    if (eos != config.end() && eos->is_array() && !eos->empty() && (*eos)[0].is_number_integer()) {
      options.eos_id = (*eos)[0].get<int32_t>();
    }
    options.chat = chat.has_value() ? &*chat : nullptr;
    ASSIGN_OR_RETURN(tokenizer::PackedCalib packed, tokenizer::PackCalibSamples(*tok, source, options));
    if (spec.evaluate) RETURN_IF_ERROR(CheckFileReadable(spec.eval_text, "evaluation text"));
    ids = std::move(packed.ids);
    want_windows = std::min<int64_t>(static_cast<int64_t>(ids.size()) / (spec.window_tokens - 1),
                                     options.max_windows);
    if (want_windows == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.calib_path, ": ", packed.samples, " samples give ", ids.size(),
          " tokens, less than one window of ", spec.window_tokens, " (--seq-len)"));
    }
  }
  ASSIGN_OR_RETURN(at::Tensor w, eval::MakeWindows(ids, spec.window_tokens, bos, spec.calib_path));
  *windows = w.narrow(0, 0, want_windows).contiguous();
  job->windows = want_windows;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<at::Tensor>> EmbedWindows(const JobState& job,
                                                     const at::Tensor& windows) {
  std::vector<at::Tensor> hidden;
  const int64_t n = windows.size(0);
  for (int64_t b = 0; b < n; b += job.spec.batch_windows) {
    ASSIGN_OR_RETURN(at::Tensor h, job.model->Embed(windows.narrow(
                                       0, b, std::min<int64_t>(job.spec.batch_windows, n - b))));
    hidden.push_back(h);
  }
  return hidden;
}

namespace {

// The files of `dir` named <stem>*.safetensors, in name order.
std::vector<std::string> Parts(const std::string& dir, const std::string& stem,
                               const std::string& extension = ".safetensors") {
  std::vector<std::string> parts;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(stem) && name.ends_with(extension)) parts.push_back(e.path());
  }
  std::sort(parts.begin(), parts.end());
  return parts;
}

}  // namespace

// One part of a task's units (LoadUnits reads every part of a directory), and of its reports.
static absl::Status LoadUnitsPart(const std::string& part, JobState& job);
static absl::Status LoadReportsPart(const std::string& reports_file, JobState& job);

absl::Status SaveHidden(const std::string& path, const std::vector<at::Tensor>& hidden,
                        const std::vector<int64_t>& ids) {
  if (ids.size() != hidden.size()) return absl::InternalError("SaveHidden: ids and batches differ");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t b = 0; b < hidden.size(); ++b) {
    tensors.emplace_back(absl::StrCat("b", ids[b]), hidden[b]);
  }
  return SaveTensors(path, tensors, {{"ids", ids}});
}

absl::StatusOr<int64_t> HiddenWindows(const std::string& dir) {
  const std::vector<std::string> parts = Parts(dir, "hidden");
  if (parts.empty()) return absl::DataLossError(absl::StrCat(dir, ": no hidden batches"));
  int64_t windows = 0;
  for (const std::string& part : parts) {
    ASSIGN_OR_RETURN(std::unique_ptr<storage::SafetensorsFile> file,
                     storage::SafetensorsFile::Open(part));
    for (const storage::TensorInfo& info : file->header().tensors) {
      if (info.shape.empty()) return absl::DataLossError(absl::StrCat(part, ": ", info.name,
                                                                      " is a scalar"));
      windows += info.shape[0];
    }
  }
  return windows;
}

absl::StatusOr<std::vector<at::Tensor>> LoadHidden(const std::string& dir,
                                                   const std::vector<int64_t>& ids,
                                                   at::Device device) {
  std::map<int64_t, at::Tensor> found;
  const std::set<int64_t> wanted(ids.begin(), ids.end());
  for (const std::string& part : Parts(dir, "hidden")) {
    ASSIGN_OR_RETURN(auto tensors, LoadTensors(part));
    for (auto& [name, t] : tensors) {
      const int64_t id = std::stoll(name.substr(1));
      if (wanted.count(id)) found[id] = t.to(device);
    }
  }
  std::vector<at::Tensor> hidden;
  for (int64_t id : ids) {
    auto it = found.find(id);
    if (it == found.end()) {
      return absl::DataLossError(absl::StrCat(dir, ": hidden batch ", id, " is missing"));
    }
    hidden.push_back(it->second);
  }
  return hidden;
}

absl::Status SaveCalibration(const std::string& path, const JobState& job,
                             const std::function<bool(const std::string& key)>& keep) {
  const LayerState& ls = job.layer;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  nlohmann::json tokens = nlohmann::json::object();
  std::vector<int> experts;
  if (ls.capture != nullptr) {
    for (const auto& [key, stats] : ls.capture->hessians().stats()) {
      if (keep && !keep(key)) continue;
      tokens[key] = stats.tokens;
      if (stats.xtx.defined()) tensors.emplace_back("xtx/" + key, stats.xtx);
    }
    const int64_t hidden = job.model->config().hidden_size;
    experts = ls.capture->CapturedExperts();
    for (int e : experts) {
      tensors.emplace_back(absl::StrCat("inputs/", e), ls.capture->Inputs(e, hidden));
      tensors.emplace_back(absl::StrCat("outputs/", e), ls.capture->Outputs(e, hidden));
    }
  }
  return SaveTensors(path, tensors,
                     {{"calibrated", ls.capture != nullptr}, {"tokens", tokens},
                      {"experts", experts}, {"windows", job.windows}});
}

absl::Status RestoreCalibration(JobState& job, int layer, const std::string& dir) {
  RETURN_IF_ERROR(LoadLayerState(job, layer));
  LayerState& ls = job.layer;
  const at::Device device = job.model->device();
  const std::vector<std::string> parts = Parts(dir, "calibration");
  if (parts.empty()) return absl::DataLossError(absl::StrCat(dir, ": no calibration"));
  for (const std::string& part : parts) {
    nlohmann::json meta;
    ASSIGN_OR_RETURN(auto tensors, LoadTensors(part, &meta));
    job.windows = meta.value("windows", job.windows);
    if (!meta.value("calibrated", false)) continue;
    if (ls.capture == nullptr) ls.capture = std::make_unique<LayerCapture>(false, device);
    for (const auto& [key, count] : meta["tokens"].items()) {
      model::HessianStats stats;
      stats.tokens = count.get<int64_t>();
      auto it = tensors.find("xtx/" + key);
      if (it != tensors.end()) stats.xtx = it->second.to(device);
      ls.capture->RestoreHessian(key, std::move(stats));
    }
    for (int e : meta["experts"].get<std::vector<int>>()) {
      ls.capture->RestoreTokens(e, tensors.at(absl::StrCat("inputs/", e)).to(device),
                                tensors.at(absl::StrCat("outputs/", e)).to(device));
    }
  }
  if (ls.capture == nullptr) return absl::OkStatus();
  for (const std::string& local : ls.names) {
    int64_t seen = 0;
    ls.hessian_of[local] = HessianOf(ls, local, &seen);
  }
  return absl::OkStatus();
}

nlohmann::json UnitReportJson(const UnitReport& r) {
  nlohmann::json u = {{"name", r.name},          {"bits", r.bits},
                      {"grid", r.grid},          {"group_size", r.group_size},
                      {"method", r.method},      {"proxy_loss", r.proxy_loss},
                      {"tokens", r.tokens},      {"fallback_identity_hessian", r.fallback},
                      {"seconds", r.seconds}};
  if (r.gsq_loss_before >= 0) {
    u["gsq_loss_before"] = r.gsq_loss_before;
    u["gsq_loss_after"] = r.gsq_loss_after;
    u["gsq_changed_fraction"] = r.changed_fraction;
  }
  return u;
}

namespace {

UnitReport UnitReportFromJson(const nlohmann::json& u) {
  UnitReport r;
  r.name = u.at("name").get<std::string>();
  r.bits = u.at("bits").get<int>();
  r.grid = u.at("grid").get<std::string>();
  r.group_size = u.at("group_size").get<int>();
  r.method = u.at("method").get<std::string>();
  r.proxy_loss = u.at("proxy_loss").get<double>();
  r.tokens = u.at("tokens").get<int64_t>();
  r.fallback = u.at("fallback_identity_hessian").get<bool>();
  r.seconds = u.at("seconds").get<double>();
  r.gsq_loss_before = u.value("gsq_loss_before", -1.0);
  r.gsq_loss_after = u.value("gsq_loss_after", -1.0);
  r.changed_fraction = u.value("gsq_changed_fraction", 0.0);
  return r;
}

}  // namespace

absl::Status SaveUnits(const std::string& dir, const JobState& job,
                       const std::vector<std::string>& names, const std::string& layer_prefix,
                       const std::string& suffix, bool with_tensors) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  nlohmann::json units = nlohmann::json::object();
  for (const std::string& name : names) {
    const quant::QuantizedWeight& q = job.units.at(name);
    tensors.emplace_back(name + "/codes", q.codes);
    tensors.emplace_back(name + "/scales", q.scales);
    tensors.emplace_back(name + "/zeros", q.zeros);
    units[name] = {{"bits", q.scheme.bits},
                   {"grid", NameOf(q.scheme.grid)},
                   {"scheme_group_size", q.scheme.group_size},
                   {"group_size", q.group_size}};
  }
  const std::set<std::string> wanted(names.begin(), names.end());
  nlohmann::json reports = nlohmann::json::array();
  for (const UnitReport& r : job.reports) {
    if (wanted.count(r.name)) reports.push_back(UnitReportJson(r));
  }
  std::vector<std::string> fallbacks;
  for (const std::string& e : job.fallback_experts) {
    if (!layer_prefix.empty() && e.starts_with(layer_prefix)) fallbacks.push_back(e);
  }
  if (with_tensors) {
    RETURN_IF_ERROR(SaveTensors(dir + "/units" + suffix + ".safetensors", tensors, units));
  }
  return WriteJsonFile(dir + "/units" + suffix + ".json",
                       {{"reports", reports}, {"fallback_experts", fallbacks}});
}

absl::Status LoadUnits(const std::string& dir, JobState& job) {
  const std::vector<std::string> parts = Parts(dir, "units");
  if (parts.empty()) return absl::DataLossError(absl::StrCat(dir, ": no units"));
  for (const std::string& part : parts) {
    RETURN_IF_ERROR(LoadUnitsPart(part, job));
  }
  return absl::OkStatus();
}

absl::Status LoadUnitReports(const std::string& dir, JobState& job) {
  const std::vector<std::string> parts = Parts(dir, "units", ".json");
  if (parts.empty()) return absl::DataLossError(absl::StrCat(dir, ": no unit reports"));
  for (const std::string& part : parts) {
    RETURN_IF_ERROR(LoadReportsPart(part, job));
  }
  return absl::OkStatus();
}

static absl::Status LoadUnitsPart(const std::string& part, JobState& job) {
  nlohmann::json units;
  ASSIGN_OR_RETURN(auto tensors, LoadTensors(part, &units));
  for (const auto& [name, u] : units.items()) {
    quant::QuantizedWeight q;
    q.scheme.bits = u.at("bits").get<int>();
    q.scheme.grid = EnumFromName<quant::Grid>(u.at("grid").get<std::string>())
                        .value_or(quant::Grid::kSymmetric);
    q.scheme.group_size = u.at("scheme_group_size").get<int>();
    q.group_size = u.at("group_size").get<int>();
    q.codes = tensors.at(name + "/codes");
    q.scales = tensors.at(name + "/scales");
    q.zeros = tensors.at(name + "/zeros");
    job.units[name] = std::move(q);
  }
  return LoadReportsPart(
      part.substr(0, part.size() - std::string(".safetensors").size()) + ".json", job);
}

static absl::Status LoadReportsPart(const std::string& reports_file, JobState& job) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(reports_file, "unit reports"));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError(reports_file + ": not JSON");
  for (const nlohmann::json& u : j.at("reports")) {
    UnitReport r = UnitReportFromJson(u);
    auto same = std::find_if(job.reports.begin(), job.reports.end(),
                             [&](const UnitReport& x) { return x.name == r.name; });
    if (same != job.reports.end()) {
      *same = r;
    } else {
      job.reports.push_back(r);
    }
  }
  for (const std::string& e : j.at("fallback_experts").get<std::vector<std::string>>()) {
    if (std::find(job.fallback_experts.begin(), job.fallback_experts.end(), e) ==
        job.fallback_experts.end()) {
      job.fallback_experts.push_back(e);
    }
  }
  return absl::OkStatus();
}

nlohmann::json JobReport(const QuantizeJobSpec& spec, const QuantizeJobResult& result,
                         const std::vector<UnitReport>& reports, const nlohmann::json& slq) {
  nlohmann::json units_json = nlohmann::json::array();
  for (const UnitReport& r : reports) units_json.push_back(UnitReportJson(r));
  nlohmann::json phases_json = nlohmann::json::array();
  for (const PhaseTiming& p : result.phases) {
    phases_json.push_back(
        {{"phase", p.phase}, {"seconds", p.seconds}, {"peak_rss_bytes", p.peak_rss_bytes}});
  }
  nlohmann::json tasks_json = nlohmann::json::array();
  for (const auto& [name, seconds] : result.tasks) {
    tasks_json.push_back({{"task", name}, {"seconds", seconds}});
  }
  nlohmann::json report = {
      {"options", spec.ToJson()},
      {"tasks", tasks_json},
      {"units", units_json},
      {"fallback_experts", result.fallback_experts},
      {"phases", phases_json},
      {"bits_per_param",
       {{"quantized_true", result.bits_per_quantized_param_true},
        {"quantized_stored", result.bits_per_quantized_param_stored},
        {"checkpoint_true", result.bits_per_param_true},
        {"checkpoint_stored", result.bits_per_param_stored}}},
      {"container_note", result.container_note},
  };
  if (spec.slq) report["slq"] = slq;
  if (result.evaluated) report["eval"] = EvalJson(spec, result.eval);
  if (!result.eval_windows.empty()) report["eval_windows"] = EvalWindowsJson(result.eval_windows);
  return report;
}

nlohmann::json EvalWindowsJson(const std::vector<eval::WindowStats>& windows) {
  nlohmann::json w = {{"positions", nlohmann::json::array()},
                      {"kl_sum", nlohmann::json::array()},
                      {"ear_sum", nlohmann::json::array()}};
  for (const eval::WindowStats& s : windows) {
    w["positions"].push_back(s.positions);
    w["kl_sum"].push_back(s.kl_sum);
    w["ear_sum"].push_back(s.ear_sum);
  }
  return w;
}

void SetExportStats(const quant::ExportStats& stats, QuantizeJobResult* result) {
  result->bits_per_quantized_param_true = stats.bits_per_quantized_param_true;
  result->bits_per_quantized_param_stored = stats.bits_per_quantized_param_stored;
  result->bits_per_param_true = stats.bits_per_param_true;
  result->bits_per_param_stored = stats.bits_per_param_stored;
  result->container_note = stats.container_note;
}

eval::EvalJobOptions EvalOptionsFor(const QuantizeJobSpec& spec,
                                    const std::string& quantized_dir) {
  eval::EvalJobOptions eo;
  eo.model_dir = quantized_dir;
  eo.reference_dir = spec.model_dir;
  eo.text_path = spec.eval_text;
  eo.batch_windows = spec.batch_windows;
  eo.device = std::string(NameOf(spec.device));
  return eo;
}

nlohmann::json EvalJson(const QuantizeJobSpec& spec, const eval::EvalSummary& e) {
  auto iv = [](const eval::Interval& i) { return nlohmann::json{i.value, i.lo, i.hi}; };
  return {{"text", spec.eval_text},   {"windows", e.windows},
          {"ppl", iv(e.ppl)},         {"kl", iv(e.kl)},
          {"ear", iv(e.ear)},         {"ear_top10", iv(e.ear_top10)},
          {"flip_rate", iv(e.flip_rate)}, {"next_token_acc", iv(e.accuracy)}};
}

absl::Status WriteJsonFile(const std::string& path, const nlohmann::json& j) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  return WriteFileAtomically(path, j.dump(1) + "\n");
}

}  // namespace quant::tasks
