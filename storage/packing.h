// Bit packing of unsigned b-bit codes into int32 words, the layout of `weight_packed` and
// `weight_zero_point` in quantized checkpoints (DESIGN.md section 7, docs/formats.md), and the
// names and decode rule that the exporter and the checkpoint reader share. No torch here.
#pragma once

#include <bit>
#include <cstdint>
#include <string_view>

namespace quant::storage {

// One packed word: 32 bits, stored as a little-endian int32 in safetensors ("I32").
inline constexpr int kPackWordBits = 32;
inline constexpr int kMinPackBits = 1;
// Codes are uint8 (quantizer.h), so a value never has more than 8 bits.
inline constexpr int kMaxPackBits = 8;
static_assert(kMaxPackBits <= 8, "codes travel as uint8");
static_assert(kPackWordBits == 8 * sizeof(int32_t), "a packed word is one int32");
// safetensors stores little-endian; we write our words as they lie in memory.
static_assert(std::endian::native == std::endian::little, "packing assumes a little-endian host");

// Where value j of a stream lies.
//
// kDense: the stream is one run of bits; value j occupies stream bits [j*b, j*b + b), and stream
// bit k is bit (k % 32) of word k / 32 (LSB first). Values may straddle two words (b = 3, 5, 6,
// 7); the tail of the last word is zero. Example, b = 3, values v0..v11 of one row:
//
//               word 1                          word 0
//   bit   31 ... 4 | 3 2 1 |   0    ||   31 30  | 29 28 27 | ... | 5 4 3 | 2 1 0
//   value   zero   |  v11  | v10[2] || v10[1:0] |    v9    | ... |  v1   |  v0
//
//   v10 straddles: its low two bits are word 0's bits 30-31, its high bit is word 1's bit 0.
//
// kWordAligned: compressed-tensors' pack_to_int32 — floor(32 / b) values per word, value j in
// word j / floor(32/b) at bits [(j % floor(32/b)) * b, ... + b), no value straddles, and the
// 32 % b high bits of every word are zero. For b = 1, 2, 4 and 8 (b divides 32) the two layouts
// are the same bytes: e.g. b = 4 puts 8 values per word, v0 in bits 0-3, v7 in bits 28-31.
enum class PackLayout { kDense, kWordAligned };

std::string_view PackLayoutName(PackLayout layout);  // "dense" | "word-aligned"

// Number of int32 words that hold `count` values of `bits` bits in `layout`.
// Preconditions: count >= 0, 1 <= bits <= 8.
int64_t PackedWordCount(int64_t count, int bits, PackLayout layout);

// ---- Along a row (weight_packed): [rows, cols] codes -> [rows, PackedWordCount(cols)] words.
// Each row is its own stream (rows start at a word boundary). Every code must be < 2^bits
// (checked: a wider code is a bug of the caller). `packed` receives rows * words int32.
void PackRows_ref(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
                  int32_t* packed);
void PackRows(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
              int32_t* packed);
// The inverse: reads rows * PackedWordCount(cols) words, writes rows * cols codes. Bits outside
// the values (padding) are ignored, so any word contents decode to codes < 2^bits.
void UnpackRows_ref(const int32_t* packed, int64_t rows, int64_t cols, int bits, PackLayout layout,
                    uint8_t* codes);
void UnpackRows(const int32_t* packed, int64_t rows, int64_t cols, int bits, PackLayout layout,
                uint8_t* codes);

// ---- Along the output dim (weight_zero_point): [rows, cols] codes ->
// [PackedWordCount(rows), cols] words; column c is one stream over rows 0..rows-1, and word
// (w, c) holds stream bits [32w, 32w + 32) of column c. compressed-tensors packs zero points
// this way (its packed_dim = 0).
void PackColumns_ref(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
                     int32_t* packed);
void PackColumns(const uint8_t* codes, int64_t rows, int64_t cols, int bits, PackLayout layout,
                 int32_t* packed);
void UnpackColumns_ref(const int32_t* packed, int64_t rows, int64_t cols, int bits,
                       PackLayout layout, uint8_t* codes);
void UnpackColumns(const int32_t* packed, int64_t rows, int64_t cols, int bits, PackLayout layout,
                   uint8_t* codes);

// ---- Packed-weight checkpoints (docs/formats.md): tensor names and config values that the
// writer (worker/quant/export.cc) and the reader (storage/checkpoint.cc) must agree on.
// A quantized linear `<module>` stores these instead of `<module>.weight`:
inline constexpr std::string_view kWeightPackedSuffix = ".weight_packed";         // I32
inline constexpr std::string_view kWeightScaleSuffix = ".weight_scale";           // BF16
inline constexpr std::string_view kWeightZeroPointSuffix = ".weight_zero_point";  // I32, asym only
inline constexpr std::string_view kWeightShapeSuffix = ".weight_shape";           // I64 [2]
// compressed-tensors (>= 0.18) quantization_config, the format vLLM loads.
inline constexpr std::string_view kCompressedTensorsMethod = "compressed-tensors";
inline constexpr std::string_view kPackQuantizedFormat = "pack-quantized";
// Ours: the same tensors at the true bit width, densely packed (version 1).
inline constexpr std::string_view kNativeMethod = "moe-quant-native";
inline constexpr std::string_view kNativeFormat = "dense-packed";
inline constexpr int kNativeFormatVersion = 1;

// Zero point of a symmetric grid of `bits` bits: the stored value that decodes to 0. Both
// formats store symmetric codes as q + 2^(bits-1) (compressed-tensors' unsigned offset).
inline constexpr int SymmetricZero(int bits) { return 1 << (bits - 1); }
static_assert(SymmetricZero(4) == 8 && SymmetricZero(8) == 128);

// The decode rule of both formats, as a plain reference:
//   w[i][j] = scale[i][j / group_size] * (float(u[i][j]) - float(zero[i][j / group_size]))
// u: codes [rows, cols]; scale: float [rows, groups]; zero: [rows, groups], or nullptr for a
// symmetric grid, whose zero is `symmetric_zero` everywhere. groups = ceil(cols / group_size).
// The difference is an exact small integer, so one float rounding happens, in the product: the
// same as QuantizedWeight::Dequantize.
void DequantizeGroups_ref(const uint8_t* codes, int64_t rows, int64_t cols, int64_t group_size,
                          const float* scale, const uint8_t* zero, int symmetric_zero, float* out);

}  // namespace quant::storage
