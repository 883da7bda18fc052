#include "kernels/pack.h"

namespace quant::kernels {

int64_t PackWords(int64_t count, int bits, bool word_aligned) {
  if (word_aligned) {
    const int64_t per_word = 32 / bits;
    return (count + per_word - 1) / per_word;
  }
  return (count * bits + 31) / 32;
}

PackStreams RowStreams(int64_t rows, int64_t cols, int bits, bool word_aligned) {
  return {rows, cols, bits, word_aligned, cols, 1, PackWords(cols, bits, word_aligned), 1};
}

PackStreams ColumnStreams(int64_t rows, int64_t cols, int bits, bool word_aligned) {
  return {cols, rows, bits, word_aligned, 1, cols, 1, cols};
}

namespace {

// First stream bit of value j.
int64_t BitOf(const PackStreams& p, int64_t j) {
  if (!p.word_aligned) return j * p.bits;
  const int64_t per_word = 32 / p.bits;
  return (j / per_word) * 32 + (j % per_word) * p.bits;
}

}  // namespace

void Pack_ref(const PackStreams& p, const uint8_t* codes, int32_t* words) {
  const int64_t nwords = PackWords(p.count, p.bits, p.word_aligned);
  for (int64_t s = 0; s < p.streams; ++s) {
    for (int64_t w = 0; w < nwords; ++w) words[s * p.word_stream_stride + w * p.word_elem_stride] = 0;
    for (int64_t j = 0; j < p.count; ++j) {
      const uint32_t v = codes[s * p.code_stream_stride + j * p.code_elem_stride] &
                         ((1u << p.bits) - 1u);
      const int64_t bit = BitOf(p, j);
      for (int t = 0; t < p.bits; ++t) {
        const int64_t k = bit + t;
        int32_t& word = words[s * p.word_stream_stride + (k / 32) * p.word_elem_stride];
        word = static_cast<int32_t>(static_cast<uint32_t>(word) | (((v >> t) & 1u) << (k % 32)));
      }
    }
  }
}

void Unpack_ref(const PackStreams& p, const int32_t* words, uint8_t* codes) {
  for (int64_t s = 0; s < p.streams; ++s) {
    for (int64_t j = 0; j < p.count; ++j) {
      const int64_t bit = BitOf(p, j);
      uint32_t v = 0;
      for (int t = 0; t < p.bits; ++t) {
        const int64_t k = bit + t;
        const uint32_t word =
            static_cast<uint32_t>(words[s * p.word_stream_stride + (k / 32) * p.word_elem_stride]);
        v |= ((word >> (k % 32)) & 1u) << t;
      }
      codes[s * p.code_stream_stride + j * p.code_elem_stride] = static_cast<uint8_t>(v);
    }
  }
}

}  // namespace quant::kernels
