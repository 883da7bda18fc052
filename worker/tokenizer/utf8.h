// UTF-8 well-formedness helpers shared by the tokenizer pipeline: input sanitizing, per-character
// stepping, and the lossy decode that Hugging Face's ByteLevel decoder ends with.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace quant::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length (1..4) of the well-formed UTF-8 sequence starting at s[pos], or 0 when it is
// ill-formed; then *bad_len_bytes (>= 1) is the length of its maximal subpart, the unit that
// Unicode 15 section 3.9 (and Rust's from_utf8_lossy) replaces with one U+FFFD.
// Precondition: pos < s.size().
size_t Utf8SequenceLength(std::string_view s, size_t pos, size_t* bad_len_bytes);

bool IsValidUtf8(std::string_view s);

// `s` with each maximal ill-formed subpart replaced by U+FFFD.
std::string Utf8Lossy(std::string_view s);

}  // namespace quant::tokenizer
