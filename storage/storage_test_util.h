// Helpers shared by the storage tests: scratch directories, raw file images and small
// checkpoints built on disk. Tests only write under a fresh temporary directory.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/safetensors.h"
#include "storage/tensor.h"

namespace quant::storage::testing {

// A fresh directory under the test temp dir, removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = ::testing::TempDir() + "storage_test_XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << "mkdtemp " << pattern;
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out.good()) << path;
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// 8-byte little-endian length + header + data, with no padding or checks: for broken files.
inline std::string SafetensorsImage(std::string_view header_json, std::string_view data) {
  std::string out(8, '\0');
  const uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.append(header_json);
  out.append(data);
  return out;
}

template <typename T>
HostTensor MakeTensor(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

// A tensor of `dtype` and `shape` whose bytes are a deterministic pattern of `seed`.
inline HostTensor PatternTensor(DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(NumElements(t.shape) * DTypeSize(dtype));
  for (size_t i = 0; i < t.bytes.size(); ++i) {
    t.bytes[i] = static_cast<uint8_t>(seed + i * 7);
  }
  return t;
}

// Shard file name -> its tensors, in writing order.
using ShardContents = std::map<std::string, std::vector<std::pair<std::string, HostTensor>>>;

// Writes config.json, the shards, and (when `with_index`) model.safetensors.index.json mapping
// every tensor to its shard.
inline void WriteCheckpoint(const std::string& dir, const nlohmann::json& config,
                            const ShardContents& shards, bool with_index = true) {
  WriteBytes(dir + "/config.json", config.dump(2));
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& [file, tensors] : shards) {
    SafetensorsWriter writer;
    writer.SetMetadata("format", "pt");
    for (const auto& [name, t] : tensors) {
      ASSERT_TRUE(writer.Add(name, t).ok()) << name;
      weight_map[name] = file;
    }
    ASSERT_TRUE(writer.Write(dir + "/" + file).ok()) << file;
  }
  if (with_index) {
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    WriteBytes(dir + "/model.safetensors.index.json", index.dump(2));
  }
}

}  // namespace quant::storage::testing
