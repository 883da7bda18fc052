// Encode throughput: tokenizer_bench <tokenizer.json> <text file> [repeats]. Prints one JSON
// line: the first (cold-cache) encode and the mean of `repeats` warm encodes, in MB/s (1e6 B).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "worker/tokenizer/tokenizer.h"

namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <tokenizer.json> <text file> [repeats]\n", argv[0]);
    return 2;
  }
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 20;
  auto tokenizer = quant::tokenizer::Tokenizer::FromFile(argv[1]);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "%s: cannot read\n", argv[2]);
    return 1;
  }
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  auto start = std::chrono::steady_clock::now();
  const size_t tokens = (*tokenizer)->Encode(text, /*add_special_tokens=*/false).size();
  const double cold_s = SecondsSince(start);

  start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) (void)(*tokenizer)->Encode(text, false);
  const double warm_s = repeats > 0 ? SecondsSince(start) / repeats : 0.0;

  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf(
      "{\"text\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"repeats\": %d, \"cold_s\": %.4f, "
      "\"cold_mb_per_s\": %.2f, \"warm_s\": %.4f, \"warm_mb_per_s\": %.2f}\n",
      argv[2], text.size(), tokens, repeats, cold_s, mb / cold_s, warm_s,
      warm_s > 0 ? mb / warm_s : 0.0);
  return 0;
}
