// Added tokens (special and not) of a tokenizer.json, found in the raw text before any
// pre-tokenization, as HF's AddedVocabulary does: leftmost-longest matching.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace quant::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;  // match only when not inside a word
  bool lstrip = false;       // the match swallows the whitespace before it
  bool rstrip = false;       // ... and after it
  bool normalized = false;   // matched in the normalized text rather than the raw one
};

// A run of the input: plain text still to pre-tokenize (token_id < 0) or one added token.
struct TextSegment {
  size_t begin = 0;
  size_t end = 0;
  int32_t token_id = -1;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // Tokens with empty content are kept for decoding but never matched (HF skips them too).
  explicit AddedVocabulary(std::vector<AddedToken> tokens);

  // Replaces *segments with `text` cut at added-token matches, in order. Tokens with
  // normalized=false are matched first over the whole text, then normalized=true ones within
  // the remaining plain runs (there is no normalizer, so normalized text = raw text). Empty
  // plain runs are dropped. Precondition: `text` is valid UTF-8.
  void Split(std::string_view text, std::vector<TextSegment>* segments) const;

  // The added token with this id, or nullptr.
  const AddedToken* FindById(int32_t id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Indices into tokens_ bucketed by first byte, longest first, for leftmost-longest search.
  struct Matcher {
    std::vector<std::vector<int>> by_first_byte = std::vector<std::vector<int>>(256);
    bool empty = true;
  };
  // The index of the longest token of `matcher` starting at text[pos], or -1.
  int LongestAt(const Matcher& matcher, std::string_view text, size_t pos) const;
  // Appends the segments of `text` (offsets shifted by `base`) under one matcher.
  void SplitWith(const Matcher& matcher, std::string_view text, size_t base,
                 std::vector<TextSegment>* out) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, int> index_by_id_;
  Matcher raw_;
  Matcher normalized_;
};

}  // namespace quant::tokenizer
