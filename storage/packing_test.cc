// Tests for bit packing: hand-computed words for straddling 3-bit values and for
// compressed-tensors' documented 4- and 8-bit examples, and the streaming versions against the
// bit-by-bit references on odd shapes (one row, widths that are no multiple of 32/b, empty).
#include "storage/packing.h"

#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace quant::storage {
namespace {

constexpr PackLayout kLayouts[] = {PackLayout::kDense, PackLayout::kWordAligned};

std::vector<uint8_t> RandomCodes(int64_t n, int bits, std::mt19937* rng) {
  std::uniform_int_distribution<int> dist(0, (1 << bits) - 1);
  std::vector<uint8_t> out(static_cast<size_t>(n));
  for (uint8_t& v : out) v = static_cast<uint8_t>(dist(*rng));
  return out;
}

std::vector<int32_t> RandomWords(int64_t n, std::mt19937* rng) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t& w : out) w = static_cast<int32_t>((*rng)());
  return out;
}

std::vector<int32_t> PackRowsRef(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols,
                                 int bits, PackLayout layout) {
  std::vector<int32_t> out(rows * PackedWordCount(cols, bits, layout), 0x5a5a5a5a);
  PackRows_ref(codes.data(), rows, cols, bits, layout, out.data());
  return out;
}

uint32_t U(int32_t w) { return static_cast<uint32_t>(w); }

TEST(PackedWordCountTest, DenseAndWordAligned) {
  // 10 three-bit values fill 30 bits; the 11th straddles into a second word (dense) or starts
  // one (aligned); 21 values take 63 bits = 2 dense words but 3 aligned words of 10.
  EXPECT_EQ(PackedWordCount(10, 3, PackLayout::kDense), 1);
  EXPECT_EQ(PackedWordCount(11, 3, PackLayout::kDense), 2);
  EXPECT_EQ(PackedWordCount(21, 3, PackLayout::kDense), 2);
  EXPECT_EQ(PackedWordCount(21, 3, PackLayout::kWordAligned), 3);
  EXPECT_EQ(PackedWordCount(0, 5, PackLayout::kDense), 0);
  EXPECT_EQ(PackedWordCount(0, 5, PackLayout::kWordAligned), 0);
  EXPECT_EQ(PackedWordCount(64, 2, PackLayout::kDense), 4);
  EXPECT_EQ(PackedWordCount(9, 4, PackLayout::kWordAligned), 2);
  EXPECT_EQ(PackedWordCount(7, 7, PackLayout::kDense), 2);        // 49 bits
  EXPECT_EQ(PackedWordCount(7, 7, PackLayout::kWordAligned), 2);  // 4 per word
}

TEST(PackRowsTest, ThreeBitValuesStraddleWords) {
  // v0..v11 = 0 1 2 3 4 5 6 7 0 1 5 3. By hand: word 0 holds v0..v9 at bits 3j and the low two
  // bits of v10 = 0b101 (01) at bits 30-31 -> 0x40000000; v0..v9 give 0x08FAC688 (v9 = 1 at
  // bit 27 is 0x08000000, v7 = 7 at bit 21 is 0x00E00000, ...). Word 1: v10's high bit at bit
  // 0, v11 = 0b011 at bits 1-3 -> 0b0111 = 7.
  const std::vector<uint8_t> v = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 5, 3};
  for (bool fast : {false, true}) {
    std::vector<int32_t> words(2, -1);
    if (fast) {
      PackRows(v.data(), 1, 12, 3, PackLayout::kDense, words.data());
    } else {
      PackRows_ref(v.data(), 1, 12, 3, PackLayout::kDense, words.data());
    }
    EXPECT_EQ(U(words[0]), 0x48FAC688u) << "fast=" << fast;
    EXPECT_EQ(U(words[1]), 0x7u) << "fast=" << fast;
    std::vector<uint8_t> back(12);
    UnpackRows(words.data(), 1, 12, 3, PackLayout::kDense, back.data());
    EXPECT_EQ(back, v);
  }
  // Word-aligned (compressed-tensors' pack factor 32 // 3 = 10): v10 starts word 1 whole, bits
  // 30-31 of word 0 stay zero: word 0 = 0x08FAC688, word 1 = 5 | 3 << 3 = 0x1D.
  std::vector<int32_t> aligned = PackRowsRef(v, 1, 12, 3, PackLayout::kWordAligned);
  ASSERT_EQ(aligned.size(), 2u);
  EXPECT_EQ(U(aligned[0]), 0x08FAC688u);
  EXPECT_EQ(U(aligned[1]), 0x1Du);
}

TEST(PackRowsTest, MatchesCompressedTensorsExamples) {
  // compressed-tensors' pack_to_int32 docstring: 8-bit [129, 130] (padded to 4 values) packs
  // to 33409 = 0x00008281.
  const std::vector<uint8_t> eight = {129, 130};
  for (PackLayout layout : kLayouts) {
    std::vector<int32_t> w = PackRowsRef(eight, 1, 2, 8, layout);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w[0], 33409);
  }
  // 4 bits: 8 values per word, LSB first: 1..8 -> 0x87654321; a ninth value opens word 2.
  const std::vector<uint8_t> four = {1, 2, 3, 4, 5, 6, 7, 8, 0xF};
  for (PackLayout layout : kLayouts) {
    std::vector<int32_t> w = PackRowsRef(four, 1, 9, 4, layout);
    ASSERT_EQ(w.size(), 2u);
    EXPECT_EQ(U(w[0]), 0x87654321u);
    EXPECT_EQ(U(w[1]), 0xFu);
  }
}

TEST(PackColumnsTest, KnownPattern) {
  // [rows 9, cols 2] at 4 bits: column 0 = 1..9, column 1 = 15 - r. Column streams run down the
  // rows, so word row 0 holds rows 0-7 and word row 1 holds row 8.
  std::vector<uint8_t> codes;
  for (int r = 0; r < 9; ++r) {
    codes.push_back(static_cast<uint8_t>(r + 1));
    codes.push_back(static_cast<uint8_t>(15 - r));
  }
  for (bool fast : {false, true}) {
    std::vector<int32_t> w(4, -1);
    if (fast) {
      PackColumns(codes.data(), 9, 2, 4, PackLayout::kDense, w.data());
    } else {
      PackColumns_ref(codes.data(), 9, 2, 4, PackLayout::kDense, w.data());
    }
    EXPECT_EQ(U(w[0]), 0x87654321u);  // (word row 0, column 0)
    EXPECT_EQ(U(w[1]), 0x89ABCDEFu);  // (word row 0, column 1)
    EXPECT_EQ(U(w[2]), 0x9u);         // (word row 1, column 0)
    EXPECT_EQ(U(w[3]), 0x7u);         // (word row 1, column 1)
  }
  // 3 bits, one column of 11 rows: the same stream as a row of 11 values.
  const std::vector<uint8_t> col = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 5};
  std::vector<int32_t> w(2);
  PackColumns(col.data(), 11, 1, 3, PackLayout::kDense, w.data());
  EXPECT_EQ(U(w[0]), 0x48FAC688u);
  EXPECT_EQ(U(w[1]), 0x1u);
}

// Odd shapes: one row, widths around multiples of 32/b, empty.
const std::vector<int64_t> kRowCounts = {0, 1, 2, 3, 7, 9, 33};
const std::vector<int64_t> kColCounts = {0,  1,  2,  3,  5,  7,  8,  9,  10,  11, 15,
                                         16, 31, 32, 33, 63, 64, 65, 96, 127, 130};

TEST(PackingFastTest, RowsMatchReferenceByteForByte) {
  std::mt19937 rng(20261125);
  for (int bits = kMinPackBits; bits <= kMaxPackBits; ++bits) {
    for (PackLayout layout : kLayouts) {
      for (int64_t rows : kRowCounts) {
        for (int64_t cols : kColCounts) {
          SCOPED_TRACE(testing::Message() << "bits " << bits << " layout " << PackLayoutName(layout)
                                          << " [" << rows << ", " << cols << "]");
          const std::vector<uint8_t> codes = RandomCodes(rows * cols, bits, &rng);
          const int64_t n_words = rows * PackedWordCount(cols, bits, layout);
          std::vector<int32_t> ref = PackRowsRef(codes, rows, cols, bits, layout);
          std::vector<int32_t> fast(n_words, 0x3c3c3c3c);
          PackRows(codes.data(), rows, cols, bits, layout, fast.data());
          ASSERT_EQ(fast, ref);
          // Round trips through both unpackers.
          std::vector<uint8_t> back_ref(codes.size(), 0xEE);
          std::vector<uint8_t> back_fast(codes.size(), 0xEE);
          UnpackRows_ref(ref.data(), rows, cols, bits, layout, back_ref.data());
          UnpackRows(ref.data(), rows, cols, bits, layout, back_fast.data());
          ASSERT_EQ(back_ref, codes);
          ASSERT_EQ(back_fast, codes);
          // Any words (padding bits set too) decode the same way in both.
          const std::vector<int32_t> noise = RandomWords(n_words, &rng);
          UnpackRows_ref(noise.data(), rows, cols, bits, layout, back_ref.data());
          UnpackRows(noise.data(), rows, cols, bits, layout, back_fast.data());
          ASSERT_EQ(back_fast, back_ref);
        }
      }
    }
  }
}

TEST(PackingFastTest, ColumnsMatchReferenceByteForByte) {
  std::mt19937 rng(7);
  for (int bits = kMinPackBits; bits <= kMaxPackBits; ++bits) {
    for (PackLayout layout : kLayouts) {
      for (int64_t rows : kColCounts) {  // the packed dim gets the odd lengths here
        for (int64_t cols : kRowCounts) {
          SCOPED_TRACE(testing::Message() << "bits " << bits << " layout " << PackLayoutName(layout)
                                          << " [" << rows << ", " << cols << "]");
          const std::vector<uint8_t> codes = RandomCodes(rows * cols, bits, &rng);
          const int64_t n_words = PackedWordCount(rows, bits, layout) * cols;
          std::vector<int32_t> ref(n_words, 0x11111111);
          std::vector<int32_t> fast(n_words, 0x22222222);
          PackColumns_ref(codes.data(), rows, cols, bits, layout, ref.data());
          PackColumns(codes.data(), rows, cols, bits, layout, fast.data());
          ASSERT_EQ(fast, ref);
          std::vector<uint8_t> back_ref(codes.size(), 0xEE);
          std::vector<uint8_t> back_fast(codes.size(), 0xEE);
          UnpackColumns_ref(ref.data(), rows, cols, bits, layout, back_ref.data());
          UnpackColumns(ref.data(), rows, cols, bits, layout, back_fast.data());
          ASSERT_EQ(back_ref, codes);
          ASSERT_EQ(back_fast, codes);
          const std::vector<int32_t> noise = RandomWords(n_words, &rng);
          UnpackColumns_ref(noise.data(), rows, cols, bits, layout, back_ref.data());
          UnpackColumns(noise.data(), rows, cols, bits, layout, back_fast.data());
          ASSERT_EQ(back_fast, back_ref);
        }
      }
    }
  }
}

TEST(PackingFastTest, ColumnPackingIsRowPackingOfTheTranspose) {
  std::mt19937 rng(11);
  for (int bits : {2, 3, 4, 5, 8}) {
    for (PackLayout layout : kLayouts) {
      const int64_t rows = 37;
      const int64_t cols = 3;
      const std::vector<uint8_t> codes = RandomCodes(rows * cols, bits, &rng);
      std::vector<uint8_t> transposed(codes.size());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) transposed[c * rows + r] = codes[r * cols + c];
      }
      const int64_t words = PackedWordCount(rows, bits, layout);
      std::vector<int32_t> by_col(words * cols);
      PackColumns(codes.data(), rows, cols, bits, layout, by_col.data());
      const std::vector<int32_t> by_row = PackRowsRef(transposed, cols, rows, bits, layout);
      for (int64_t w = 0; w < words; ++w) {
        for (int64_t c = 0; c < cols; ++c) {
          EXPECT_EQ(by_col[w * cols + c], by_row[c * words + w]) << "bits " << bits;
        }
      }
    }
  }
}

TEST(PackingFastTest, LayoutsAgreeWhenBitsDivide32) {
  std::mt19937 rng(3);
  for (int bits : {1, 2, 4, 8}) {
    const std::vector<uint8_t> codes = RandomCodes(5 * 37, bits, &rng);
    EXPECT_EQ(PackRowsRef(codes, 5, 37, bits, PackLayout::kDense),
              PackRowsRef(codes, 5, 37, bits, PackLayout::kWordAligned))
        << "bits " << bits;
  }
}

TEST(PackingDeathTest, CodeWiderThanBitsIsABug) {
  const std::vector<uint8_t> codes = {1, 8};  // 8 needs 4 bits
  std::vector<int32_t> out(1);
  EXPECT_DEATH(PackRows(codes.data(), 1, 2, 3, PackLayout::kDense, out.data()), "");
  EXPECT_DEATH(PackRows_ref(codes.data(), 1, 2, 3, PackLayout::kDense, out.data()), "");
  EXPECT_DEATH(PackColumns(codes.data(), 2, 1, 3, PackLayout::kDense, out.data()), "");
}

TEST(DequantizeGroupsTest, HandExample) {
  // 2 rows x 4 cols, groups of 2. Row 0 asym zeros (1, 2), row 1 (0, 3).
  const std::vector<uint8_t> codes = {0, 1, 2, 3, 3, 2, 1, 0};
  const std::vector<float> scale = {0.5f, 2.0f, 1.0f, 0.25f};
  const std::vector<uint8_t> zero = {1, 2, 0, 3};
  std::vector<float> out(8);
  DequantizeGroups_ref(codes.data(), 2, 4, 2, scale.data(), zero.data(), 0, out.data());
  EXPECT_EQ(out, (std::vector<float>{-0.5f, 0.0f, 0.0f, 2.0f, 3.0f, 2.0f, -0.5f, -0.75f}));
  // Symmetric: the zero is 2^(bits-1) everywhere (4 for 3 bits).
  DequantizeGroups_ref(codes.data(), 2, 4, 2, scale.data(), nullptr, SymmetricZero(3), out.data());
  EXPECT_EQ(out, (std::vector<float>{-2.0f, -1.5f, -4.0f, -2.0f, -1.0f, -2.0f, -0.75f, -1.0f}));
  // A last partial group (cols 5, group 2 -> 3 groups).
  const std::vector<uint8_t> c5 = {1, 1, 1, 1, 1};
  const std::vector<float> s3 = {1.0f, 2.0f, 4.0f};
  std::vector<float> o5(5);
  DequantizeGroups_ref(c5.data(), 1, 5, 2, s3.data(), nullptr, 0, o5.data());
  EXPECT_EQ(o5, (std::vector<float>{1.0f, 1.0f, 2.0f, 2.0f, 4.0f}));
}

}  // namespace
}  // namespace quant::storage
