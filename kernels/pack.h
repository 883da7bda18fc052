// Dense b-bit packing (b = 1..8) of code streams into int32 words, LSB first: the layouts of
// storage/packing.h (kDense: values may straddle words; word-aligned: floor(32/b) values per
// word), generalised to strided streams so one kernel serves rows (weight_packed) and columns
// (weight_zero_point). Framework-free; pack_ref.cc is the reference, pack.cu the CUDA version;
// pack_test checks the reference against storage's packing.
#pragma once

#include <cstdint>

namespace quant::kernels {

struct PackStreams {
  int64_t streams = 0;             // rows (along a row) or columns (along the output dim)
  int64_t count = 0;               // values per stream
  int bits = 0;                    // 1..8
  bool word_aligned = false;
  int64_t code_stream_stride = 0;  // codes[s * code_stream_stride + j * code_elem_stride]
  int64_t code_elem_stride = 0;
  int64_t word_stream_stride = 0;  // words[s * word_stream_stride + w * word_elem_stride]
  int64_t word_elem_stride = 0;
};

// Words per stream.
int64_t PackWords(int64_t count, int bits, bool word_aligned);
// Along rows of a [rows, cols] code matrix, and along its columns.
PackStreams RowStreams(int64_t rows, int64_t cols, int bits, bool word_aligned);
PackStreams ColumnStreams(int64_t rows, int64_t cols, int bits, bool word_aligned);

void Pack_ref(const PackStreams& p, const uint8_t* codes, int32_t* words);
void Unpack_ref(const PackStreams& p, const int32_t* words, uint8_t* codes);

}  // namespace quant::kernels
