// Calibration sources: listing, up-front checks of every record, tokenizer_config.json's chat
// template, and the packing of records into one id stream.
#include "worker/tokenizer/calib_source.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/confine.h"
#include "common/file.h"
#include "common/status.h"
#include "worker/tokenizer/string_view_compat.h"
#include "worker/tokenizer/text_stream.h"

namespace quant::tokenizer {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kWhat[] = "calibration file";

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

absl::Status AtLine(const std::string& path, int64_t line, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", ToAbsl(what)));
}

// The next line of `file` without its '\n' (as std::getline: false at the end, or on an error).
bool ReadLine(std::FILE* file, std::string* line) {
  char* buffer = nullptr;
  size_t capacity = 0;
  const ssize_t n = ::getline(&buffer, &capacity, file);  // POSIX: any length, NULs kept
  if (n > 0) line->assign(buffer, static_cast<size_t>(n) - (buffer[n - 1] == '\n' ? 1 : 0));
  std::free(buffer);
  return n > 0;
}

// Calls `fn` on each record of a .jsonl file until it returns false; "path:1: empty" when the
// file holds no record.
absl::Status ForEachRecord(const std::string& path,
                           const std::function<absl::StatusOr<bool>(CalibRecord)>& fn) {
  ASSIGN_OR_RETURN(UniqueFile file, OpenInputFile(path, kWhat));
  std::string line;
  int64_t line_no = 0;
  bool any = false;
  while (ReadLine(file.get(), &line)) {
    ++line_no;
    ASSIGN_OR_RETURN(std::optional<CalibRecord> record, ParseJsonlLine(line, path, line_no));
    if (!record.has_value()) continue;
    any = true;
    ASSIGN_OR_RETURN(const bool more, fn(std::move(*record)));
    if (!more) return absl::OkStatus();
  }
  if (std::ferror(file.get()) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": read error in ", kWhat));
  }
  if (!any) {
    return AtLine(path, std::max<int64_t>(line_no, 1),
                  line_no == 0 ? "empty calibration file" : "no record, only blank lines");
  }
  return absl::OkStatus();
}

// A JSON string or {"content": string} (how tokenizer_config.json writes special tokens).
std::string TokenText(const json& j, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<CalibSource> ListCalibSource(const std::string& path) {
  std::error_code ec;
  CalibSource source;
  if (!fs::is_directory(path, ec)) {
    const bool jsonl = EndsWith(path, ".jsonl");
    source.plain_text = !jsonl;
    source.files.push_back({path, jsonl});
    return source;
  }
  int64_t entries = 0;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    ++entries;
    const std::string name = it->path().filename().string();
    if (!it->is_regular_file(ec)) continue;
    if (EndsWith(name, ".jsonl")) source.files.push_back({it->path().string(), true});
    if (EndsWith(name, ".txt")) source.files.push_back({it->path().string(), false});
  }
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot list the calibration directory"));
  if (entries == 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty calibration directory"));
  if (source.files.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no .txt or .jsonl file in the calibration directory"));
  }
  // Name order: the same directory gives the same windows (STYLE.md 10).
  std::sort(source.files.begin(), source.files.end(),
            [](const CalibFile& a, const CalibFile& b) { return a.path < b.path; });
  return source;
}

absl::StatusOr<std::optional<CalibRecord>> ParseJsonlLine(std::string_view line,
                                                          const std::string& path,
                                                          int64_t line_no) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (absl::StripAsciiWhitespace(ToAbsl(line)).empty()) return std::optional<CalibRecord>();
  const json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return AtLine(path, line_no, "not JSON");
  if (!j.is_object()) return AtLine(path, line_no, "not a JSON object");
  CalibRecord r;
  r.line = line_no;
  const auto text = j.find("text");
  const auto messages = j.find("messages");
  if (text != j.end() && !text->is_null()) {
    if (!text->is_string()) return AtLine(path, line_no, "\"text\" is not a string");
    r.text = text->get<std::string>();
    if (r.text.empty()) return AtLine(path, line_no, "\"text\" is empty");
    return std::optional<CalibRecord>(std::move(r));
  }
  if (messages != j.end() && !messages->is_null()) {
    if (!messages->is_array() || messages->empty()) {
      return AtLine(path, line_no, "\"messages\" is not a non-empty list");
    }
    for (size_t i = 0; i < messages->size(); ++i) {
      const json& m = (*messages)[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        return AtLine(
            path, line_no,
            absl::StrCat("\"messages\"[", i, "] is not an object with a string \"role\""));
      }
    }
    r.messages = *messages;
    return std::optional<CalibRecord>(std::move(r));
  }
  return AtLine(path, line_no, "a record with neither \"text\" nor \"messages\"");
}

absl::Status CheckCalibSource(const CalibSource& source, int64_t max_samples) {
  int64_t samples = 0;
  for (const CalibFile& f : source.files) {
    if (max_samples > 0 && samples >= max_samples) break;
    if (!f.jsonl) {
      // A text file is one sample; an empty one is refused here with its line.
      ASSIGN_OR_RETURN(UniqueFile file, OpenInputFile(f.path, kWhat));
      if (std::fgetc(file.get()) == EOF) {
        if (std::ferror(file.get()) != 0) {
          return absl::DataLossError(absl::StrCat(f.path, ": read error in ", kWhat));
        }
        return AtLine(f.path, 1, "empty calibration file");
      }
      ++samples;
      continue;
    }
    RETURN_IF_ERROR(ForEachRecord(f.path, [&](CalibRecord) -> absl::StatusOr<bool> {
      ++samples;
      return max_samples <= 0 || samples < max_samples;
    }));
  }
  return absl::OkStatus();
}

absl::StatusOr<ChatTemplateConfig> ParseTokenizerConfig(std::string_view text,
                                                        const std::string& label) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a JSON object"));
  }
  ChatTemplateConfig c;
  c.label = label;
  c.bos_token = TokenText(j, "bos_token");
  c.eos_token = TokenText(j, "eos_token");
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return c;
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {
    // Several named templates (e.g. "default", "tool_use"): calibration chats take "default".
    bool found = false;
    for (const json& t : *it) {
      if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
          t["template"].is_string()) {
        source = t["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) {
      c.has_template = true;
      c.template_error = absl::InvalidArgumentError("no \"default\" entry in \"chat_template\"");
      return c;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": \"chat_template\" is neither a string nor a list"));
  }
  c.has_template = true;
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(source);
  if (parsed.ok()) {
    c.chat_template = std::move(*parsed);
  } else {
    c.template_error = parsed.status();
  }
  return c;
}

// Why packed: our windows are fixed-length [N, window_tokens] with no attention mask, so a
// sample shorter than a window could only be padded (pad activations would enter every
// Hessian) or skipped (most chat records are shorter than 256 tokens, so most of a chat data
// set would be lost). llm-compressor keeps samples apart because it can pad and mask; we instead
// concatenate samples separated by EOS and cut windows, as the plain-text path cuts a text.
// Each sample is first truncated to one window's body (window_tokens - 1 ids), as llm-compressor
// truncates to max_seq_length, so that one long record cannot fill the whole calibration set.
// BOS: a text is encoded as the tokenizer does by default (add_special_tokens, its
// post-processor's BOS) and a chat as the template renders it (its own bos_token, encoded without
// special tokens, as apply_chat_template does); then a leading BOS is dropped, because every
// window already opens with BOS (the recipe of the plain-text and evaluation windows) and a BOS
// in mid-window is a position the model never saw in training.
absl::StatusOr<PackedCalib> PackCalibSamples(const Tokenizer& tokenizer, const CalibSource& source,
                                             const PackOptions& options) {
  QUANT_CHECK(options.window_tokens >= 2);
  const size_t body = static_cast<size_t>(options.window_tokens - 1);
  PackedCalib out;
  auto full = [&] {
    return options.max_windows > 0 &&
           out.ids.size() >= static_cast<size_t>(options.max_windows) * body;
  };
  auto done = [&] {
    return (options.max_samples > 0 && out.samples >= options.max_samples) || full();
  };
  auto add = [&](std::vector<int32_t> ids) {
    if (!ids.empty() && ids.front() == options.bos_id) ids.erase(ids.begin());
    if (ids.size() > body) ids.resize(body);
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    if (options.eos_id >= 0 && (ids.empty() || ids.back() != options.eos_id)) {
      out.ids.push_back(options.eos_id);
    }
    ++out.samples;
  };
  for (const CalibFile& f : source.files) {
    if (done()) break;
    if (!f.jsonl) {
      // The text as it starts: a sample is truncated to one window body anyway.
      ASSIGN_OR_RETURN(EncodedText text,
                       EncodeFile(tokenizer, f.path, kWhat, static_cast<int64_t>(body) + 1));
      add(std::move(text.ids));
      continue;
    }
    RETURN_IF_ERROR(ForEachRecord(f.path, [&](CalibRecord r) -> absl::StatusOr<bool> {
      if (r.messages.is_null()) {
        add(tokenizer.Encode(r.text, /*add_special_tokens=*/true));
        return !done();
      }
      const ChatTemplateConfig* chat = options.chat;
      if (chat == nullptr || !chat->has_template) {
        return AtLine(f.path, r.line,
                      absl::StrCat("a \"messages\" record, but the model has no chat template",
                                   chat == nullptr ? " (no tokenizer_config.json)"
                                                   : absl::StrCat(" in ", chat->label)));
      }
      if (!chat->template_error.ok()) {
        return AtLine(f.path, r.line,
                      absl::StrCat("the chat template of ", chat->label,
                                   " cannot be rendered here: ", chat->template_error.message()));
      }
      const json context = {{"messages", r.messages},
                            {"add_generation_prompt", false},
                            {"bos_token", chat->bos_token},
                            {"eos_token", chat->eos_token}};
      absl::StatusOr<std::string> rendered = chat->chat_template->Render(context);
      if (!rendered.ok()) {
        return AtLine(f.path, r.line,
                      absl::StrCat("the chat template of ", chat->label,
                                   " failed: ", rendered.status().message()));
      }
      add(tokenizer.Encode(*rendered, /*add_special_tokens=*/false));
      return !done();
    }));
  }
  return out;
}

}  // namespace quant::tokenizer
