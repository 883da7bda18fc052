// BPE by merge rank, following HF tokenizers' models/bpe (merge_word + Word::merge_all) so that
// ties, unknown symbols and byte fallback come out the same.
#include "worker/tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <shared_mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/string_view_compat.h"
#include "worker/tokenizer/utf8.h"

namespace quant::tokenizer {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(
    absl::flat_hash_map<std::string, int32_t> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options) {
  std::unique_ptr<BpeModel> model(new BpeModel);
  model->vocab_ = std::move(vocab);
  model->options_ = std::move(options);
  for (const auto& [token, id] : model->vocab_) {
    if (id < 0)
      return absl::InvalidArgumentError(absl::StrCat("vocab id of \"", token, "\" is negative"));
    model->max_id_ = std::max(model->max_id_, id);
    // Two tokens sharing an id decode as the lexicographically first, to stay deterministic.
    auto [it, inserted] = model->tokens_by_id_.try_emplace(id, token);
    if (!inserted && token < it->second) it->second = token;
  }
  if (model->options_.unk_token.has_value()) {
    auto it = model->vocab_.find(*model->options_.unk_token);
    if (it == model->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unk_token \"", *model->options_.unk_token, "\" is not in the vocabulary"));
    }
    model->unk_id_ = it->second;
  }
  const std::string& prefix = model->options_.continuing_subword_prefix;
  model->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto describe = [&] {
      return absl::StrCat("merge #", rank, " (\"", left, "\", \"", right, "\")");
    };
    const auto left_id = model->TokenToId(left);
    if (!left_id)
      return absl::InvalidArgumentError(
          absl::StrCat(describe(), " names unknown token \"", left, "\""));
    const auto right_id = model->TokenToId(right);
    if (!right_id)
      return absl::InvalidArgumentError(
          absl::StrCat(describe(), " names unknown token \"", right, "\""));
    // With a continuing-subword prefix ("##"), the right part's prefix is dropped on merging.
    std::string merged = absl::StartsWith(right, prefix)
                             ? absl::StrCat(left, absl::string_view(right).substr(prefix.size()))
                             : absl::StrCat(left, right);
    const auto merged_id = model->TokenToId(merged);
    if (!merged_id) {
      return absl::InvalidArgumentError(
          absl::StrCat(describe(), " makes \"", merged, "\", which is not in the vocabulary"));
    }
    // A repeated pair keeps its last rank, as HF's HashMap collect does.
    model->merges_.insert_or_assign(PairKey(*left_id, *right_id),
                                    MergeTarget{static_cast<int32_t>(rank), *merged_id});
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(ToAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  auto it = tokens_by_id_.find(id);
  return it == tokens_by_id_.end() ? nullptr : &it->second;
}

const BpeModel::MergeTarget* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

std::vector<int32_t> BpeModel::InitialSymbols(std::string_view word) const {
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  const bool plain =
      options_.continuing_subword_prefix.empty() && options_.end_of_word_suffix.empty();
  std::string symbol;
  // A pending unknown symbol, held back so that fuse_unk can extend it.
  bool unk_pending = false;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t bad = 0;
    size_t len = Utf8SequenceLength(word, pos, &bad);
    if (len == 0) len = bad;  // callers pass valid UTF-8; stay in bounds regardless
    const bool is_first = pos == 0;
    const bool is_last = pos + len >= word.size();
    std::string_view piece = word.substr(pos, len);
    pos += len;
    if (!plain) {
      symbol.clear();
      if (!is_first) symbol.append(options_.continuing_subword_prefix);
      symbol.append(piece);
      if (is_last) symbol.append(options_.end_of_word_suffix);
      piece = symbol;
    }
    if (auto it = vocab_.find(ToAbsl(piece)); it != vocab_.end()) {
      if (unk_pending) ids.push_back(*unk_id_);
      unk_pending = false;
      ids.push_back(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      std::vector<int32_t> byte_ids;
      for (const char c : piece) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", static_cast<unsigned char>(c));
        auto it = vocab_.find(absl::string_view(name));
        if (it == vocab_.end()) break;
        byte_ids.push_back(it->second);
      }
      if (byte_ids.size() == piece.size()) {
        // HF adds the byte tokens without flushing a pending unk first; it stays pending.
        ids.insert(ids.end(), byte_ids.begin(), byte_ids.end());
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (unk_pending && !options_.fuse_unk) ids.push_back(*unk_id_);
      unk_pending = true;
    }
    // Without unk_token an unknown symbol is dropped, as in HF.
  }
  if (unk_pending) ids.push_back(*unk_id_);
  return ids;
}

std::vector<int32_t> BpeModel::TokenizeUncached(std::string_view word) const {
  std::vector<int32_t> ids = InitialSymbols(word);
  const int n = static_cast<int>(ids.size());
  if (n < 2) return ids;
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  // std heap functions keep the "largest" on top: make the lowest rank, then leftmost, largest.
  auto lower_priority = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Candidate> heap;
  heap.reserve(n);
  for (int i = 0; i + 1 < n; ++i) {
    if (const MergeTarget* m = FindMerge(ids[i], ids[i + 1]))
      heap.push_back({m->rank, i, m->new_id});
  }
  std::make_heap(heap.begin(), heap.end(), lower_priority);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), lower_priority);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Entries go stale when a neighbour merged first; the pair's target tells (as in HF).
    const MergeTarget* current = FindMerge(left.id, right.id);
    if (current == nullptr || current->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeTarget* m = FindMerge(symbols[left.prev].id, left.id)) {
        heap.push_back({m->rank, left.prev, m->new_id});
        std::push_heap(heap.begin(), heap.end(), lower_priority);
      }
    }
    if (left.next >= 0) {
      if (const MergeTarget* m = FindMerge(left.id, symbols[left.next].id)) {
        heap.push_back({m->rank, top.pos, m->new_id});
        std::push_heap(heap.begin(), heap.end(), lower_priority);
      }
    }
  }
  ids.clear();
  for (int i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
  return ids;
}

std::vector<int32_t> BpeModel::TokenizeRef(std::string_view word) const {
  std::vector<int32_t> ids = InitialSymbols(word);
  while (ids.size() >= 2) {
    const MergeTarget* best = nullptr;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const MergeTarget* m = FindMerge(ids[i], ids[i + 1]);
      if (m != nullptr && (best == nullptr || m->rank < best->rank)) {
        best = m;
        best_pos = i;
      }
    }
    if (best == nullptr) break;
    ids[best_pos] = best->new_id;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
  }
  return ids;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto it = vocab_.find(ToAbsl(word)); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  {
    std::shared_lock<std::shared_mutex> lock(cache_mu_);
    if (auto it = cache_.find(ToAbsl(word)); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids = TokenizeUncached(word);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  std::unique_lock<std::shared_mutex> lock(cache_mu_);
  if (cache_.size() < options_.cache_capacity_words)
    cache_.try_emplace(std::string(word), std::move(word_ids));
}

}  // namespace quant::tokenizer
