// Tests for the tokenizer.json BPE tokenizer: exact ids against HF's reference encodings for
// both shared tokenizers, decoding, error reports, and the pieces (BPE, splits, added tokens).
#include "worker/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "worker/tokenizer/bpe_model.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/utf8.h"

namespace quant::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kShared = QUANT_SHARED_DIR;
const std::string kTestdata = std::string(QUANT_SOURCE_DIR) + "/worker/tokenizer/testdata";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::unique_ptr<Tokenizer> Load(const std::string& path) {
  auto tokenizer = Tokenizer::FromFile(path);
  if (!tokenizer.ok()) {
    ADD_FAILURE() << tokenizer.status();
    return nullptr;
  }
  return *std::move(tokenizer);
}

std::string TokenizerPath(const std::string& name) {
  return kShared + "/tokenizers/" + name + "/tokenizer.json";
}

const json& ReferenceEncodings() {
  static const json* refs =
      new json(json::parse(ReadFile(kShared + "/tokenizers/reference_encodings.json")));
  return *refs;
}

class SharedTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SharedTokenizerTest, MatchesEveryReferenceEncoding) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  const json& cases = ReferenceEncodings().at(GetParam());
  ASSERT_EQ(cases.size(), 94u);
  int matched_plain = 0;
  int matched_special = 0;
  for (const json& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<int32_t>>();
    const auto want_special = c.at("ids_with_special").get<std::vector<int32_t>>();
    const auto got = tokenizer->Encode(text, false);
    const auto got_special = tokenizer->Encode(text, true);
    EXPECT_EQ(got, want) << "text: " << text;
    EXPECT_EQ(got_special, want_special) << "text: " << text;
    matched_plain += got == want;
    matched_special += got_special == want_special;
  }
  EXPECT_EQ(matched_plain, 94);
  EXPECT_EQ(matched_special, 94);
}

TEST_P(SharedTokenizerTest, DecodeRoundTripsEveryReferenceText) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  for (const json& c : ReferenceEncodings().at(GetParam())) {
    const std::string text = c.at("text").get<std::string>();
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text, false)), text);
    EXPECT_EQ(tokenizer->Decode(c.at("ids_with_special").get<std::vector<int32_t>>()),
              "<|begin_of_text|>" + text);
  }
}

TEST_P(SharedTokenizerTest, EmptyText) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_TRUE(tokenizer->Encode("", false).empty());
  EXPECT_THAT(tokenizer->Encode("", true), ElementsAre(0));  // just <|begin_of_text|>
  EXPECT_EQ(tokenizer->Decode({}), "");
  EXPECT_EQ(tokenizer->vocab_size(), 4096);
}

// README: whole-file encodes cut into 255-token windows give 160 kjv_val windows (both) and
// 130 (ds) / 131 (qwen) fortunes_val windows.
TEST_P(SharedTokenizerTest, EvalFilesGiveTheDocumentedWindowCounts) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  const size_t kjv = tokenizer->Encode(ReadFile(kShared + "/data/eval/kjv_val.txt"), false).size();
  const size_t fortunes =
      tokenizer->Encode(ReadFile(kShared + "/data/eval/fortunes_val.txt"), false).size();
  EXPECT_EQ(kjv / 255, 160u);
  EXPECT_EQ(fortunes / 255, GetParam() == "ds" ? 130u : 131u);
}

TEST_P(SharedTokenizerTest, EncodesKjvWellUnderASecond) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  const std::string text = ReadFile(kShared + "/data/eval/kjv_val.txt");
  const auto start = std::chrono::steady_clock::now();
  const size_t tokens = tokenizer->Encode(text, false).size();  // cold cache: the worst case
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(tokens, 40000u);
  // The target is "well under a second"; the bound leaves room for a loaded CI machine.
  EXPECT_LT(seconds, 1.0) << text.size() / seconds / 1e6 << " MB/s";
}

TEST_P(SharedTokenizerTest, ConcurrentEncodesAgree) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  const std::string text = ReadFile(kShared + "/data/eval/fortunes_val.txt");
  std::vector<int32_t> a, b;
  std::thread t1([&] { a = tokenizer->Encode(text, true); });
  std::thread t2([&] { b = tokenizer->Encode(text, true); });
  t1.join();
  t2.join();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, tokenizer->Encode(text, true));
}

TEST_P(SharedTokenizerTest, InvalidUtf8IsReplacedLikeLossyDecoding) {
  auto tokenizer = Load(TokenizerPath(GetParam()));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("a\xFF"
                              "b\xE6\x97",
                              false),
            tokenizer->Encode("a\xEF\xBF\xBD"
                              "b\xEF\xBF\xBD",
                              false));
}

INSTANTIATE_TEST_SUITE_P(Both, SharedTokenizerTest, ::testing::Values("ds", "qwen"),
                         [](const auto& info) { return info.param; });

TEST(SharedTokenizerFilesTest, ModelDirectoriesCarryTheSameTokenizers) {
  const std::string text = "In the beginning God created the heaven and the earth. 12345";
  for (const auto& [model, name] : std::vector<std::pair<std::string, std::string>>{
           {"tiny-deepseek-v3", "ds"}, {"tiny-qwen3-moe", "qwen"}}) {
    auto from_model = Load(kShared + "/models/" + model + "/tokenizer.json");
    auto shared = Load(TokenizerPath(name));
    ASSERT_NE(from_model, nullptr);
    ASSERT_NE(shared, nullptr);
    EXPECT_EQ(from_model->Encode(text, true), shared->Encode(text, true)) << model;
  }
}

// ---- errors name the file and the problem ---------------------------------------------

// A valid minimal tokenizer.json with `patch` merged over it (null deletes a key).
std::string MinimalJson(const json& patch) {
  json j = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}},
      {"pre_tokenizer",
       {{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Isolated"}}}};
  j.merge_patch(patch);
  return j.dump();
}

TEST(TokenizerErrorsTest, MinimalJsonLoads) {
  auto tokenizer = Tokenizer::FromJson(MinimalJson(json::object()), "mini.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->Encode("abab a", false), ElementsAre(2, 2, 0));  // " " unknown: dropped
}

TEST(TokenizerErrorsTest, UnreadableFile) {
  auto missing = Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/dir/tokenizer.json"));
  auto directory = Tokenizer::FromFile(kTestdata);
  EXPECT_FALSE(directory.ok());
  EXPECT_THAT(directory.status().message(), HasSubstr(kTestdata));
}

TEST(TokenizerErrorsTest, NotJson) {
  auto t = Tokenizer::FromJson("{\"model\": ", "broken.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("broken.json: not valid JSON"));
  EXPECT_THAT(Tokenizer::FromJson("[1, 2]", "array.json").status().message(),
              HasSubstr("array.json: top level"));
}

TEST(TokenizerErrorsTest, MissingModelOrVocab) {
  auto no_model = Tokenizer::FromJson(MinimalJson({{"model", nullptr}}), "x.json");
  EXPECT_THAT(no_model.status().message(), HasSubstr("x.json: model: missing"));
  auto no_vocab = Tokenizer::FromJson(MinimalJson({{"model", {{"vocab", nullptr}}}}), "x.json");
  EXPECT_THAT(no_vocab.status().message(), HasSubstr("x.json: model.vocab: missing"));
  auto bad_id =
      Tokenizer::FromJson(MinimalJson({{"model", {{"vocab", {{"a", "zero"}}}}}}), "x.json");
  EXPECT_THAT(bad_id.status().message(), HasSubstr("model.vocab[\"a\"]"));
}

TEST(TokenizerErrorsTest, UnsupportedModelType) {
  auto t = Tokenizer::FromJson(MinimalJson({{"model", {{"type", "WordPiece"}}}}), "wp.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(t.status().message(),
              HasSubstr("wp.json: model.type: unsupported model type \"WordPiece\""));
}

TEST(TokenizerErrorsTest, BadRegex) {
  auto t = Tokenizer::FromJson(MinimalJson({{"pre_tokenizer", {{"pattern", {{"Regex", "[a-"}}}}}}),
                               "re.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("re.json: pre_tokenizer.pattern: bad regex /[a-/"));
}

TEST(TokenizerErrorsTest, MergeNamingUnknownToken) {
  auto t = Tokenizer::FromJson(MinimalJson({{"model", {{"merges", {"a c"}}}}}), "m.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("m.json: model: merge #0"));
  EXPECT_THAT(t.status().message(), HasSubstr("unknown token \"c\""));
  auto no_result = Tokenizer::FromJson(
      MinimalJson({{"model", {{"merges", json::array({json::array({"b", "a"})})}}}}), "m.json");
  EXPECT_THAT(no_result.status().message(), HasSubstr("\"ba\", which is not in the vocabulary"));
}

TEST(TokenizerErrorsTest, OtherUnsupportedParts) {
  EXPECT_EQ(Tokenizer::FromJson(MinimalJson({{"normalizer", {{"type", "NFC"}}}}), "n.json")
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(
      Tokenizer::FromJson(MinimalJson({{"pre_tokenizer", {{"type", "Whitespace"}}}}), "p.json")
          .status()
          .code(),
      absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Tokenizer::FromJson(MinimalJson({{"decoder", {{"type", "WordPiece"}}}}), "d.json")
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(
      Tokenizer::FromJson(MinimalJson({{"model", {{"dropout", 0.1}}}}), "b.json").status().code(),
      absl::StatusCode::kUnimplemented);
  EXPECT_EQ(
      Tokenizer::FromJson(MinimalJson({{"padding", {{"length", 8}}}}), "p.json").status().code(),
      absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Tokenizer::FromJson(MinimalJson({{"model", {{"unk_token", "<unk>"}}}}), "u.json")
                  .status()
                  .message(),
              HasSubstr("unk_token \"<unk>\" is not in the vocabulary"));
}

// ---- the seed tokenizers: features the shared files do not use -----------------------

TEST(SeedTokenizerTest, ByteLevelSeedFeatures) {
  auto tokenizer = Load(kTestdata + "/seed_byte_level.json");
  ASSERT_NE(tokenizer, nullptr);
  const int32_t kBos = 0, kEos = 1, kMask = 2, kWord = 276;
  // <mask> has lstrip and rstrip: the spaces around it are part of the match.
  const auto masked = tokenizer->Encode("a <mask> b", false);
  EXPECT_EQ(masked, [&] {
    std::vector<int32_t> ids = tokenizer->Encode("a", false);
    ids.push_back(kMask);
    const auto b = tokenizer->Encode("b", false);
    ids.insert(ids.end(), b.begin(), b.end());
    return ids;
  }());
  // "word" is single_word: matched between spaces, not inside "swordfish".
  const auto alone = tokenizer->Encode("a word here", false);
  EXPECT_EQ(std::count(alone.begin(), alone.end(), kWord), 1);
  const auto inside = tokenizer->Encode("swordfish", false);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), kWord), 0);
  // The template adds both specials; the decoder gives the text back (ByteLevel adds a prefix
  // space to each piece, which decoding keeps).
  const auto ids = tokenizer->Encode("the word", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), kBos);
  EXPECT_EQ(ids.back(), kEos);
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("the", false)), " the");
}

TEST(SeedTokenizerTest, FallbackSeedFeatures) {
  auto tokenizer = Load(kTestdata + "/seed_fallback.json");
  ASSERT_NE(tokenizer, nullptr);
  const json vocab = json::parse(ReadFile(kTestdata + "/seed_fallback.json"))["model"]["vocab"];
  auto id = [&](const char* token) { return vocab.at(token).get<int32_t>(); };
  // "hello" merges through ## symbols; ignore_merges keeps the whole-word "hello" entry.
  EXPECT_THAT(tokenizer->Encode("hello", false), ElementsAre(id("hello")));
  // Byte fallback spells the symbol's bytes, prefix included as in HF: "A" -> <0x41>, but the
  // second symbol is "##B", whose '#' has no byte token, so it falls to <unk>.
  EXPECT_THAT(tokenizer->Encode("AB", false), ElementsAre(id("<0x41>"), id("<unk>")));
  EXPECT_THAT(tokenizer->Encode("A B", false), ElementsAre(id("<0x41>"), id("<0x42>")));
  // x, y, z are unknown and fuse_unk makes them one <unk>.
  EXPECT_THAT(tokenizer->Encode("xyz", false), ElementsAre(id("<unk>")));
  // RobertaProcessing: <s> ... </s>; no decoder joins tokens with spaces.
  EXPECT_THAT(tokenizer->Encode("world", true),
              ElementsAre(id("<s>"), id("wor"), id("##ld"), id("</s>")));
  EXPECT_EQ(tokenizer->Decode({id("wor"), id("##ld")}), "wor ##ld");
}

// ---- pieces ----------------------------------------------------------------------------

TEST(TokenizerRegexTest, EmptyMatchesFollowTheOnigCrate) {
  auto re = Regex::Compile("a*");
  ASSERT_TRUE(re.ok());
  std::vector<std::pair<size_t, size_t>> matches;
  (*re)->FindAll("baaac", &matches);
  EXPECT_THAT(matches, ElementsAre(std::pair<size_t, size_t>{0, 0}, std::pair<size_t, size_t>{1, 4},
                                   std::pair<size_t, size_t>{5, 5}));
  EXPECT_FALSE(Regex::Compile("(ab").ok());
  auto literal = Regex::CompileLiteral("a.b(");
  ASSERT_TRUE(literal.ok());
  (*literal)->FindAll("axb(a.b(", &matches);
  EXPECT_THAT(matches, ElementsAre(std::pair<size_t, size_t>{4, 8}));
}

// HF's documented example for SplitDelimiterBehavior on "the-final--countdown" split at "-".
TEST(TokenizerSplitBehaviorTest, MatchesHfDocumentation) {
  const std::string text = "the-final--countdown";
  const std::vector<std::pair<size_t, size_t>> dashes = {{3, 4}, {9, 10}, {10, 11}};
  auto pieces = [&](SplitBehavior behavior, bool invert = false) {
    std::vector<std::string> out;
    for (const auto& [b, e] :
         ApplySplitBehavior(MatchesToSegments(text.size(), dashes, invert), behavior)) {
      out.push_back(text.substr(b, e - b));
    }
    return out;
  };
  EXPECT_THAT(pieces(SplitBehavior::kRemoved), ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(pieces(SplitBehavior::kIsolated),
              ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(pieces(SplitBehavior::kMergedWithPrevious),
              ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(pieces(SplitBehavior::kMergedWithNext),
              ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(pieces(SplitBehavior::kContiguous),
              ElementsAre("the", "-", "final", "--", "countdown"));
  EXPECT_THAT(pieces(SplitBehavior::kRemoved, /*invert=*/true), ElementsAre("-", "-", "-"));
  EXPECT_FALSE(ParseSplitBehavior("Merged").ok());
}

// The heap-driven merge loop against the plain quadratic reference, on the ds vocabulary.
TEST(TokenizerBpeModelTest, FastMergeMatchesReference) {
  const json model = json::parse(ReadFile(TokenizerPath("ds")))["model"];
  absl::flat_hash_map<std::string, int32_t> vocab;
  for (const auto& [token, id] : model["vocab"].items()) vocab.emplace(token, id.get<int32_t>());
  std::vector<std::pair<std::string, std::string>> merges;
  for (const json& m : model["merges"])
    merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
  auto bpe = BpeModel::Create(std::move(vocab), merges, BpeOptions{});
  ASSERT_TRUE(bpe.ok()) << bpe.status();
  // Words of mapped bytes: letters and the byte-level space 'Ġ' mostly, so merges fire.
  const std::vector<std::string> alphabet = {"a", "e", "t",        "h", "n", "d", "s", "o",
                                             "r", "l", "\xC4\xA0", "x", "z", "1", "I", "\xC3\xA9"};
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    std::string word;
    const int len = 1 + static_cast<int>(rng() % 24);
    for (int k = 0; k < len; ++k) word += alphabet[rng() % alphabet.size()];
    ASSERT_EQ((*bpe)->TokenizeUncached(word), (*bpe)->TokenizeRef(word)) << word;
  }
}

TEST(TokenizerUtf8Test, LossyReplacesMaximalSubparts) {
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));  // a surrogate
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F\x98"
                      "b"),
            "a\xEF\xBF\xBD"
            "b");                                                // truncated 4-byte: one U+FFFD
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong: two
}

}  // namespace
}  // namespace quant::tokenizer
