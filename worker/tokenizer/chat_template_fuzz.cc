// Fuzz target for the outside input of calibration data: arbitrary bytes as a chat template
// (parsed, then rendered over fixed chats) and as .jsonl lines; errors are fine, crashes and
// multi-line messages are not.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "worker/tokenizer/calib_source.h"
#include "worker/tokenizer/chat_template.h"

namespace {

using json = nlohmann::json;

void CheckOneLine(const absl::Status& s) {
  QUANT_CHECK(std::string(s.message()).find('\n') == std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<quant::tokenizer::ChatTemplate> t = quant::tokenizer::ChatTemplate::Parse(input);
  if (!t.ok()) {
    CheckOneLine(t.status());
  } else {
    const json chats[] = {
        json::array({{{"role", "system"}, {"content", "s"}},
                     {{"role", "user"}, {"content", "u"}},
                     {{"role", "assistant"}, {"content", "a"}}}),
        json::array({{{"role", "user"}, {"content", json::array({{{"type", "text"}}})}},
                     {{"role", "tool"}, {"content", nullptr}}}),
    };
    for (const json& messages : chats) {
      for (const bool prompt : {false, true}) {
        absl::StatusOr<std::string> out = t->Render(
            {{"messages", messages}, {"add_generation_prompt", prompt}, {"bos_token", "<s>"}});
        if (!out.ok()) CheckOneLine(out.status());
      }
    }
  }
  // The same bytes as lines of a .jsonl file.
  size_t start = 0;
  int64_t line_no = 0;
  while (start <= input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    auto record =
        quant::tokenizer::ParseJsonlLine(input.substr(start, end - start), "fuzz.jsonl", ++line_no);
    if (!record.ok()) CheckOneLine(record.status());
    start = end + 1;
  }
  (void)quant::tokenizer::ParseTokenizerConfig(input, "tokenizer_config.json");
  return 0;
}
