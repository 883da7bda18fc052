// The table is GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other
// 68 bytes to U+0100.. in byte order, so every byte becomes a visible, non-space character.
#include "worker/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

namespace quant::tokenizer {
namespace {

// Code points past the table's range (it ends at U+0143) never decode.
constexpr int kMaxMappedCodePoint = 0x200;

struct ByteTables {
  std::array<std::string, 256> utf8_of_byte;
  std::array<int16_t, kMaxMappedCodePoint> byte_of_code_point;
};

bool MapsToItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

std::string EncodeCodePoint(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {  // the table stays below U+0800: two bytes suffice
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

ByteTables BuildTables() {
  ByteTables t;
  t.byte_of_code_point.fill(-1);
  int next_extra = 0;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = MapsToItself(b) ? static_cast<uint32_t>(b) : 256u + next_extra++;
    t.utf8_of_byte[b] = EncodeCodePoint(cp);
    t.byte_of_code_point[cp] = static_cast<int16_t>(b);
  }
  return t;
}

const ByteTables& Tables() {
  static const ByteTables* tables = new ByteTables(BuildTables());
  return *tables;
}

}  // namespace

void ByteLevelEncode(std::string_view bytes, std::string* out) {
  const ByteTables& t = Tables();
  for (const char c : bytes) out->append(t.utf8_of_byte[static_cast<unsigned char>(c)]);
}

bool ByteLevelDecode(std::string_view token, std::string* out) {
  const ByteTables& t = Tables();
  const size_t start_size = out->size();
  size_t i = 0;
  while (i < token.size()) {
    const auto b0 = static_cast<unsigned char>(token[i]);
    uint32_t cp = 0;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      cp = kMaxMappedCodePoint;  // three- and four-byte characters are never in the table
    }
    if (cp >= kMaxMappedCodePoint || t.byte_of_code_point[cp] < 0) {
      out->resize(start_size);
      return false;
    }
    out->push_back(static_cast<char>(t.byte_of_code_point[cp]));
  }
  return true;
}

}  // namespace quant::tokenizer
