// Pre-tokenizer steps of a tokenizer.json (Split with a regex or literal, ByteLevel) and HF's
// rules for turning pattern matches into pieces (SplitDelimiterBehavior, invert).
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/regex.h"

namespace quant::tokenizer {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// "Removed", "Isolated", ... as tokenizer.json spells them; InvalidArgument otherwise.
absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name);

// A stretch of text and whether the pattern matched it.
struct MatchSegment {
  size_t begin = 0;
  size_t end = 0;
  bool is_match = false;
};

// HF's Pattern::find_matches: the matches plus the gaps between them, covering [0, text_size);
// `invert` flips which of them count as matches (Split's invert flag).
std::vector<MatchSegment> MatchesToSegments(size_t text_size,
                                            const std::vector<std::pair<size_t, size_t>>& matches,
                                            bool invert);

// HF's NormalizedString::split: the [begin, end) pieces the behavior keeps, in order. Pieces may
// be empty; the caller drops those (as PreTokenizedString::split does).
std::vector<std::pair<size_t, size_t>> ApplySplitBehavior(const std::vector<MatchSegment>& segments,
                                                          SplitBehavior behavior);

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel };
  Kind kind = Kind::kSplit;
  // Split: the pattern. ByteLevel: GPT-2's regex when use_regex is set, else null.
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;  // Split only; ByteLevel isolates
  bool invert = false;                                // Split only
  bool add_prefix_space = false;                      // ByteLevel only
};

}  // namespace quant::tokenizer
