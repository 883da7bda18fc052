// Added-token matching, following HF tokenizers' AddedVocabulary::find_matches, including its
// single_word / lstrip / rstrip rules (Unicode classes come from Oniguruma, not our own tables).
#include "worker/tokenizer/added_vocabulary.h"

#include <algorithm>
#include <memory>

#include "worker/tokenizer/regex.h"

namespace quant::tokenizer {
namespace {

// Rust's char::is_whitespace (the White_Space property) and is_alphanumeric plus '_', which
// HF's single_word / lstrip / rstrip rules use.
const Regex& WhitespaceChar() {
  static const Regex* re = Regex::Compile(R"(\p{White_Space})").value().release();
  return *re;
}
const Regex& WordChar() {
  static const Regex* re = Regex::Compile(R"([\p{Alphabetic}\p{N}_])").value().release();
  return *re;
}

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Start of the character that ends at text[end - 1]. Precondition: end > 0.
size_t PreviousCharStart(std::string_view text, size_t end) {
  size_t pos = end - 1;
  while (pos > 0 && IsContinuationByte(text[pos])) --pos;
  return pos;
}

bool EndsWithWordChar(std::string_view text, size_t end) {
  return end > 0 && WordChar().MatchAt(text, PreviousCharStart(text, end)) > 0;
}

bool StartsWithWordChar(std::string_view text, size_t begin) {
  return begin < text.size() && WordChar().MatchAt(text, begin) > 0;
}

// Start of the whitespace run that ends at `end` (== end when there is none).
size_t WhitespaceRunStart(std::string_view text, size_t end) {
  while (end > 0) {
    const size_t prev = PreviousCharStart(text, end);
    if (WhitespaceChar().MatchAt(text, prev) <= 0) break;
    end = prev;
  }
  return end;
}

// End of the whitespace run that starts at `begin` (== begin when there is none).
size_t WhitespaceRunEnd(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    const int len = WhitespaceChar().MatchAt(text, begin);
    if (len <= 0) break;
    begin += static_cast<size_t>(len);
  }
  return begin;
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (int i = 0; i < static_cast<int>(tokens_.size()); ++i) {
    const AddedToken& token = tokens_[i];
    index_by_id_.try_emplace(token.id, i);
    if (token.content.empty()) continue;
    Matcher& matcher = token.normalized ? normalized_ : raw_;
    matcher.by_first_byte[static_cast<unsigned char>(token.content[0])].push_back(i);
    matcher.empty = false;
  }
  for (Matcher* matcher : {&raw_, &normalized_}) {
    for (std::vector<int>& bucket : matcher->by_first_byte) {
      std::stable_sort(bucket.begin(), bucket.end(), [this](int a, int b) {
        return tokens_[a].content.size() > tokens_[b].content.size();
      });
    }
  }
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? nullptr : &tokens_[it->second];
}

int AddedVocabulary::LongestAt(const Matcher& matcher, std::string_view text, size_t pos) const {
  for (const int index : matcher.by_first_byte[static_cast<unsigned char>(text[pos])]) {
    if (text.substr(pos).starts_with(tokens_[index].content)) return index;
  }
  return -1;
}

void AddedVocabulary::SplitWith(const Matcher& matcher, std::string_view text, size_t base,
                                std::vector<TextSegment>* out) const {
  size_t plain_begin = 0;  // HF's start_offset: where the current plain run starts
  size_t pos = 0;
  while (pos < text.size()) {
    const int index = LongestAt(matcher, text, pos);
    if (index < 0) {
      ++pos;  // token contents are valid UTF-8, so they cannot match mid-character
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + token.content.size();
    // The scan goes on after the match even when single_word rejects it (aho-corasick's
    // non-overlapping iteration in HF).
    pos = stop;
    if (token.single_word && (EndsWithWordChar(text, start) || StartsWithWordChar(text, stop))) {
      continue;
    }
    if (token.lstrip) start = std::max(WhitespaceRunStart(text, start), plain_begin);
    if (token.rstrip) {
      stop = WhitespaceRunEnd(text, stop);
      // HF would let the next match overlap the swallowed spaces; resuming after them keeps
      // every byte in exactly one segment.
      pos = stop;
    }
    if (plain_begin < start) out->push_back({base + plain_begin, base + start, -1});
    out->push_back({base + start, base + stop, token.id});
    plain_begin = stop;
  }
  if (plain_begin < text.size()) out->push_back({base + plain_begin, base + text.size(), -1});
}

void AddedVocabulary::Split(std::string_view text, std::vector<TextSegment>* segments) const {
  segments->clear();
  if (text.empty()) return;
  if (raw_.empty) {
    segments->push_back({0, text.size(), -1});
  } else {
    SplitWith(raw_, text, 0, segments);
  }
  if (normalized_.empty) return;
  std::vector<TextSegment> first_pass;
  first_pass.swap(*segments);
  for (const TextSegment& segment : first_pass) {
    if (segment.token_id >= 0) {
      segments->push_back(segment);
    } else {
      SplitWith(normalized_, text.substr(segment.begin, segment.end - segment.begin), segment.begin,
                segments);
    }
  }
}

}  // namespace quant::tokenizer
