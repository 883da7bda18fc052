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
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
};

}  // namespace quant::tokenizer
