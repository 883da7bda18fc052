// Pre-tokenizer steps of a tokenizer.json (Split with a regex or literal, ByteLevel) and HF's
// rules for turning pattern matches into pieces (SplitDelimiterBehavior, invert).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
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
  std::string regex_source;  // Split with a {"Regex": ...} pattern: its text; else empty
  SplitBehavior behavior = SplitBehavior::kIsolated;  // Split only; ByteLevel isolates
  bool invert = false;                                // Split only
  bool add_prefix_space = false;                      // ByteLevel only
};

// Whether pieces of `steps` never join across a line start: a '\n' followed by a character
// that `\s` does not match. True only for the Split sequences whose regexes were checked by
// hand for it (DeepSeek-V3's three, Qwen2's one, Llama-3's one, in that order, each Isolated
// and not inverted), followed only by ByteLevel steps without a regex or a prefix space.
// Why those: only `\s`, `[\r\n]` and the lookahead `(?!\S)` can match or look at a '\n' and
// what follows it, and what follows the cut is not `\s`, so no match crosses the cut. A match
// holding the '\n' comes from `\s*[\r\n]+` or ` ?[...]+[\r\n]*`, tried before `\s+(?!\S)`,
// and ends right after the '\n' whether the text goes on or ends there; since `\s*[\r\n]+`
// matches at the '\n' itself, some match always ends at the cut. With no lookbehind, the matches
// after the cut are those of the rest on its own. DeepSeek-V3's digit and CJK regexes never
// match a '\n'. Other regexes are not assumed safe: GPT-2's ByteLevel regex alone splits
// "  \n" + "x" into "  ", "\n", "x" but "  \n" at the end of a text into one piece.
bool SplitsAtLineStarts(const std::vector<PreTokenizerStep>& steps);

}  // namespace quant::tokenizer
