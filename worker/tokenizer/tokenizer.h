// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json: added/special tokens matched
// first, Split pre-tokenizers (Oniguruma regexes), ByteLevel, merges by rank, TemplateProcessing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::tokenizer {

class Tokenizer {
 public:
  // Reads and validates tokenizer.json; errors name the file and the problem.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Same, from the JSON text; `label` names the source in errors (fuzzed).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                             std::string_view label);
  virtual ~Tokenizer() = default;

  // Ids as the HF `tokenizers` library gives for encode(text, add_special_tokens).
  // Bytes of `text` that are not UTF-8 are first replaced by U+FFFD (as Python's
  // errors="replace" would hand them to HF). Thread-safe.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;
  // HF's decode(ids, skip_special_tokens=False): unknown ids are skipped; byte sequences that
  // are not UTF-8 come out as U+FFFD.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // One past the largest id Encode can return (vocabulary, added tokens, template ids).
  virtual int32_t vocab_size() const = 0;
};

}  // namespace quant::tokenizer
