// Bit packing of b-bit codes into int32 words: bit-by-bit references that define the layout
// (packing.h) and streaming versions, tested byte for byte against them (storage/packing_test.cc).
#include "storage/packing.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/status.h"

namespace quant::storage {
namespace {

void CheckArgs(int64_t rows, int64_t cols, int bits) {
  QUANT_CHECK(rows >= 0 && cols >= 0);
  QUANT_CHECK(bits >= kMinPackBits && bits <= kMaxPackBits);
}

// Values per word in the word-aligned layout (compressed-tensors' pack_factor = 32 // b).
int ValuesPerWord(int bits) { return kPackWordBits / bits; }

// Stream bit where value j starts.
int64_t BitPosition(int64_t j, int bits, PackLayout layout) {
  if (layout == PackLayout::kDense) return j * bits;
  const int per = ValuesPerWord(bits);
  return (j / per) * kPackWordBits + (j % per) * bits;
}

// A word's bits as the int32 stored in the file (two's complement, well defined in C++20).
int32_t AsStored(uint32_t word) { return static_cast<int32_t>(word); }
uint32_t AsBits(int32_t word) { return static_cast<uint32_t>(word); }

// Every code of [n] is < 2^bits; a wider code would silently corrupt its neighbours.
void CheckCodeWidth(const uint8_t* codes, int64_t n, int bits) {
  unsigned wide = 0;
  for (int64_t i = 0; i < n; ++i) wide |= static_cast<unsigned>(codes[i]) >> bits;
  QUANT_CHECK(wide == 0);
}

}  // namespace

std::string_view PackLayoutName(PackLayout layout) {
  return layout == PackLayout::kDense ? "dense" : "word-aligned";
}

int64_t PackedWordCount(int64_t count, int bits, PackLayout layout) {
  CheckArgs(0, count, bits);
  if (layout == PackLayout::kDense) return (count * bits + kPackWordBits - 1) / kPackWordBits;
  const int per = ValuesPerWord(bits);
  return (count + per - 1) / per;
}

// ---- References: one bit at a time, straight from the definition in packing.h.

void PackRows_ref(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
                  int32_t* packed) {
  CheckArgs(rows, cols, bits);
  const int64_t words = PackedWordCount(cols, bits, layout);
  std::vector<uint32_t> row_words(static_cast<size_t>(words));
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(row_words.begin(), row_words.end(), 0u);
    for (int64_t j = 0; j < cols; ++j) {
      const unsigned v = codes[r * cols + j];
      QUANT_CHECK((v >> bits) == 0);
      const int64_t pos = BitPosition(j, bits, layout);
      for (int t = 0; t < bits; ++t) {
        const int64_t k = pos + t;
        row_words[k / kPackWordBits] |= ((v >> t) & 1u) << (k % kPackWordBits);
      }
    }
    for (int64_t w = 0; w < words; ++w) packed[r * words + w] = AsStored(row_words[w]);
  }
}

void UnpackRows_ref(const int32_t* packed, int64_t rows, int64_t cols, int bits, PackLayout layout,
                    uint8_t* codes) {
  CheckArgs(rows, cols, bits);
  const int64_t words = PackedWordCount(cols, bits, layout);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t pos = BitPosition(j, bits, layout);
      unsigned v = 0;
      for (int t = 0; t < bits; ++t) {
        const int64_t k = pos + t;
        const uint32_t word = AsBits(packed[r * words + k / kPackWordBits]);
        v |= ((word >> (k % kPackWordBits)) & 1u) << t;
      }
      codes[r * cols + j] = static_cast<uint8_t>(v);
    }
  }
}

void PackColumns_ref(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
                     int32_t* packed) {
  CheckArgs(rows, cols, bits);
  const int64_t words = PackedWordCount(rows, bits, layout);
  std::vector<uint32_t> all(static_cast<size_t>(words * cols), 0u);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      const unsigned v = codes[r * cols + c];
      QUANT_CHECK((v >> bits) == 0);
      const int64_t pos = BitPosition(r, bits, layout);
      for (int t = 0; t < bits; ++t) {
        const int64_t k = pos + t;
        all[(k / kPackWordBits) * cols + c] |= ((v >> t) & 1u) << (k % kPackWordBits);
      }
    }
  }
  for (size_t i = 0; i < all.size(); ++i) packed[i] = AsStored(all[i]);
}

void UnpackColumns_ref(const int32_t* packed, int64_t rows, int64_t cols, int bits,
                       PackLayout layout, uint8_t* codes) {
  CheckArgs(rows, cols, bits);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = BitPosition(r, bits, layout);
      unsigned v = 0;
      for (int t = 0; t < bits; ++t) {
        const int64_t k = pos + t;
        const uint32_t word = AsBits(packed[(k / kPackWordBits) * cols + c]);
        v |= ((word >> (k % kPackWordBits)) & 1u) << t;
      }
      codes[r * cols + c] = static_cast<uint8_t>(v);
    }
  }
}

// ---- Streaming versions: a 64-bit accumulator per stream. A value is appended at bit `nbits`
// of the accumulator; whenever 32 bits are complete the low word is emitted. In the
// word-aligned layout a value that would straddle first flushes the (zero-padded) word.

void PackRows(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
              int32_t* packed) {
  CheckArgs(rows, cols, bits);
  const int64_t words = PackedWordCount(cols, bits, layout);
  const bool aligned = layout == PackLayout::kWordAligned;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes + r * cols;
    CheckCodeWidth(src, cols, bits);
    int32_t* dst = packed + r * words;
    uint64_t acc = 0;
    int nbits = 0;
    for (int64_t j = 0; j < cols; ++j) {
      if (aligned && nbits + bits > kPackWordBits) {
        *dst++ = AsStored(static_cast<uint32_t>(acc));
        acc = 0;
        nbits = 0;
      }
      acc |= static_cast<uint64_t>(src[j]) << nbits;
      nbits += bits;
      if (nbits >= kPackWordBits) {
        *dst++ = AsStored(static_cast<uint32_t>(acc));
        acc >>= kPackWordBits;
        nbits -= kPackWordBits;
      }
    }
    if (nbits > 0) *dst++ = AsStored(static_cast<uint32_t>(acc));
    QUANT_CHECK(dst == packed + (r + 1) * words);
  }
}

void UnpackRows(const int32_t* packed, int64_t rows, int64_t cols, int bits, PackLayout layout,
                uint8_t* codes) {
  CheckArgs(rows, cols, bits);
  const int64_t words = PackedWordCount(cols, bits, layout);
  const bool aligned = layout == PackLayout::kWordAligned;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* src = packed + r * words;
    uint8_t* dst = codes + r * cols;
    uint64_t acc = 0;
    int nbits = 0;
    for (int64_t j = 0; j < cols; ++j) {
      if (nbits < bits) {
        // Refill only when the next value needs it, so no word past the row is read. The
        // word-aligned layout drops the padding bits left in the finished word.
        if (aligned) {
          acc = AsBits(*src++);
          nbits = kPackWordBits;
        } else {
          acc |= static_cast<uint64_t>(AsBits(*src++)) << nbits;
          nbits += kPackWordBits;
        }
      }
      dst[j] = static_cast<uint8_t>(acc & mask);
      acc >>= bits;
      nbits -= bits;
    }
  }
}

void PackColumns(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
                 int32_t* packed) {
  CheckArgs(rows, cols, bits);
  const int64_t words = PackedWordCount(rows, bits, layout);
  const bool aligned = layout == PackLayout::kWordAligned;
  // All columns sit at the same stream position, so one bit count serves every accumulator and
  // the codes are read row by row, in memory order.
  std::vector<uint64_t> acc(static_cast<size_t>(cols), 0);
  int nbits = 0;
  int64_t word_row = 0;
  auto emit = [&](bool shift) {
    int32_t* dst = packed + word_row * cols;
    for (int64_t c = 0; c < cols; ++c) {
      dst[c] = AsStored(static_cast<uint32_t>(acc[c]));
      acc[c] = shift ? acc[c] >> kPackWordBits : 0;
    }
    ++word_row;
  };
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes + r * cols;
    CheckCodeWidth(src, cols, bits);
    if (aligned && nbits + bits > kPackWordBits) {
      emit(/*shift=*/false);
      nbits = 0;
    }
    for (int64_t c = 0; c < cols; ++c) acc[c] |= static_cast<uint64_t>(src[c]) << nbits;
    nbits += bits;
    if (nbits >= kPackWordBits) {
      emit(/*shift=*/true);
      nbits -= kPackWordBits;
    }
  }
  if (nbits > 0) emit(/*shift=*/false);
  QUANT_CHECK(word_row == words);
}

void UnpackColumns(const int32_t* packed, int64_t rows, int64_t cols, int bits, PackLayout layout,
                   uint8_t* codes) {
  CheckArgs(rows, cols, bits);
  const bool aligned = layout == PackLayout::kWordAligned;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  std::vector<uint64_t> acc(static_cast<size_t>(cols), 0);
  int nbits = 0;
  int64_t word_row = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (nbits < bits) {
      const int32_t* src = packed + word_row * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const uint64_t word = AsBits(src[c]);
        acc[c] = aligned ? word : acc[c] | (word << nbits);
      }
      nbits = aligned ? kPackWordBits : nbits + kPackWordBits;
      ++word_row;
    }
    uint8_t* dst = codes + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      dst[c] = static_cast<uint8_t>(acc[c] & mask);
      acc[c] >>= bits;
    }
    nbits -= bits;
  }
}

void DequantizeGroups_ref(const uint8_t* codes, int64_t rows, int64_t cols, int64_t group_size,
                          const float* scale, const uint8_t* zero, int symmetric_zero, float* out) {
  QUANT_CHECK(rows >= 0 && cols >= 0 && group_size > 0);
  const int64_t groups = (cols + group_size - 1) / group_size;
  for (int64_t i = 0; i < rows; ++i) {
    // Group by group, so the inner loop is a plain multiply the compiler vectorizes (this runs
    // for every packed weight a model loads).
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t k = i * groups + g;
      const float s = scale[k];
      const float z = static_cast<float>(zero == nullptr ? symmetric_zero : zero[k]);
      const int64_t begin = g * group_size;
      const int64_t end = std::min(cols, begin + group_size);
      const uint8_t* src = codes + i * cols;
      float* dst = out + i * cols;
      for (int64_t j = begin; j < end; ++j) dst[j] = s * (static_cast<float>(src[j]) - z);
    }
  }
}

}  // namespace quant::storage
