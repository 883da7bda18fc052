// The GPTQ block step and the packing kernels on the GPU against their C++ references, on random
// inputs of several shapes (odd ones included), outputs poisoned first. "skipped" without a GPU.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda_test_util.h"
#include "kernels/gptq_block_cuda.h"
#include "kernels/pack_cuda.h"

using namespace quant::kernels;

using namespace quant::kernels::testing;

template <typename T>
T* Dev(const std::vector<T>& v) { return ToDevice(v); }
template <typename T>
std::vector<T> Host(const T* d, size_t n) { return ToHost(d, n); }

// pad > 0: w, w0, err and codes are views of wider row-major matrices (row strides count + pad,
// + 2 pad, + 3 pad and + pad); the columns past count must come back untouched.
bool GptqCase(int64_t members, int64_t rows, int64_t count, int64_t group, int bits,
              std::mt19937& rng, bool with_w0 = false, int64_t pad = 0) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t groups = (count + group - 1) / group;
  std::vector<int32_t> goc(count);
  for (int64_t i = 0; i < count; ++i) goc[i] = static_cast<int32_t>(i / group);
  // U: an upper-triangular factor with a positive diagonal, as the Cholesky of H^-1 gives.
  std::vector<float> u(members * count * count, 0.0f);
  for (int64_t m = 0; m < members; ++m) {
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t j = i; j < count; ++j) {
        u[(m * count + i) * count + j] = i == j ? 0.5f + std::fabs(normal(rng)) : 0.1f * normal(rng);
      }
    }
  }
  const int64_t ld_w = count + pad, ld_w0 = count + 2 * pad, ld_err = count + 3 * pad;
  const int64_t ld_codes = count + pad;
  std::vector<float> w(members * rows * ld_w), scales(members * rows * groups),
      zeros(members * rows * groups);
  for (float& x : w) x = 0.05f * normal(rng);
  // The pre-update weights (one-Cholesky form): w plus noise.
  std::vector<float> w0(members * rows * ld_w0);
  for (size_t k = 0; k < w0.size(); ++k) w0[k] = w[k % w.size()] + 0.01f * normal(rng);
  for (float& s : scales) s = (rng() & 1 ? 1.0f : -1.0f) * (0.01f + 0.02f * std::fabs(normal(rng)));
  for (float& z : zeros) z = static_cast<float>(rng() % (1u << bits));
  GptqBlockArgs a;
  a.members = members;
  a.rows = rows;
  a.count = count;
  a.groups = groups;
  a.maxq = (1 << bits) - 1;
  a.ld_w = ld_w;
  a.ld_w0 = ld_w0;
  a.ld_err = ld_err;
  a.ld_codes = ld_codes;
  // Outputs poisoned alike on both sides (so untouched padding compares equal).
  const size_t n_err = members * rows * ld_err, n_codes = members * rows * ld_codes;
  std::vector<float> w_ref = w, err_ref(n_err, 3.0e38f);
  std::vector<uint8_t> codes_ref(n_codes, 0xee);
  a.group_of_col = goc.data();
  a.hinv = u.data();
  a.scales = scales.data();
  a.zeros = zeros.data();
  a.w = w_ref.data();
  a.codes = codes_ref.data();
  a.err = err_ref.data();
  if (with_w0) a.w0 = w0.data();
  GptqBlock_ref(a);
  GptqBlockArgs d = a;
  d.group_of_col = Dev(goc);
  d.hinv = Dev(u);
  d.scales = Dev(scales);
  d.zeros = Dev(zeros);
  d.w = Dev(w);
  d.codes = Dev(std::vector<uint8_t>(n_codes, 0xee));
  d.err = Dev(std::vector<float>(n_err, 3.0e38f));
  if (with_w0) d.w0 = Dev(w0);
  CHECK_CUDA(GptqBlockCuda(d, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const bool ok = Host(d.w, w.size()) == w_ref && Host(d.codes, n_codes) == codes_ref &&
                  Host(d.err, n_err) == err_ref;
  std::printf("gptq block %lld x %lld x %lld g%lld %d-bit%s%s: %s\n", (long long)members,
              (long long)rows, (long long)count, (long long)group, bits,
              with_w0 ? " (w0)" : "", pad > 0 ? (" (strided +" + std::to_string(pad) + ")").c_str() : "",
              ok ? "bit-identical" : "FAIL");
  if (with_w0) CHECK_CUDA(cudaFree(const_cast<float*>(d.w0)));
  for (const void* p : {(const void*)d.group_of_col, (const void*)d.hinv, (const void*)d.scales,
                        (const void*)d.zeros, (const void*)d.w, (const void*)d.codes,
                        (const void*)d.err}) {
    CHECK_CUDA(cudaFree(const_cast<void*>(p)));
  }
  return ok;
}

bool PackCase(const PackStreams& p, int64_t total_codes, std::mt19937& rng) {
  std::vector<uint8_t> codes(total_codes);
  for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() & ((1u << p.bits) - 1u));
  const int64_t total_words = p.streams * PackWords(p.count, p.bits, p.word_aligned);
  std::vector<int32_t> want(total_words);
  Pack_ref(p, codes.data(), want.data());
  uint8_t* dc = Dev(codes);
  int32_t* dw = Dev(std::vector<int32_t>(total_words, -1));
  CHECK_CUDA(PackCuda(p, dc, dw, nullptr));
  uint8_t* back = Dev(std::vector<uint8_t>(total_codes, 0xff));
  CHECK_CUDA(UnpackCuda(p, dw, back, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const bool ok = Host(dw, total_words) == want && Host(back, total_codes) == codes;
  CHECK_CUDA(cudaFree(dc));
  CHECK_CUDA(cudaFree(dw));
  CHECK_CUDA(cudaFree(back));
  return ok;
}

// Usage: gptq_pack_cuda_test [gptq] (gptq: the GPTQ block cases only, for compute-sanitizer).
int main(int argc, char** argv) {
  const bool gptq_only = argc > 1 && std::string(argv[1]) == "gptq";
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("gptq_pack_cuda_test: no CUDA device: skipped\n");
    return 0;
  }
  std::mt19937 rng(99);
  bool ok = true;
  ok = GptqCase(1, 1, 1, 1, 2, rng) && ok;
  ok = GptqCase(2, 65, 128, 128, 3, rng) && ok;
  ok = GptqCase(3, 130, 96, 32, 4, rng) && ok;
  ok = GptqCase(1, 257, 77, 64, 8, rng) && ok;
  ok = GptqCase(4, 2048, 128, 128, 2, rng) && ok;
  ok = GptqCase(2, 513, 13, 8, 3, rng) && ok;  // a full register chunk and a partial one
  ok = GptqCase(3, 130, 96, 32, 4, rng, /*with_w0=*/true) && ok;
  ok = GptqCase(2, 513, 13, 8, 3, rng, /*with_w0=*/true) && ok;
  ok = GptqCase(4, 2048, 128, 128, 3, rng, /*with_w0=*/true) && ok;
  // Views of wider matrices: 16-byte-aligned strides (the vector path) and odd ones.
  ok = GptqCase(2, 300, 128, 128, 3, rng, /*with_w0=*/true, /*pad=*/8) && ok;
  ok = GptqCase(2, 300, 128, 64, 4, rng, /*with_w0=*/false, /*pad=*/8) && ok;
  ok = GptqCase(3, 130, 96, 32, 4, rng, /*with_w0=*/true, /*pad=*/3) && ok;
  ok = GptqCase(2, 77, 13, 8, 3, rng, /*with_w0=*/true, /*pad=*/5) && ok;
  if (gptq_only) {
    std::printf("%s\n", ok ? "gptq block: all bit-identical" : "FAIL");
    return ok ? 0 : 1;
  }
  int pack_cases = 0, pack_ok = 0;
  for (int bits = 1; bits <= 8; ++bits) {
    for (bool aligned : {false, true}) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 129}, {2048, 7168}}) {
        for (bool columns : {false, true}) {
          const PackStreams p = columns ? ColumnStreams(rows, cols, bits, aligned)
                                        : RowStreams(rows, cols, bits, aligned);
          ++pack_cases;
          if (PackCase(p, rows * cols, rng)) {
            ++pack_ok;
          } else {
            ok = false;
            std::printf("pack %d bits %s %lld x %lld %s: FAIL\n", bits,
                        aligned ? "word-aligned" : "dense", (long long)rows, (long long)cols,
                        columns ? "columns" : "rows");
          }
        }
      }
    }
  }
  std::printf("pack/unpack: %d of %d cases bit-identical to the reference\n", pack_ok, pack_cases);
  std::printf("%s\n", ok ? "all cases agree" : "MISMATCH");
  return ok ? 0 : 1;
}
