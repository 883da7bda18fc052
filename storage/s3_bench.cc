// Upload and ranged-read throughput of the S3 client against an endpoint (scripts/s3-bench.sh
// runs it against s3rver on loopback next to `aws s3 cp` of the same bytes). Prints one JSON line.
// Usage: s3_bench --endpoint URL --bucket B [--mib 256] [--part-mib 16] [--range-kib 1024]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "storage/s3_client.h"

int main(int argc, char** argv) {
  std::string endpoint, bucket = "bench";
  uint64_t mib = 256, part_mib = 16, range_kib = 1024;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--endpoint") endpoint = v;
    if (k == "--bucket") bucket = v;
    if (k == "--mib") mib = std::strtoull(v.c_str(), nullptr, 10);
    if (k == "--part-mib") part_mib = std::strtoull(v.c_str(), nullptr, 10);
    if (k == "--range-kib") range_kib = std::strtoull(v.c_str(), nullptr, 10);
  }
  quant::storage::S3Config config;
  config.endpoint = endpoint;
  auto resolved = quant::storage::ResolveS3Config(config);
  if (!resolved.ok()) {
    std::fprintf(stderr, "s3_bench: %s\n", std::string(resolved.status().message()).c_str());
    return 1;
  }
  auto s3 = quant::storage::S3Client::Create(*resolved);
  std::string data(mib << 20, '\0');
  uint32_t x = 12345;
  for (char& c : data) c = static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  absl::Status put = (*s3)->PutMultipart(bucket, "bench.bin", data, part_mib << 20);
  const double put_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!put.ok()) {
    std::fprintf(stderr, "s3_bench: %s\n", std::string(put.message()).c_str());
    return 1;
  }
  // Ranged reads of the whole object in range_kib pieces (a lazy safetensors reader's pattern).
  t0 = Clock::now();
  uint64_t got = 0;
  bool same = true;
  for (uint64_t off = 0; off < data.size(); off += range_kib << 10) {
    const uint64_t end = std::min<uint64_t>(data.size(), off + (range_kib << 10));
    auto part = (*s3)->Get(bucket, "bench.bin", std::make_pair(off, end));
    if (!part.ok()) {
      std::fprintf(stderr, "s3_bench: %s\n", std::string(part.status().message()).c_str());
      return 1;
    }
    same = same && part->compare(0, std::string::npos, data, off, end - off) == 0;
    got += part->size();
  }
  const double get_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("{\"bench\":\"s3\",\"mib\":%llu,\"part_mib\":%llu,\"range_kib\":%llu,"
              "\"upload_s\":%.3f,\"upload_mib_s\":%.1f,\"ranged_read_s\":%.3f,"
              "\"ranged_read_mib_s\":%.1f,\"read_back_equal\":%s}\n",
              static_cast<unsigned long long>(mib), static_cast<unsigned long long>(part_mib),
              static_cast<unsigned long long>(range_kib), put_s, mib / put_s, get_s,
              got / 1048576.0 / get_s, same ? "true" : "false");
  return same ? 0 : 1;
}
