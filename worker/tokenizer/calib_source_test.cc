// Calibration sources: what a path holds, one-line errors naming file and line for each bad
// record, tokenizer_config.json's template, and the packed stream of samples.
#include "worker/tokenizer/calib_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace quant::tokenizer {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using json = nlohmann::json;

class CalibSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("calib_source_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  static std::unique_ptr<Tokenizer> Qwen() {
    auto t = Tokenizer::FromFile(std::string(QUANT_SHARED_DIR) + "/tokenizers/qwen/tokenizer.json");
    EXPECT_TRUE(t.ok()) << t.status();
    return std::move(*t);
  }
  static void ExpectOneLine(const absl::Status& s, const std::string& want) {
    ASSERT_FALSE(s.ok()) << "expected: " << want;
    EXPECT_THAT(std::string(s.message()), HasSubstr(want));
    EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos) << s.message();
  }

  fs::path dir_;
};

TEST_F(CalibSourceTest, ListsFilesAndDirectories) {
  const std::string txt = Write("a.txt", "x");
  absl::StatusOr<CalibSource> s = ListCalibSource(txt);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->plain_text);
  s = ListCalibSource(Write("b.jsonl", "{\"text\":\"x\"}\n"));
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->plain_text);
  EXPECT_TRUE(s->files[0].jsonl);
  Write("notes.md", "ignored");
  s = ListCalibSource(dir_.string());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->plain_text);
  ASSERT_EQ(s->files.size(), 2u);  // name order, .md left out
  EXPECT_EQ(fs::path(s->files[0].path).filename(), "a.txt");
  EXPECT_EQ(fs::path(s->files[1].path).filename(), "b.jsonl");
}

TEST_F(CalibSourceTest, EmptyDirectoryAndOneWithoutDataFiles) {
  fs::create_directories(dir_ / "empty");
  ExpectOneLine(ListCalibSource((dir_ / "empty").string()).status(),
                (dir_ / "empty").string() + ": empty calibration directory");
  Write("other/readme.md", "x");
  ExpectOneLine(ListCalibSource((dir_ / "other").string()).status(),
                (dir_ / "other").string() + ": no .txt or .jsonl file");
}

TEST_F(CalibSourceTest, EachBadRecordIsOneLineWithFileAndLine) {
  auto check = [&](const std::string& name, const std::string& text, const std::string& want) {
    const std::string path = Write(name, text);
    absl::StatusOr<CalibSource> s = ListCalibSource(path);
    ASSERT_TRUE(s.ok());
    ExpectOneLine(CheckCalibSource(*s, 0), path + want);
  };
  check("empty.jsonl", "", ":1: empty calibration file");
  check("blank.jsonl", "\n  \n", ":2: no record, only blank lines");
  check("notjson.jsonl", "{\"text\":\"a\"}\n\n{\"text\": nope}\n", ":3: not JSON");
  check("array.jsonl", "[1]\n", ":1: not a JSON object");
  check("neither.jsonl", "{\"text\":\"a\"}\n{\"prompt\":\"b\"}\n",
        ":2: a record with neither \"text\" nor \"messages\"");
  check("type.jsonl", "{\"text\":3}\n", ":1: \"text\" is not a string");
  check("role.jsonl", "{\"messages\":[{\"content\":\"x\"}]}\n",
        ":1: \"messages\"[0] is not an object with a string \"role\"");
  // In a directory: an empty .txt file is named with its line too.
  Write("d/a.jsonl", "{\"text\":\"a\"}\n");
  const std::string empty_txt = Write("d/b.txt", "");
  absl::StatusOr<CalibSource> s = ListCalibSource((dir_ / "d").string());
  ASSERT_TRUE(s.ok());
  ExpectOneLine(CheckCalibSource(*s, 0), empty_txt + ":1: empty calibration file");
  // --calib-samples 1 stops before the bad file.
  EXPECT_TRUE(CheckCalibSource(*s, 1).ok());
}

TEST_F(CalibSourceTest, TokenizerConfig) {
  absl::StatusOr<ChatTemplateConfig> c = ParseTokenizerConfig(
      R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": "{{ bos_token }}x"})",
      "m/tokenizer_config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->bos_token, "<s>");
  EXPECT_EQ(c->eos_token, "</s>");
  ASSERT_TRUE(c->has_template && c->chat_template.has_value());
  EXPECT_EQ(*c->chat_template->Render({{"bos_token", "<s>"}}), "<s>x");
  c = ParseTokenizerConfig(
      R"({"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]})",
      "cfg");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c->chat_template->Render(json::object()), "d");
  c = ParseTokenizerConfig(R"({"chat_template": "{{ x|tojson }}"})", "cfg");
  ASSERT_TRUE(c.ok());  // refused when a chat record needs it, not before
  EXPECT_THAT(std::string(c->template_error.message()), HasSubstr("'|tojson'"));
  ExpectOneLine(ParseTokenizerConfig("nope", "m/tokenizer_config.json").status(),
                "m/tokenizer_config.json: not a JSON object");
}

// Text records: encoded with the post-processor's BOS, which is dropped (the window brings its
// own), truncated to one window body, each followed by EOS; --calib-samples caps the records.
TEST_F(CalibSourceTest, PacksTextRecords) {
  std::unique_ptr<Tokenizer> tok = Qwen();
  const std::string a = "In the beginning God created the heaven and the earth.";
  const std::string b = "And the earth was without form, and void.";
  const std::string path =
      Write("t.jsonl", json({{"text", a}}).dump() + "\n\n" + json({{"text", b}}).dump() + "\n");
  absl::StatusOr<CalibSource> s = ListCalibSource(path);
  ASSERT_TRUE(s.ok());
  PackOptions o;
  o.window_tokens = 256;
  o.bos_id = 0;
  o.eos_id = 1;
  absl::StatusOr<PackedCalib> p = PackCalibSamples(*tok, *s, o);
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<int32_t> want = tok->Encode(a, false);
  want.push_back(1);
  std::vector<int32_t> ib = tok->Encode(b, false);
  want.insert(want.end(), ib.begin(), ib.end());
  want.push_back(1);
  EXPECT_EQ(p->ids, want);
  EXPECT_EQ(p->samples, 2);

  o.max_samples = 1;
  o.window_tokens = 5;  // truncated to 4 ids + EOS
  p = PackCalibSamples(*tok, *s, o);
  ASSERT_TRUE(p.ok());
  std::vector<int32_t> first(want.begin(), want.begin() + 4);
  first.push_back(1);
  EXPECT_EQ(p->ids, first);
}

TEST_F(CalibSourceTest, ChatRecordsUseTheTemplateOrSayWhyNot) {
  std::unique_ptr<Tokenizer> tok = Qwen();
  const json chat = {
      {"messages",
       {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello"}}}}};
  const std::string path = Write("c.jsonl", "{\"text\":\"x\"}\n" + chat.dump() + "\n");
  absl::StatusOr<CalibSource> s = ListCalibSource(path);
  ASSERT_TRUE(s.ok());
  PackOptions o;
  o.bos_id = 0;
  o.eos_id = 1;

  absl::StatusOr<ChatTemplateConfig> cfg = ParseTokenizerConfig(
      json({{"bos_token", "<|begin_of_text|>"},
            {"chat_template",
             "{{ bos_token }}{% for m in messages %}{{ '<|' + m.role + '|>' + m.content }}"
             "{% endfor %}{{ '<|end_of_text|>' }}"}})
          .dump(),
      "m/tokenizer_config.json");
  ASSERT_TRUE(cfg.ok());
  o.chat = &*cfg;
  absl::StatusOr<PackedCalib> p = PackCalibSamples(*tok, *s, o);
  ASSERT_TRUE(p.ok()) << p.status();
  // The chat: <|user|>Hi<|assistant|>Hello<|end_of_text|>, its BOS dropped, no second EOS.
  std::vector<int32_t> want = tok->Encode("x", false);
  want.push_back(1);
  std::vector<int32_t> c = tok->Encode("<|user|>Hi<|assistant|>Hello<|end_of_text|>", false);
  want.insert(want.end(), c.begin(), c.end());
  EXPECT_EQ(p->ids, want);
  EXPECT_EQ(c[0], 3);  // <|user|> is matched as the special token

  absl::StatusOr<ChatTemplateConfig> bad = ParseTokenizerConfig(
      R"({"chat_template": "{{ messages|tojson }}"})", "m/tokenizer_config.json");
  ASSERT_TRUE(bad.ok());
  o.chat = &*bad;
  ExpectOneLine(PackCalibSamples(*tok, *s, o).status(),
                path +
                    ":2: the chat template of m/tokenizer_config.json cannot be rendered here: "
                    "line 1: filter '|tojson' is not supported");
  absl::StatusOr<ChatTemplateConfig> none = ParseTokenizerConfig("{}", "m/tokenizer_config.json");
  o.chat = &*none;
  ExpectOneLine(PackCalibSamples(*tok, *s, o).status(),
                path +
                    ":2: a \"messages\" record, but the model has no chat template in "
                    "m/tokenizer_config.json");
  o.chat = nullptr;
  ExpectOneLine(PackCalibSamples(*tok, *s, o).status(), path + ":2: a \"messages\" record");
}

}  // namespace
}  // namespace quant::tokenizer
