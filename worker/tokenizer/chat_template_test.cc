// The chat-template renderer against strings rendered by Python's jinja2 3.1 (trim_blocks and
// lstrip_blocks on, as transformers' apply_chat_template runs it) from the fixtures in
// testdata/chat_templates, and the one-line refusals of what the subset leaves out.
#include "worker/tokenizer/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

namespace quant::tokenizer {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string Fixture(const std::string& name) {
  const std::string path =
      std::string(QUANT_SOURCE_DIR) + "/worker/tokenizer/testdata/chat_templates/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Render(const std::string& source, const json& context) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return "";
  absl::StatusOr<std::string> out = t->Render(context);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : "";
}

const json kChat = json::array({{{"role", "system"}, {"content", "Be brief."}},
                                {{"role", "user"}, {"content", "Hi  "}},
                                {{"role", "assistant"}, {"content", "Hello!"}}});
const json kToolChat = json::array(
    {{{"role", "user"}, {"content", "Hi"}},
     {{"role", "assistant"}, {"content", "Sure."}, {"reasoning_content", "  think  "}},
     {{"role", "tool"}, {"content", "42"}},
     {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "part"}}})}}});
constexpr char kBos[] =
    "<\xEF\xBD\x9C"
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

json Context(const json& messages, bool generation_prompt) {
  return {{"messages", messages},
          {"add_generation_prompt", generation_prompt},
          {"bos_token", kBos},
          {"eos_token", "<|eot|>"}};
}

TEST(ChatTemplateTest, Qwen3Style) {
  const std::string t = Fixture("qwen3.jinja");
  EXPECT_EQ(Render(t, Context(kChat, false)),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi  <|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
  EXPECT_EQ(Render(t, Context(kChat, true)),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi  <|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n");
  // Non-string content renders as '' (the `is string` test).
  EXPECT_EQ(Render(t, Context(kToolChat, false)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nSure.<|im_end|>\n"
            "<|im_start|>user\n<|im_end|>\n");
  // Reasoning after the last user turn: messages[::-1], loop.index0, namespace, |trim.
  json c = Context(
      json::array(
          {{{"role", "user"}, {"content", "Q"}},
           {{"role", "assistant"}, {"content", " A "}, {"reasoning_content", "  think  "}}}),
      true);
  c["enable_thinking"] = false;
  EXPECT_EQ(Render(t, c),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nthink\n</think>\n\n"
            "A<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplateTest, DeepSeekV3Style) {
  const std::string t = Fixture("deepseek_v3.jinja");
  const std::string want = std::string(kBos) +
                           "Be brief.<\xEF\xBD\x9CUser\xEF\xBD\x9C>Hi  <\xEF\xBD\x9C"
                           "Assistant\xEF\xBD\x9C>Hello!<\xEF\xBD\x9C"
                           "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
  EXPECT_EQ(Render(t, Context(kChat, false)), want);
  EXPECT_EQ(Render(t, Context(kChat, true)), want +
                                                 "<\xEF\xBD\x9C"
                                                 "Assistant\xEF\xBD\x9C>");
  // A list content concatenated with '+': jinja2 raises TypeError; so do we, with the line.
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(t);
  ASSERT_TRUE(parsed.ok());
  absl::StatusOr<std::string> out = parsed->Render(Context(kToolChat, false));
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("line 1: '+' of a string and a array"));
}

TEST(ChatTemplateTest, KimiK2Style) {
  const std::string t = Fixture("kimi_k2.jinja");
  EXPECT_EQ(Render(t, Context(kChat, false)),
            "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>user<|im_middle|>Hi  "
            "<|im_end|><|im_assistant|>assistant<|im_middle|>Hello!<|im_end|>");
  EXPECT_EQ(Render(t, Context(kToolChat, true)),
            "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot "
            "AI.<|im_end|><|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant"
            "<|im_middle|>Sure.<|im_end|><|im_system|>tool<|im_middle|>42<|im_end|><|im_user|>"
            "user<|im_middle|>part<|im_end|><|im_assistant|>assistant<|im_middle|>");
}

// Loop variables, slices, lists, in / not in, is none, an undefined name printing as '', and
// trim_blocks / lstrip_blocks (a comment does not make a line start).
TEST(ChatTemplateTest, ExpressionsAndWhitespace) {
  const std::string src =
      "{% for m in messages %}\n  {{ loop.index }}/{{ loop.length }} {{ m.role|length }} "
      "{{ m['role'][1:3] }}{% if not loop.last %},{% endif %}\n\n{% endfor %}\n{# c #}  "
      "{% set x = [1, 2] + [3] %}{{ x|length ~ '|' ~ (x[-1] - 1) ~ '|' ~ ('b' in 'abc') ~ '|' "
      "~ (4 not in x) ~ (none is none) ~ undefined_name ~ '\\t' }}";
  EXPECT_EQ(Render(src, {{"messages", json::array({{{"role", "user"}}, {{"role", "assistant"}}})}}),
            "  1/2 4 se,\n  2/2 9 ss\n  3|2|True|TrueTrue\t");
}

// A plain `set` in a loop does not outlive the iteration; a namespace's attribute does.
TEST(ChatTemplateTest, LoopScope) {
  EXPECT_EQ(Render("{% set a = 'out' %}{% set ns = namespace(n=0) %}{% for m in messages %}"
                   "{% set a = 'in' %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ a }} {{ ns.n }}",
                   {{"messages", json::array({1, 2, 3})}}),
            "out 3");
}

TEST(ChatTemplateTest, RefusesWhatTheSubsetLacksWithItsLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"a\n{% macro f() %}{% endmacro %}", "line 2: tag '{% macro %}' is not supported"},
      {"{{ messages|tojson }}", "line 1: filter '|tojson' is not supported"},
      {"\n\n{{ m.content.split('x') }}", "line 3: method call '.split()' is not supported"},
      {"{{ raise_exception('no') }}", "line 1: function 'raise_exception()' is not supported"},
      {"{{ 'a' if b else 'c' }}", "line 1: conditional expression"},
      {"{% if x %}", "template ends before '{% endif %}'"},
      {"{% endfor %}", "line 1: 'endfor' without its opening tag"},
      {"{{ x", "line 1: '{{' is never closed"},
      {"{% for a, b in x %}{% endfor %}", "several names"},
      {"{{ 2 * 3 }}", "operator '*' is not supported"},
      {"{{ x is divisibleby }}", "test 'is divisibleby' is not supported"},
  };
  for (const auto& [src, want] : cases) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(src);
    ASSERT_FALSE(t.ok()) << src;
    EXPECT_THAT(t.status().message(), HasSubstr(want)) << src;
    EXPECT_EQ(std::string(t.status().message()).find('\n'), std::string::npos);
  }
}

TEST(ChatTemplateTest, RenderErrorsNameTheLine) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("ok\n{{ messages[0].x.y }}");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::string> out = t->Render({{"messages", json::array({json::object()})}});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("line 2:"));
}

}  // namespace
}  // namespace quant::tokenizer
