// The subset of Jinja that Hugging Face chat templates (tokenizer_config.json "chat_template")
// of DeepSeek-V3, Kimi-K2 and Qwen3 use, so calibration chats render with no Python at run time.
// Anything outside the subset is refused when the template is parsed, with its line.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace quant::tokenizer {

// Supported (as transformers' apply_chat_template runs Jinja: trim_blocks and lstrip_blocks on):
//   {{ expr }}, {% if/elif/else/endif %}, {% for x in expr %}...{% endfor %} (with loop.index,
//   index0, first, last, length), {% set name = expr %}, {% set ns.attr = expr %}, {# #},
//   whitespace control ({%- -%} {{- -}}); expressions: string/number/true/false/none literals,
//   [lists], names, x.attr, x['key'], x[i], x[a:b:c], + - ~ == != < > <= >= and or not in,
//   `not in`, `is [not] defined|undefined|none|string|number|mapping|sequence`,
//   filters trim, length, string, and the call namespace(k=v, ...).
// Refused with "line N: ...": macros, blocks, includes, other filters, method calls (.split())
// and other functions, `x if c else y`, break/continue.
class ChatTemplate {
 public:
  // Errors: InvalidArgument "line N: <what is missing or wrong>".
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  // Renders with `context`'s keys as variables (messages, add_generation_prompt, bos_token,
  // eos_token...). Errors: InvalidArgument "line N: ..." (an undefined value used, a type
  // mismatch), or the output passing 16 MiB.
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

  struct Node;  // the parsed template (chat_template.cc)

 private:
  std::shared_ptr<const Node> root_;
};

}  // namespace quant::tokenizer
