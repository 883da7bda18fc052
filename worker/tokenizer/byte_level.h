// GPT-2's reversible byte <-> code point table, used by the ByteLevel pre-tokenizer (bytes to
// printable characters before BPE) and the ByteLevel decoder (back to bytes).
#pragma once

#include <string>
#include <string_view>

namespace quant::tokenizer {

// GPT-2's ByteLevel regex, which HF's ByteLevel pre-tokenizer applies when use_regex is true.
inline constexpr std::string_view kByteLevelRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Appends, for every byte of `bytes`, the UTF-8 of the code point it maps to.
void ByteLevelEncode(std::string_view bytes, std::string* out);

// Appends the bytes behind `token`'s characters and returns true; returns false (appending
// nothing) when some character is outside the table.
bool ByteLevelDecode(std::string_view token, std::string* out);

}  // namespace quant::tokenizer
