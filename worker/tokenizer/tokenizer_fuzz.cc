// Fuzz target: arbitrary bytes as tokenizer.json. Whatever loads must encode (fixed texts and
// the input bytes themselves, often invalid UTF-8) and decode without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "worker/tokenizer/tokenizer.h"

namespace {

constexpr std::string_view kTexts[] = {
    "",
    "Hello world 12345 --the-- Word word swordfish",
    "a <mask> b<mask>c <|bos|>x<|eos|>",
    "  tabs\tand\nnew lines\r\n  ",
    "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xC2\xA0",
    "hello world held hold",
};

void CheckIds(const quant::tokenizer::Tokenizer& tokenizer, std::string_view text) {
  for (const bool special : {false, true}) {
    const auto ids = tokenizer.Encode(text, special);
    for (const int32_t id : ids) QUANT_CHECK(id >= 0 && id < tokenizer.vocab_size());
    (void)tokenizer.Decode(ids);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto tokenizer = quant::tokenizer::Tokenizer::FromJson(input, "fuzz input");
  if (!tokenizer.ok()) return 0;
  for (const std::string_view text : kTexts) CheckIds(**tokenizer, text);
  // The first bytes of the file as text: exercises invalid UTF-8 and odd characters.
  CheckIds(**tokenizer, input.substr(0, 256));
  (void)(*tokenizer)->Decode({-1, 0, 1, 1 << 30});  // unknown ids are skipped
  return 0;
}
