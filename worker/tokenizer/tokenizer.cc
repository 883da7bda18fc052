// Loads a Hugging Face tokenizer.json (byte-level BPE) and runs HF's encode pipeline: added
// tokens, pre-tokenizer steps, BPE per piece, post-processor templates; ByteLevel decoding.
#include "worker/tokenizer/tokenizer.h"

#include <cerrno>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "common/status.h"
#include "worker/tokenizer/added_vocabulary.h"
#include "worker/tokenizer/bpe_model.h"
#include "worker/tokenizer/byte_level.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/string_view_compat.h"
#include "worker/tokenizer/utf8.h"

namespace quant::tokenizer {
namespace {

using json = nlohmann::json;

// Sequence pre-tokenizers and post-processors may nest; real files nest once. The bound keeps
// hostile files from recursing deep.
constexpr int kMaxNesting = 8;

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status Unsupported(absl::string_view where, absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat(where, ": ", what));
}

// obj[key] when obj is an object holding a non-null key, else nullptr.
const json* Find(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<bool> BoolField(const json& obj, const char* key, bool fallback,
                               absl::string_view where) {
  const json* v = Find(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return Invalid(absl::StrCat(where, ".", key), "expected true or false");
  return v->get<bool>();
}

absl::StatusOr<std::optional<std::string>> StringField(const json& obj, const char* key,
                                                       absl::string_view where) {
  const json* v = Find(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return Invalid(absl::StrCat(where, ".", key), "expected a string");
  return std::optional<std::string>(v->get<std::string>());
}

absl::StatusOr<std::string> RequiredString(const json& obj, const char* key,
                                           absl::string_view where) {
  ASSIGN_OR_RETURN(std::optional<std::string> s, StringField(obj, key, where));
  if (!s.has_value()) return Invalid(absl::StrCat(where, ".", key), "missing");
  return *std::move(s);
}

absl::StatusOr<int32_t> IdValue(const json& v, absl::string_view where) {
  if (!v.is_number_integer()) return Invalid(where, "expected a non-negative integer id");
  const int64_t id = v.get<int64_t>();
  // The top value is refused too, so that vocab_size() = max id + 1 still fits in int32_t.
  if (id < 0 || id >= std::numeric_limits<int32_t>::max()) {
    return Invalid(where, absl::StrCat("id ", id, " is out of range"));
  }
  return static_cast<int32_t>(id);
}

// ---- model -------------------------------------------------------------------------------

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseMerges(const json* merges) {
  std::vector<std::pair<std::string, std::string>> out;
  if (merges == nullptr) return out;  // a BPE without merges is only its alphabet
  if (!merges->is_array()) return Invalid("model.merges", "expected an array");
  out.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& m = (*merges)[i];
    const std::string where = absl::StrCat("model.merges[", i, "]");
    if (m.is_string()) {
      // The legacy "a b" form: HF splits at the first space.
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos)
        return Invalid(where, absl::StrCat("\"", s, "\" is not \"left right\""));
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Invalid(where, "expected \"left right\" or [left, right]");
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<BpeModel>> ParseModel(const json& root) {
  const json* model = Find(root, "model");
  if (model == nullptr) return Invalid("model", "missing");
  if (!model->is_object()) return Invalid("model", "expected an object");
  ASSIGN_OR_RETURN(std::optional<std::string> type, StringField(*model, "type", "model"));
  if (type.has_value() && *type != "BPE") {
    return Unsupported("model.type", absl::StrCat("unsupported model type \"", *type,
                                                  "\" (only BPE is implemented)"));
  }
  const json* vocab_json = Find(*model, "vocab");
  if (vocab_json == nullptr) return Invalid("model.vocab", "missing");
  if (!vocab_json->is_object()) return Invalid("model.vocab", "expected an object of token -> id");
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json->size());
  for (const auto& [token, id_json] : vocab_json->items()) {
    ASSIGN_OR_RETURN(const int32_t id,
                     IdValue(id_json, absl::StrCat("model.vocab[\"", token, "\"]")));
    vocab.emplace(token, id);
  }
  ASSIGN_OR_RETURN(auto merges, ParseMerges(Find(*model, "merges")));

  if (const json* dropout = Find(*model, "dropout")) {
    if (!dropout->is_number()) return Invalid("model.dropout", "expected a number or null");
    // Dropout makes encoding random; our ids must be deterministic (STYLE.md 10).
    if (dropout->get<double>() > 0)
      return Unsupported("model.dropout", "BPE dropout is not supported");
  }
  BpeOptions options;
  ASSIGN_OR_RETURN(options.unk_token, StringField(*model, "unk_token", "model"));
  ASSIGN_OR_RETURN(auto prefix, StringField(*model, "continuing_subword_prefix", "model"));
  options.continuing_subword_prefix = prefix.value_or("");
  ASSIGN_OR_RETURN(auto suffix, StringField(*model, "end_of_word_suffix", "model"));
  options.end_of_word_suffix = suffix.value_or("");
  ASSIGN_OR_RETURN(options.fuse_unk, BoolField(*model, "fuse_unk", false, "model"));
  ASSIGN_OR_RETURN(options.byte_fallback, BoolField(*model, "byte_fallback", false, "model"));
  ASSIGN_OR_RETURN(options.ignore_merges, BoolField(*model, "ignore_merges", false, "model"));

  auto bpe = BpeModel::Create(std::move(vocab), merges, std::move(options));
  if (!bpe.ok())
    return absl::Status(bpe.status().code(), absl::StrCat("model: ", bpe.status().message()));
  return bpe;
}

// ---- added tokens ------------------------------------------------------------------------

absl::StatusOr<AddedVocabulary> ParseAddedTokens(const json& root, const BpeModel& bpe) {
  const json* added = Find(root, "added_tokens");
  std::vector<AddedToken> tokens;
  if (added == nullptr) return AddedVocabulary(std::move(tokens));
  if (!added->is_array()) return Invalid("added_tokens", "expected an array");
  for (size_t i = 0; i < added->size(); ++i) {
    const json& t = (*added)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return Invalid(where, "expected an object");
    AddedToken token;
    ASSIGN_OR_RETURN(token.content, RequiredString(t, "content", where));
    const json* id = Find(t, "id");
    if (id == nullptr) return Invalid(absl::StrCat(where, ".id"), "missing");
    ASSIGN_OR_RETURN(token.id, IdValue(*id, absl::StrCat(where, ".id")));
    // HF keeps the model's id for a content the vocabulary already has (it only warns).
    if (auto vocab_id = bpe.TokenToId(token.content)) token.id = *vocab_id;
    ASSIGN_OR_RETURN(token.special, BoolField(t, "special", false, where));
    ASSIGN_OR_RETURN(token.single_word, BoolField(t, "single_word", false, where));
    ASSIGN_OR_RETURN(token.lstrip, BoolField(t, "lstrip", false, where));
    ASSIGN_OR_RETURN(token.rstrip, BoolField(t, "rstrip", false, where));
    // HF's AddedToken::from(content, special) defaults normalized to !special.
    ASSIGN_OR_RETURN(token.normalized, BoolField(t, "normalized", !token.special, where));
    tokens.push_back(std::move(token));
  }
  return AddedVocabulary(std::move(tokens));
}

// ---- normalizer --------------------------------------------------------------------------

absl::Status CheckNormalizer(const json& root) {
  const json* normalizer = Find(root, "normalizer");
  if (normalizer == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, RequiredString(*normalizer, "type", "normalizer"));
  // An empty Sequence is the identity; anything else would need Unicode tables we do not have.
  const json* inner = Find(*normalizer, "normalizers");
  if (type == "Sequence" && inner != nullptr && inner->is_array() && inner->empty()) {
    return absl::OkStatus();
  }
  return Unsupported("normalizer", absl::StrCat("unsupported normalizer \"", type, "\""));
}

// ---- pre-tokenizer -----------------------------------------------------------------------

absl::Status ParsePreTokenizer(const json& j, const std::string& where, int depth,
                               std::vector<PreTokenizerStep>* steps) {
  if (depth > kMaxNesting) return Invalid(where, "nested too deep");
  if (!j.is_object()) return Invalid(where, "expected an object");
  ASSIGN_OR_RETURN(std::string type, RequiredString(j, "type", where));
  if (type == "Sequence") {
    const json* list = Find(j, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return Invalid(absl::StrCat(where, ".pretokenizers"), "expected an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(ParsePreTokenizer((*list)[i], absl::StrCat(where, ".pretokenizers[", i, "]"),
                                        depth + 1, steps));
    }
    return absl::OkStatus();
  }
  PreTokenizerStep step;
  if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    const std::string pattern_where = absl::StrCat(where, ".pattern");
    const json* pattern = Find(j, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      return Invalid(pattern_where, "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    absl::StatusOr<std::unique_ptr<Regex>> regex;
    if (const json* r = Find(*pattern, "Regex"); r != nullptr && r->is_string()) {
      regex = Regex::Compile(r->get_ref<const std::string&>());
      step.regex_source = r->get_ref<const std::string&>();
    } else if (const json* s = Find(*pattern, "String"); s != nullptr && s->is_string()) {
      regex = Regex::CompileLiteral(s->get_ref<const std::string&>());
    } else {
      return Invalid(pattern_where, "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    if (!regex.ok()) return Invalid(pattern_where, regex.status().message());
    step.regex = *std::move(regex);
    ASSIGN_OR_RETURN(std::string behavior, RequiredString(j, "behavior", where));
    auto parsed = ParseSplitBehavior(behavior);
    if (!parsed.ok()) return Invalid(absl::StrCat(where, ".behavior"), parsed.status().message());
    step.behavior = *parsed;
    ASSIGN_OR_RETURN(step.invert, BoolField(j, "invert", false, where));
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    // HF's ByteLevel defaults: add_prefix_space and use_regex both true.
    ASSIGN_OR_RETURN(step.add_prefix_space, BoolField(j, "add_prefix_space", true, where));
    ASSIGN_OR_RETURN(const bool use_regex, BoolField(j, "use_regex", true, where));
    if (use_regex) {
      auto regex = Regex::Compile(kByteLevelRegex);
      if (!regex.ok()) return Invalid(where, regex.status().message());
      step.regex = *std::move(regex);
    }
  } else {
    return Unsupported(absl::StrCat(where, ".type"),
                       absl::StrCat("unsupported pre_tokenizer \"", type, "\""));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

// ---- post-processor ----------------------------------------------------------------------

// One template of TemplateProcessing: special-token ids, with the sequence spliced in.
struct TemplatePiece {
  bool is_sequence = false;
  std::vector<int32_t> ids;  // special-token pieces only
};
using Template = std::vector<TemplatePiece>;

absl::StatusOr<TemplatePiece> SpecialPiece(const json& special_tokens, const std::string& name,
                                           absl::string_view where) {
  const json* entry = Find(special_tokens, name.c_str());
  if (entry == nullptr) {
    return Invalid(where, absl::StrCat("special token \"", name, "\" is not in special_tokens"));
  }
  const json* ids = Find(*entry, "ids");
  if (ids == nullptr || !ids->is_array()) {
    return Invalid(absl::StrCat(where, ": special_tokens[\"", name, "\"].ids"),
                   "expected an array");
  }
  TemplatePiece piece;
  for (const json& id : *ids) {
    ASSIGN_OR_RETURN(const int32_t value,
                     IdValue(id, absl::StrCat(where, ": special_tokens[\"", name, "\"].ids")));
    piece.ids.push_back(value);
  }
  return piece;
}

// A "$A"-style sequence reference in the string form of a template: true for A; error for B
// (Encode has no second sequence).
absl::StatusOr<bool> IsSequenceA(absl::string_view id, absl::string_view where) {
  if (id == "A" || id == "a" || id.empty() ||
      id.find_first_not_of("0123456789") == absl::string_view::npos) {
    return true;
  }
  if (id == "B" || id == "b") return Invalid(where, "the single template refers to sequence B");
  return Invalid(where, absl::StrCat("bad sequence id \"", id, "\""));
}

absl::StatusOr<Template> ParseTemplate(const json& processor, const std::string& where) {
  const json* special_tokens = Find(processor, "special_tokens");
  const json empty_object = json::object();
  if (special_tokens == nullptr) special_tokens = &empty_object;
  const json* single = Find(processor, "single");
  const std::string single_where = absl::StrCat(where, ".single");
  if (single == nullptr) return Invalid(single_where, "missing");
  Template out;
  if (single->is_string()) {
    // The string form "<s> $A </s>", with optional ":type_id" suffixes (HF's Piece::try_from).
    for (absl::string_view part :
         absl::StrSplit(single->get_ref<const std::string&>(), ' ', absl::SkipEmpty())) {
      absl::string_view name = part.substr(0, part.find(':'));
      if (!name.empty() && name[0] == '$') {
        ASSIGN_OR_RETURN(const bool is_a, IsSequenceA(name.substr(1), single_where));
        if (is_a) out.push_back({true, {}});
      } else {
        ASSIGN_OR_RETURN(TemplatePiece piece,
                         SpecialPiece(*special_tokens, std::string(name), single_where));
        out.push_back(std::move(piece));
      }
    }
    return out;
  }
  if (!single->is_array()) return Invalid(single_where, "expected an array or a string");
  for (size_t i = 0; i < single->size(); ++i) {
    const json& piece = (*single)[i];
    const std::string piece_where = absl::StrCat(single_where, "[", i, "]");
    if (const json* seq = Find(piece, "Sequence")) {
      ASSIGN_OR_RETURN(std::string id, RequiredString(*seq, "id", piece_where));
      ASSIGN_OR_RETURN(const bool is_a, IsSequenceA(id, piece_where));
      if (is_a) out.push_back({true, {}});
    } else if (const json* special = Find(piece, "SpecialToken")) {
      ASSIGN_OR_RETURN(std::string name, RequiredString(*special, "id", piece_where));
      ASSIGN_OR_RETURN(TemplatePiece p, SpecialPiece(*special_tokens, name, piece_where));
      out.push_back(std::move(p));
    } else {
      return Invalid(piece_where, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  return out;
}

// BertProcessing / RobertaProcessing: "cls": [token, id], "sep": [token, id].
absl::StatusOr<Template> ParseClsSep(const json& processor, const std::string& where) {
  Template out;
  int32_t ids[2];
  const char* keys[2] = {"cls", "sep"};
  for (int k = 0; k < 2; ++k) {
    const json* pair = Find(processor, keys[k]);
    if (pair == nullptr || !pair->is_array() || pair->size() != 2) {
      return Invalid(absl::StrCat(where, ".", keys[k]), "expected [token, id]");
    }
    ASSIGN_OR_RETURN(ids[k], IdValue((*pair)[1], absl::StrCat(where, ".", keys[k], "[1]")));
  }
  out.push_back({false, {ids[0]}});
  out.push_back({true, {}});
  out.push_back({false, {ids[1]}});
  return out;
}

absl::Status ParsePostProcessor(const json& j, const std::string& where, int depth,
                                std::vector<Template>* templates) {
  if (depth > kMaxNesting) return Invalid(where, "nested too deep");
  if (!j.is_object()) return Invalid(where, "expected an object");
  ASSIGN_OR_RETURN(std::string type, RequiredString(j, "type", where));
  if (type == "Sequence") {
    const json* list = Find(j, "processors");
    if (list == nullptr || !list->is_array()) {
      return Invalid(absl::StrCat(where, ".processors"), "expected an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(ParsePostProcessor((*list)[i], absl::StrCat(where, ".processors[", i, "]"),
                                         depth + 1, templates));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // it only trims offsets; ids are unchanged
  if (type == "TemplateProcessing") {
    ASSIGN_OR_RETURN(Template t, ParseTemplate(j, where));
    templates->push_back(std::move(t));
    return absl::OkStatus();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ASSIGN_OR_RETURN(Template t, ParseClsSep(j, where));
    templates->push_back(std::move(t));
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat(where, ".type"),
                     absl::StrCat("unsupported post_processor \"", type, "\""));
}

// ---- decoder -----------------------------------------------------------------------------

enum class DecoderKind { kJoinWithSpaces, kByteLevel };

absl::StatusOr<DecoderKind> ParseDecoder(const json& root) {
  const json* decoder = Find(root, "decoder");
  if (decoder == nullptr) return DecoderKind::kJoinWithSpaces;  // HF joins tokens with ' '
  ASSIGN_OR_RETURN(std::string type, RequiredString(*decoder, "type", "decoder"));
  if (type == "ByteLevel") return DecoderKind::kByteLevel;
  return Unsupported("decoder.type", absl::StrCat("unsupported decoder \"", type, "\""));
}

// ---- the tokenizer -----------------------------------------------------------------------

class HfTokenizer final : public Tokenizer {
 public:
  // `non_space`: a compiled `\S`, or null when the text is never to be cut (LastCut).
  HfTokenizer(std::unique_ptr<BpeModel> bpe, AddedVocabulary added,
              std::vector<PreTokenizerStep> steps, std::vector<Template> templates,
              DecoderKind decoder, std::unique_ptr<Regex> non_space)
      : bpe_(std::move(bpe)),
        added_(std::move(added)),
        steps_(std::move(steps)),
        templates_(std::move(templates)),
        decoder_(decoder),
        non_space_(std::move(non_space)) {
    vocab_size_ = bpe_->max_id() + 1;
    for (const AddedToken& t : added_.tokens()) vocab_size_ = std::max(vocab_size_, t.id + 1);
    // Template ids are emitted too, so an embedding table must cover them as well.
    for (const Template& t : templates_) {
      for (const TemplatePiece& piece : t) {
        for (const int32_t id : piece.ids) vocab_size_ = std::max(vocab_size_, id + 1);
      }
    }
  }

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override {
    // HF takes str, which is valid UTF-8 by construction; bytes that are not get U+FFFD, the
    // way Python's errors="replace" decoding would hand them over.
    std::string repaired;
    if (!IsValidUtf8(text)) {
      repaired = Utf8Lossy(text);
      text = repaired;
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);  // kjv_val runs 3.9 bytes per token; /3 leaves room
    std::vector<TextSegment> segments;
    added_.Split(text, &segments);
    for (const TextSegment& segment : segments) {
      if (segment.token_id >= 0) {
        ids.push_back(segment.token_id);
      } else {
        EncodePiece(text.substr(segment.begin, segment.end - segment.begin), 0, &ids);
      }
    }
    if (!add_special_tokens) return ids;
    for (const Template& t : templates_) {
      std::vector<int32_t> wrapped;
      wrapped.reserve(ids.size() + 4);
      for (const TemplatePiece& piece : t) {
        const std::vector<int32_t>& source = piece.is_sequence ? ids : piece.ids;
        wrapped.insert(wrapped.end(), source.begin(), source.end());
      }
      ids = std::move(wrapped);
    }
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    bool first = true;
    for (const int32_t id : ids) {
      const std::string* token = nullptr;
      if (const AddedToken* added = added_.FindById(id)) {
        token = &added->content;
      } else {
        token = bpe_->IdToToken(id);
      }
      if (token == nullptr) continue;  // HF skips ids it does not know
      if (decoder_ == DecoderKind::kByteLevel) {
        // A token with characters outside the byte table contributes its own UTF-8, as in HF.
        if (!ByteLevelDecode(*token, &out)) out.append(*token);
      } else {
        if (!first) out.push_back(' ');
        out.append(*token);
        first = false;
      }
    }
    return decoder_ == DecoderKind::kByteLevel ? Utf8Lossy(out) : out;
  }

  int32_t vocab_size() const override { return vocab_size_; }

  size_t LastCut(std::string_view text) const override {
    if (non_space_ == nullptr) return 0;
    for (size_t p = text.size(); p-- > 1;) {
      if (text[p - 1] != '\n') continue;
      // The character after the '\n' must be one the pre-tokenizer's `\s` does not match (so
      // asked of Oniguruma itself); an ill-formed byte is never a place to cut.
      size_t bad_len_bytes = 0;
      const size_t len = Utf8SequenceLength(text, p, &bad_len_bytes);
      if (len > 0 && non_space_->MatchAt(text.substr(p, len), 0) == static_cast<int>(len)) {
        return p;
      }
    }
    return 0;
  }

 private:
  // Runs pre-tokenizer steps [step, end) on one non-empty piece, then BPE on what is left.
  // Depth-first per piece gives the same order as HF's step-by-step passes over all pieces,
  // because every step works on each piece on its own.
  void EncodePiece(std::string_view piece, size_t step, std::vector<int32_t>* ids) const {
    if (piece.empty()) return;
    if (step == steps_.size()) {
      bpe_->Tokenize(piece, ids);
      return;
    }
    const PreTokenizerStep& s = steps_[step];
    if (s.kind == PreTokenizerStep::Kind::kSplit) {
      std::vector<std::pair<size_t, size_t>> matches;
      s.regex->FindAll(piece, &matches);
      for (const auto& [begin, end] :
           ApplySplitBehavior(MatchesToSegments(piece.size(), matches, s.invert), s.behavior)) {
        EncodePiece(piece.substr(begin, end - begin), step + 1, ids);
      }
      return;
    }
    // ByteLevel: optional prefix space, optional GPT-2 split, then bytes -> printable chars.
    std::string prefixed;
    std::string_view text = piece;
    if (s.add_prefix_space && piece[0] != ' ') {
      prefixed = absl::StrCat(" ", ToAbsl(piece));
      text = prefixed;
    }
    std::string mapped;
    if (s.regex == nullptr) {
      ByteLevelEncode(text, &mapped);
      EncodePiece(mapped, step + 1, ids);
      return;
    }
    std::vector<std::pair<size_t, size_t>> matches;
    s.regex->FindAll(text, &matches);
    for (const auto& [begin, end] : ApplySplitBehavior(
             MatchesToSegments(text.size(), matches, false), SplitBehavior::kIsolated)) {
      if (begin == end) continue;
      mapped.clear();
      ByteLevelEncode(text.substr(begin, end - begin), &mapped);
      EncodePiece(mapped, step + 1, ids);
    }
  }

  std::unique_ptr<BpeModel> bpe_;
  AddedVocabulary added_;
  std::vector<PreTokenizerStep> steps_;
  std::vector<Template> templates_;  // applied in order when add_special_tokens
  DecoderKind decoder_;
  std::unique_ptr<Regex> non_space_;
  int32_t vocab_size_ = 0;
};

// Whether added tokens cannot reach across a line start: none holds a '\n', and none swallows
// the whitespace around it (lstrip would take the '\n' before a token at a line start).
bool AddedTokensKeepLines(const AddedVocabulary& added) {
  for (const AddedToken& t : added.tokens()) {
    if (t.content.find('\n') != std::string::npos || t.lstrip || t.rstrip) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const json& root) {
  if (!root.is_object()) return Invalid("top level", "expected a JSON object");
  // Truncation and padding change the ids HF returns; refuse rather than silently differ.
  if (Find(root, "truncation") != nullptr) return Unsupported("truncation", "must be null");
  if (Find(root, "padding") != nullptr) return Unsupported("padding", "must be null");
  ASSIGN_OR_RETURN(std::unique_ptr<BpeModel> bpe, ParseModel(root));
  ASSIGN_OR_RETURN(AddedVocabulary added, ParseAddedTokens(root, *bpe));
  RETURN_IF_ERROR(CheckNormalizer(root));
  std::vector<PreTokenizerStep> steps;
  if (const json* pre = Find(root, "pre_tokenizer")) {
    RETURN_IF_ERROR(ParsePreTokenizer(*pre, "pre_tokenizer", 0, &steps));
  }
  std::vector<Template> templates;
  if (const json* post = Find(root, "post_processor")) {
    RETURN_IF_ERROR(ParsePostProcessor(*post, "post_processor", 0, &templates));
  }
  ASSIGN_OR_RETURN(DecoderKind decoder, ParseDecoder(root));
  // CheckNormalizer above admits only the identity, so the pre-tokenizer and the added tokens
  // alone decide whether the text may be cut at line starts.
  std::unique_ptr<Regex> non_space;
  if (SplitsAtLineStarts(steps) && AddedTokensKeepLines(added)) {
    ASSIGN_OR_RETURN(non_space, Regex::Compile("\\S"));
  }
  return std::make_unique<HfTokenizer>(std::move(bpe), std::move(added), std::move(steps),
                                       std::move(templates), decoder, std::move(non_space));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                               std::string_view label_std) {
  const absl::string_view label = ToAbsl(label_std);
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not valid JSON: ", e.what()));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer;
  try {
    tokenizer = Build(root);
  } catch (const json::exception& e) {
    // The accessors above check types first; this is a backstop for a case they missed.
    return absl::InvalidArgumentError(absl::StrCat(label, ": malformed tokenizer: ", e.what()));
  }
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(label, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, "tokenizer"));
  return FromJson(text, path);
}

}  // namespace quant::tokenizer
