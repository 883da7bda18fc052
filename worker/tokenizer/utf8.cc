// UTF-8 well-formedness per Unicode 15 table 3-7 (the ranges that exclude overlongs, surrogates
// and code points above U+10FFFF).
#include "worker/tokenizer/utf8.h"

namespace quant::tokenizer {

size_t Utf8SequenceLength(std::string_view s, size_t pos, size_t* bad_len_bytes) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return 1;
  size_t continuation_bytes = 0;
  unsigned char second_lo = 0x80;
  unsigned char second_hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    continuation_bytes = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    continuation_bytes = 2;
    if (b0 == 0xE0) second_lo = 0xA0;  // no overlongs
    if (b0 == 0xED) second_hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    continuation_bytes = 3;
    if (b0 == 0xF0) second_lo = 0x90;  // no overlongs
    if (b0 == 0xF4) second_hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *bad_len_bytes = 1;
    return 0;
  }
  size_t i = 1;
  for (; i <= continuation_bytes; ++i) {
    if (pos + i >= s.size()) break;
    const auto c = static_cast<unsigned char>(s[pos + i]);
    const unsigned char lo = i == 1 ? second_lo : 0x80;
    const unsigned char hi = i == 1 ? second_hi : 0xBF;
    if (c < lo || c > hi) break;
  }
  if (i == continuation_bytes + 1) return i;
  *bad_len_bytes = i;
  return 0;
}

bool IsValidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    // Plain ASCII dominates real text: skip it without the general decoder.
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    size_t bad = 0;
    const size_t len = Utf8SequenceLength(s, pos, &bad);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

std::string Utf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    size_t bad = 0;
    const size_t len = Utf8SequenceLength(s, pos, &bad);
    if (len > 0) {
      out.append(s.substr(pos, len));
      pos += len;
    } else {
      out.append(kReplacementChar);
      pos += bad;
    }
  }
  return out;
}

}  // namespace quant::tokenizer
