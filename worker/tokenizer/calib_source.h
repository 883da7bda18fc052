// Calibration data as users keep it: a plain text file, a .jsonl file of {"text": ...} or
// {"messages": [...]} records, or a directory of .txt/.jsonl files; records become one packed
// stream of token ids that the job cuts into its fixed-length windows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/chat_template.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::tokenizer {

struct CalibFile {
  std::string path;
  bool jsonl = false;  // else plain text
};

struct CalibSource {
  // A single plain text file: streamed and cut into windows exactly as before records existed.
  bool plain_text = false;
  // A directory's .txt and .jsonl files, sorted by name (not recursive). There a .txt file is
  // one sample (a document per file), truncated like every record; a .jsonl line is one sample.
  std::vector<CalibFile> files;
};

// What `path` holds. Errors, one line naming the path: cannot be read, an empty directory, a
// directory with no .txt or .jsonl file.
absl::StatusOr<CalibSource> ListCalibSource(const std::string& path);

// One record of a .jsonl file: a text, or chat messages for the chat template.
struct CalibRecord {
  std::string text;
  nlohmann::json messages;  // an array of objects with a string "role"; null for a text record
  int64_t line = 0;
};

// One line of a .jsonl file (`line_no` from 1). nullopt for a blank line. Errors
// "path:line: ...": not JSON, not an object, neither "text" nor "messages", a field of the
// wrong type, an empty text or message list.
absl::StatusOr<std::optional<CalibRecord>> ParseJsonlLine(std::string_view line,
                                                          const std::string& path, int64_t line_no);

// Reads every record of the source up front (ValidateSpec: a bad line costs no model load),
// stopping after `max_samples` (0: all). Errors as ParseJsonlLine's, and "path:1: empty
// calibration file" for an empty file (or one of blank lines only).
absl::Status CheckCalibSource(const CalibSource& source, int64_t max_samples);

// The chat template and special token texts of a tokenizer_config.json.
struct ChatTemplateConfig {
  std::string label;  // the file, for messages
  bool has_template = false;
  // Why the template cannot be run (it did not parse): reported at the first chat record
  // that needs it, so text-only data works with any template.
  absl::Status template_error;
  std::optional<ChatTemplate> chat_template;
  std::string bos_token, eos_token;
};

// Parses tokenizer_config.json's text: "chat_template" (a string, or a list of {name, template}
// whose "default" entry is used), "bos_token"/"eos_token" (a string or {"content": ...}).
// Errors "label: ..." when the file is not a JSON object.
absl::StatusOr<ChatTemplateConfig> ParseTokenizerConfig(std::string_view text,
                                                        const std::string& label);

struct PackOptions {
  int window_tokens = 256;  // the window length, BOS included
  int64_t max_samples = 0;  // records read at most (0: all)
  int64_t max_windows = 0;  // stop once this many windows are filled (0: no cap)
  int32_t bos_id = 0;
  int32_t eos_id = -1;                       // the separator between samples (< 0: none)
  const ChatTemplateConfig* chat = nullptr;  // null: the model has no tokenizer_config.json
};

struct PackedCalib {
  std::vector<int32_t> ids;  // the stream, without the windows' BOS
  int64_t samples = 0;
};

// The records of `source` (not plain_text) as one stream of ids; windows are BOS +
// window_tokens - 1 consecutive ids of it (see calib_source.cc for why samples are packed).
// Errors "path:line: ..." for a chat the template cannot render.
absl::StatusOr<PackedCalib> PackCalibSamples(const Tokenizer& tokenizer, const CalibSource& source,
                                             const PackOptions& options);

}  // namespace quant::tokenizer
