// The BPE model of a tokenizer.json: vocabulary, merge ranks keyed by id pairs, and a cache of
// finished words, since natural text repeats a small set of pre-token words.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace quant::tokenizer {

// model.* fields of a BPE tokenizer.json besides vocab and merges, with HF's defaults.
struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;  // prepended to every symbol but a word's first
  std::string end_of_word_suffix;         // appended to a word's last symbol
  bool fuse_unk = false;                  // consecutive unknown symbols become one unk
  bool byte_fallback = false;             // unknown symbols become <0xXX> byte tokens
  bool ignore_merges = false;             // a word that is itself in the vocab is one token
  // Words kept in the cache; past this, new words are still tokenized but not kept. HF keeps
  // 10,000; a book-length text has ~15k distinct words, all of which fit here in a few MB.
  size_t cache_capacity_words = 1 << 16;
};

class BpeModel {
 public:
  // Validates that every merge names tokens of the vocabulary and that their concatenation is
  // one too, and that unk_token (when set) is in it. Errors are InvalidArgument saying which
  // merge or token; callers prefix the file name.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(
      absl::flat_hash_map<std::string, int32_t> vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options);

  // Appends the ids of one pre-tokenized word (UTF-8; its characters are the initial symbols).
  // Thread-safe; uses and fills the cache.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  // The same without the cache, by the heap-driven merge loop that HF's Word::merge_all uses.
  std::vector<int32_t> TokenizeUncached(std::string_view word) const;
  // The plain reference for tests: repeatedly merge the lowest-ranked adjacent pair (leftmost
  // on ties), rescanning the word each time. Quadratic; defines the expected ids.
  std::vector<int32_t> TokenizeRef(std::string_view word) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  const std::string* IdToToken(int32_t id) const;
  // Largest id in the vocabulary, -1 when it is empty.
  int32_t max_id() const { return max_id_; }

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;
  // The initial symbols of `word`: one id per character, with unk/byte-fallback handling.
  std::vector<int32_t> InitialSymbols(std::string_view word) const;
  const MergeTarget* FindMerge(int32_t left, int32_t right) const;
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<int32_t, std::string> tokens_by_id_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  BpeOptions options_;
  std::optional<int32_t> unk_id_;
  int32_t max_id_ = -1;

  // std::shared_mutex rather than absl::Mutex: this build keeps asserts on (no NDEBUG), which
  // turns on absl::Mutex's deadlock graph, a measured ~5% of encode time for a lock per word.
  mutable std::shared_mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace quant::tokenizer
