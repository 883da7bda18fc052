// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json: added/special tokens matched
// first, Split pre-tokenizers (Oniguruma regexes), ByteLevel, merges by rank, TemplateProcessing.
#pragma once

#include <cstddef>
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

  // The last offset p in (0, text.size()) where `text` may be cut without changing its ids:
  // Encode(t[0, p)) followed by Encode(t[p, end)) equals Encode(t) (without special tokens)
  // for every t that starts with `text`. 0 when there is none. Offered cuts are line starts:
  // a '\n' followed by a character the pre-tokenizer's `\s` does not match; and only when the
  // pre-tokenizer is one checked never to join pieces there (SplitsAtLineStarts: DeepSeek-V3's,
  // Qwen2's, Llama-3's) and no added token holds a '\n' or strips whitespace; for any other
  // tokenizer.json always 0, since only the whole text is then known to encode exactly.
  virtual size_t LastCut(std::string_view text) const = 0;
};

}  // namespace quant::tokenizer
