// Oniguruma glue: one-time library init, compile under a lock, per-thread match regions.
#include "worker/tokenizer/regex.h"

#include <oniguruma.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "worker/tokenizer/string_view_compat.h"
#include "worker/tokenizer/utf8.h"

namespace quant::tokenizer {
namespace {

// Oniguruma's compile path touches global state (the encoding and syntax tables' lazy init);
// searching a compiled regex is reentrant.
std::mutex& CompileMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

void InitOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

struct RegionDeleter {
  void operator()(OnigRegion* region) const { onig_region_free(region, /*free_self=*/1); }
};

OnigRegion* ThreadRegion() {
  thread_local std::unique_ptr<OnigRegion, RegionDeleter> region(onig_region_new());
  return region.get();
}

const OnigUChar* U(const char* p) { return reinterpret_cast<const OnigUChar*>(p); }

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  if (!IsValidUtf8(pattern)) return absl::InvalidArgumentError("regex is not valid UTF-8");
  InitOnce();
  regex_t* compiled = nullptr;
  OnigErrorInfo error_info;
  int rc = 0;
  {
    std::lock_guard<std::mutex> lock(CompileMutex());
    // ONIG_OPTION_CAPTURE_GROUP is what HF passes; it changes captures only, not match spans.
    rc = onig_new(&compiled, U(pattern.data()), U(pattern.data() + pattern.size()),
                  ONIG_OPTION_CAPTURE_GROUP, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &error_info);
  }
  if (rc != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(message, rc, &error_info);
    return absl::InvalidArgumentError(
        absl::StrCat("bad regex /", ToAbsl(pattern), "/: ", reinterpret_cast<char*>(message)));
  }
  return std::unique_ptr<Regex>(new Regex(compiled));
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::CompileLiteral(std::string_view literal) {
  std::string escaped;
  escaped.reserve(literal.size() * 2);
  for (const char c : literal) {
    // The characters Rust's regex::escape escapes; a backslash before any ASCII punctuation is
    // a literal in Oniguruma too.
    if (std::string_view(R"(\.+*?()|[]{}^$#&-~)").find(c) != std::string_view::npos) {
      escaped.push_back('\\');
    }
    escaped.push_back(c);
  }
  return Compile(escaped);
}

Regex::~Regex() { onig_free(static_cast<regex_t*>(compiled_)); }

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  matches->clear();
  auto* re = static_cast<regex_t*>(compiled_);
  OnigRegion* region = ThreadRegion();
  const OnigUChar* begin = U(text.data());
  const OnigUChar* end = begin + text.size();
  size_t search_from = 0;
  bool have_last_end = false;
  size_t last_match_end = 0;
  while (search_from <= text.size()) {
    const int rc = onig_search(re, begin, end, begin + search_from, end, region, ONIG_OPTION_NONE);
    // ONIG_MISMATCH ends the scan; so does any engine error (e.g. the backtracking retry
    // limit), leaving the rest of the text unsplit rather than failing the encode.
    if (rc < 0) break;
    const auto match_begin = static_cast<size_t>(region->beg[0]);
    const auto match_end = static_cast<size_t>(region->end[0]);
    if (match_begin == match_end && have_last_end && last_match_end == match_end) {
      size_t bad = 0;
      const size_t step =
          search_from < text.size() ? Utf8SequenceLength(text, search_from, &bad) : 1;
      search_from += step > 0 ? step : bad;
      continue;
    }
    search_from = match_end;
    have_last_end = true;
    last_match_end = match_end;
    matches->emplace_back(match_begin, match_end);
  }
}

int Regex::MatchAt(std::string_view text, size_t pos) const {
  const OnigUChar* begin = U(text.data());
  const int rc = onig_match(static_cast<regex_t*>(compiled_), begin, begin + text.size(),
                            begin + pos, /*region=*/nullptr, ONIG_OPTION_NONE);
  return rc >= 0 ? rc : -1;
}

}  // namespace quant::tokenizer
