// Ports of HF tokenizers' Pattern::find_matches and NormalizedString::split behaviours, so that
// merged and removed delimiters fall where the Rust library puts them.
#include "worker/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/string_view_compat.h"

namespace quant::tokenizer {

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("unknown split behavior \"", ToAbsl(name), "\""));
}

std::vector<MatchSegment> MatchesToSegments(size_t text_size,
                                            const std::vector<std::pair<size_t, size_t>>& matches,
                                            bool invert) {
  std::vector<MatchSegment> segments;
  if (text_size == 0) {
    segments.push_back({0, 0, invert});
    return segments;
  }
  segments.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (prev != begin) segments.push_back({prev, begin, invert});
    segments.push_back({begin, end, !invert});
    prev = end;
  }
  if (prev != text_size) segments.push_back({prev, text_size, invert});
  return segments;
}

std::vector<std::pair<size_t, size_t>> ApplySplitBehavior(const std::vector<MatchSegment>& segments,
                                                          SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> pieces;
  pieces.reserve(segments.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const MatchSegment& s : segments) pieces.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::kRemoved:
      for (const MatchSegment& s : segments) {
        if (!s.is_match) pieces.emplace_back(s.begin, s.end);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const MatchSegment& s : segments) {
        if (s.is_match == previous_match && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const MatchSegment& s : segments) {
        if (s.is_match && !previous_match && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // HF folds from the right: a match joins the piece that follows it.
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().first = it->begin;
        } else {
          pieces.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  return pieces;
}

namespace {

// tokenizer.json files spell the regexes' CR and LF either as escapes ("\\r") or as the
// characters themselves (DeepSeek-V3's own file does the latter); Oniguruma reads both alike.
std::string CanonicalRegex(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size());
  for (const char c : pattern) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// The Split sequences checked never to join pieces across a line start (pre_tokenizer.h). The
// shared ds and qwen tokenizers (../shared/tokenizers) carry the first two.
const std::vector<std::vector<std::string>>& LineSafeSplitSequences() {
  static const auto* sequences = new std::vector<std::vector<std::string>>{
      // DeepSeek-V3: digit runs of 1-3, CJK runs, then words, punctuation and whitespace.
      {R"(\p{N}{1,3})", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
       R"RE([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)RE"},
      // Qwen2.
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
      // Llama-3: Qwen2's with digit runs of 1-3.
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
  };
  return *sequences;
}

}  // namespace

bool SplitsAtLineStarts(const std::vector<PreTokenizerStep>& steps) {
  std::vector<std::string> splits;
  bool byte_level_seen = false;
  for (const PreTokenizerStep& step : steps) {
    if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
      // A regex here would split the mapped bytes again; a prefix space changes a piece's start.
      if (step.regex != nullptr || step.add_prefix_space) return false;
      byte_level_seen = true;
      continue;
    }
    // A Split after ByteLevel sees mapped bytes ('\n' as U+010A), not the text.
    if (byte_level_seen || step.regex_source.empty() || step.invert ||
        step.behavior != SplitBehavior::kIsolated) {
      return false;
    }
    splits.push_back(CanonicalRegex(step.regex_source));
  }
  for (const std::vector<std::string>& known : LineSafeSplitSequences()) {
    if (splits == known) return true;
  }
  return false;
}

}  // namespace quant::tokenizer
