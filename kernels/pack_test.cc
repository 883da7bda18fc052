// The kernels' packing reference against storage's packing (the bytes our checkpoints hold), for
// every width, both layouts, along rows and along columns, odd shapes included.
#include "kernels/pack.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "storage/packing.h"

namespace quant::kernels {
namespace {

TEST(PackRef, MatchesStoragePacking) {
  std::mt19937 rng(7);
  for (int bits = 1; bits <= 8; ++bits) {
    for (bool aligned : {false, true}) {
      const storage::PackLayout layout =
          aligned ? storage::PackLayout::kWordAligned : storage::PackLayout::kDense;
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {5, 96}, {17, 129}}) {
        std::vector<uint8_t> codes(rows * cols);
        for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
        // Along rows.
        const int64_t words = storage::PackedWordCount(cols, bits, layout);
        ASSERT_EQ(words, PackWords(cols, bits, aligned));
        std::vector<int32_t> want(rows * words), got(rows * words, -1);
        storage::PackRows_ref(codes.data(), rows, cols, bits, layout, want.data());
        Pack_ref(RowStreams(rows, cols, bits, aligned), codes.data(), got.data());
        EXPECT_EQ(got, want) << bits << " bits, rows";
        std::vector<uint8_t> back(codes.size(), 0xff);
        Unpack_ref(RowStreams(rows, cols, bits, aligned), got.data(), back.data());
        EXPECT_EQ(back, codes);
        // Along columns.
        const int64_t cwords = storage::PackedWordCount(rows, bits, layout);
        std::vector<int32_t> cwant(cwords * cols), cgot(cwords * cols, -1);
        storage::PackColumns_ref(codes.data(), rows, cols, bits, layout, cwant.data());
        Pack_ref(ColumnStreams(rows, cols, bits, aligned), codes.data(), cgot.data());
        EXPECT_EQ(cgot, cwant) << bits << " bits, columns";
        std::fill(back.begin(), back.end(), 0xff);
        Unpack_ref(ColumnStreams(rows, cols, bits, aligned), cgot.data(), back.data());
        EXPECT_EQ(back, codes);
      }
    }
  }
}

}  // namespace
}  // namespace quant::kernels
