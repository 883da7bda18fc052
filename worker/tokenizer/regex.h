// An Oniguruma regex compiled once at load, searched the way Hugging Face tokenizers searches it
// (its SysRegex over the `onig` crate), so that splits land on the same byte offsets.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace quant::tokenizer {

class Regex {
 public:
  // Compiles `pattern` (UTF-8, Oniguruma's default Ruby-like syntax, as HF uses it).
  // InvalidArgument with Oniguruma's message when it does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // A regex that matches `literal` verbatim (HF escapes Split's String patterns the same way).
  static absl::StatusOr<std::unique_ptr<Regex>> CompileLiteral(std::string_view literal);

  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Replaces *matches with the successive matches in `text` as [begin, end) byte offsets,
  // left to right. An empty match right where the previous match ended is skipped by stepping
  // one character, as the `onig` crate's find_iter does. Lookarounds see only `text`.
  // Precondition: `text` is valid UTF-8. Safe to call from several threads at once.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

  // Length in bytes of the match anchored at text[pos], or -1 when none.
  int MatchAt(std::string_view text, size_t pos) const;

 private:
  explicit Regex(void* compiled) : compiled_(compiled) {}
  void* compiled_;  // regex_t*; kept opaque so that users need not include oniguruma.h
};

}  // namespace quant::tokenizer
