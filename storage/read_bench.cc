// Read throughput of a checkpoint through Checkpoint::ReadRaw and ReadF32, one JSON line, to
// set beside `cat <shards> > /dev/null` (docs/benchmarks.md). MB = 10^6 bytes.
// Usage: read_bench <checkpoint_dir> [--repeat N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "storage/checkpoint.h"

namespace {

struct PassResult {
  uint64_t tensors = 0;
  uint64_t file_bytes = 0;  // bytes read from the shards
  uint64_t out_bytes = 0;   // bytes handed to the caller (4 per element for ReadF32)
  double seconds = 0;
};

// Reads every tensor once; `f32` picks ReadF32 over ReadRaw. Returns false on a read error.
bool Pass(const quant::storage::Checkpoint& ckpt, bool f32, PassResult* result) {
  const uint64_t before = ckpt.bytes_read();
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& name : ckpt.Names()) {
    const quant::storage::TensorInfo* info = ckpt.Info(name);
    // ReadF32 refuses integer tensors; those are read raw in both passes.
    const bool decodable =
        info->dtype == quant::storage::DType::kBF16 || info->dtype == quant::storage::DType::kF16 ||
        info->dtype == quant::storage::DType::kF32 || info->dtype == quant::storage::DType::kF64 ||
        info->dtype == quant::storage::DType::kF8E4M3;
    absl::StatusOr<quant::storage::HostTensor> t =
        f32 && decodable ? ckpt.ReadF32(name) : ckpt.ReadRaw(name);
    if (!t.ok()) {
      std::fprintf(stderr, "read_bench: %s\n", std::string(t.status().message()).c_str());
      return false;
    }
    ++result->tensors;
    result->out_bytes += t->bytes.size();
  }
  result->seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result->file_bytes += ckpt.bytes_read() - before;
  return true;
}

std::string PassJson(const PassResult& r) {
  const double mb_per_s = r.seconds > 0 ? r.file_bytes / 1e6 / r.seconds : 0.0;
  return absl::StrFormat(
      "{\"tensors\":%d,\"bytes\":%d,\"out_bytes\":%d,\"seconds\":%.6f,\"mb_per_s\":%.1f}",
      r.tensors, r.file_bytes, r.out_bytes, r.seconds, mb_per_s);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int repeat = 1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeat") && i + 1 < argc) {
      repeat = std::atoi(argv[++i]);
    } else if (dir.empty() && argv[i][0] != '-') {
      dir = argv[i];
    } else {
      dir.clear();
      break;
    }
  }
  if (dir.empty() || repeat < 1) {
    std::fprintf(stderr, "usage: read_bench <checkpoint_dir> [--repeat N]\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<quant::storage::Checkpoint>> ckpt =
      quant::storage::Checkpoint::Open(dir);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "read_bench: %s\n", std::string(ckpt.status().message()).c_str());
    return 1;
  }
  // Each pass reads the whole checkpoint `repeat` times; after the first, from the page cache.
  PassResult raw, f32;
  for (int r = 0; r < repeat; ++r) {
    if (!Pass(**ckpt, /*f32=*/false, &raw)) return 1;
  }
  for (int r = 0; r < repeat; ++r) {
    if (!Pass(**ckpt, /*f32=*/true, &f32)) return 1;
  }
  std::string escaped_dir;
  for (char c : dir) {
    if (c == '"' || c == '\\') escaped_dir += '\\';
    escaped_dir += c;
  }
  std::printf("{\"dir\":\"%s\",\"shard_bytes\":%llu,\"repeat\":%d,\"raw\":%s,\"f32\":%s}\n",
              escaped_dir.c_str(), static_cast<unsigned long long>((*ckpt)->total_bytes()), repeat,
              PassJson(raw).c_str(), PassJson(f32).c_str());
  return 0;
}
