// Tests for safetensors parsing, ranged reads and the writer: one test per failure mode, each
// checking that the error names the file; a layout check of written files from python3.
#include "storage/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/storage_test_util.h"

namespace quant::storage {
namespace {

using ::quant::storage::testing::MakeTensor;
using ::quant::storage::testing::PatternTensor;
using ::quant::storage::testing::ReadBytes;
using ::quant::storage::testing::SafetensorsImage;
using ::quant::storage::testing::ScratchDir;
using ::quant::storage::testing::WriteBytes;
using ::testing::HasSubstr;

// Writes `image` to a file and opens it; returns the status (the file must not open).
absl::Status OpenImage(const ScratchDir& dir, const std::string& image, std::string* path) {
  *path = dir.File("t.safetensors");
  WriteBytes(*path, image);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(*path);
  EXPECT_FALSE(f.ok()) << "opened a broken file";
  return f.status();
}

// Asserts `status` fails with `code` and a single-line message naming `path` and `problem`.
void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& path,
                 const std::string& problem) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  EXPECT_THAT(std::string(status.message()), HasSubstr(problem));
  EXPECT_EQ(status.message().find('\n'), std::string_view::npos) << status;
}

// A one-tensor header with the given fields, the tensor named "w".
std::string OneTensorHeader(const std::string& dtype, const std::string& shape,
                            const std::string& offsets) {
  return "{\"w\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets +
         "}}";
}

// ---- Failure modes, through SafetensorsFile::Open ----

TEST(SafetensorsOpenTest, MissingFileIsNotFound) {
  ScratchDir dir;
  const std::string path = dir.File("absent.safetensors");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ExpectError(f.status(), absl::StatusCode::kNotFound, path, "cannot open");
}

TEST(SafetensorsOpenTest, DirectoryIsNotARegularFile) {
  ScratchDir dir;
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(dir.path());
  ExpectError(f.status(), absl::StatusCode::kInvalidArgument, dir.path(), "not a regular file");
}

TEST(SafetensorsOpenTest, FileShorterThanEightBytes) {
  ScratchDir dir;
  for (size_t n : {0, 1, 7}) {
    std::string path;
    absl::Status s = OpenImage(dir, std::string(n, '\x01'), &path);
    ExpectError(s, absl::StatusCode::kDataLoss, path, "shorter than the 8-byte header length");
  }
}

TEST(SafetensorsOpenTest, HeaderLengthPastEndOfFile) {
  ScratchDir dir;
  std::string image = SafetensorsImage("{}", "");
  image[0] = 100;  // claims 100 header bytes; the file has 2
  std::string path;
  ExpectError(OpenImage(dir, image, &path), absl::StatusCode::kDataLoss, path,
              "header length 100 runs past the end of the file (10 bytes");
}

TEST(SafetensorsOpenTest, AbsurdHeaderLength) {
  ScratchDir dir;
  std::string image = SafetensorsImage("{}", "");
  image[7] = '\x7f';  // ~9e18 bytes
  std::string path;
  ExpectError(OpenImage(dir, image, &path), absl::StatusCode::kInvalidArgument, path,
              "exceeds the limit");
}

TEST(SafetensorsOpenTest, HeaderLengthTooSmall) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir, SafetensorsImage("", "xxxxxxxx"), &path),
              absl::StatusCode::kInvalidArgument, path, "too small");
}

TEST(SafetensorsOpenTest, CorruptHeaderJson) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir, SafetensorsImage("{\"w\":{\"dtype\":\"F32\",", ""), &path),
              absl::StatusCode::kInvalidArgument, path, "header is not valid JSON");
}

TEST(SafetensorsOpenTest, HeaderNotStartingWithBrace) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir, SafetensorsImage(" {}", ""), &path),
              absl::StatusCode::kInvalidArgument, path, "does not start with '{'");
}

TEST(SafetensorsOpenTest, HeaderNotAnObject) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir, SafetensorsImage("[1, 2]", ""), &path),
              absl::StatusCode::kInvalidArgument, path, "does not start with '{'");
}

TEST(SafetensorsOpenTest, OffsetsPastEndOfData) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir,
                        SafetensorsImage(OneTensorHeader("\"F32\"", "[4]", "[0, 16]"),
                                         std::string(12, '\0')),
                        &path),
              absl::StatusCode::kInvalidArgument, path,
              "tensor \"w\": data_offsets [0, 16] run past the end of the data section (12 bytes)");
}

TEST(SafetensorsOpenTest, OverlappingOffsets) {
  ScratchDir dir;
  const std::string header =
      "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  std::string path;
  ExpectError(OpenImage(dir, SafetensorsImage(header, std::string(12, '\0')), &path),
              absl::StatusCode::kInvalidArgument, path,
              "tensors \"a\" [0, 8) and \"b\" [4, 12) overlap");
}

TEST(SafetensorsOpenTest, ShapeSizeMismatch) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir,
                        SafetensorsImage(OneTensorHeader("\"BF16\"", "[2, 3]", "[0, 8]"),
                                         std::string(8, '\0')),
                        &path),
              absl::StatusCode::kInvalidArgument, path,
              "shape [2,3] of BF16 needs 12 bytes but data_offsets [0, 8] hold 8");
}

TEST(SafetensorsOpenTest, UnknownDType) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir,
                        SafetensorsImage(OneTensorHeader("\"F8_E5M2\"", "[4]", "[0, 4]"),
                                         std::string(4, '\0')),
                        &path),
              absl::StatusCode::kInvalidArgument, path, "tensor \"w\": unknown dtype \"F8_E5M2\"");
}

TEST(SafetensorsOpenTest, NegativeDimension) {
  ScratchDir dir;
  std::string path;
  ExpectError(
      OpenImage(dir, SafetensorsImage(OneTensorHeader("\"F32\"", "[-1]", "[0, 0]"), ""), &path),
      absl::StatusCode::kInvalidArgument, path, "negative dimension -1");
}

TEST(SafetensorsOpenTest, ShapeOverflow) {
  ScratchDir dir;
  std::string path;
  ExpectError(OpenImage(dir,
                        SafetensorsImage(
                            OneTensorHeader("\"F32\"", "[4294967296, 4294967296]", "[0, 0]"), ""),
                        &path),
              absl::StatusCode::kInvalidArgument, path, "more elements than fit in 64 bits");
}

// Wrong JSON types in each field of an entry; all must be refused with the file named.
TEST(SafetensorsOpenTest, WrongJsonTypes) {
  ScratchDir dir;
  const struct {
    std::string header;
    std::string problem;
  } kCases[] = {
      {OneTensorHeader("4", "[1]", "[0, 4]"), "\"dtype\" must be a string, got non-negative"},
      {OneTensorHeader("\"F32\"", "\"1\"", "[0, 4]"), "\"shape\" must be an array, got string"},
      {OneTensorHeader("\"F32\"", "[1.0]", "[0, 4]"), "shape entries must be integers"},
      {OneTensorHeader("\"F32\"", "[1]", "[0, 4, 8]"), "\"data_offsets\" must be two"},
      {OneTensorHeader("\"F32\"", "[1]", "[0, 4.0]"), "\"data_offsets\" must be two"},
      {OneTensorHeader("\"F32\"", "[1]", "[-4, 0]"), "\"data_offsets\" must be two"},
      {OneTensorHeader("\"F32\"", "[1]", "{}"), "\"data_offsets\" must be two"},
      {OneTensorHeader("\"F32\"", "[0]", "[4, 0]"), "end before begin"},
      {"{\"w\":[1]}", "tensor \"w\": expected an object, got array"},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", "missing \"data_offsets\""},
      {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
       "unexpected key \"x\""},
      {"{\"__metadata__\":{\"n\":3}}", "__metadata__ \"n\" must be a string, got non-negative"},
      {"{\"__metadata__\":[\"a\"]}", "__metadata__ must be an object, got array"},
      {"{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "empty name"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
       "names \"a\" twice"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.header);
    std::string path;
    ExpectError(OpenImage(dir, SafetensorsImage(c.header, std::string(16, '\0')), &path),
                absl::StatusCode::kInvalidArgument, path, c.problem);
  }
}

TEST(SafetensorsOpenTest, NamesWithControlCharactersStayOnOneLine) {
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(
      OneTensorHeader("\"Q4\"", "[1]", "[0, 1]").replace(2, 1, "a\\nb"), 100, "f.safetensors");
  ExpectError(h.status(), absl::StatusCode::kInvalidArgument, "f.safetensors", "a\\nb");
}

// ---- Valid files: parsing and ranged reads ----

TEST(SafetensorsParseTest, AcceptsEmptyAndPaddedHeadersAndSortsByOffset) {
  absl::StatusOr<SafetensorsHeader> empty = ParseSafetensorsHeader("{}", 10, "f");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->tensors.empty());
  EXPECT_EQ(empty->data_start, 10u);

  const std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"z\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[1,1]},"
      "\"a\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[1,5]}}    ";
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(header, 8 + header.size() + 5, "f");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->metadata.at("format"), "pt");
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "z");
  EXPECT_EQ(h->tensors[1].name, "e");  // zero-size at the same offset sorts first
  EXPECT_EQ(h->tensors[2].name, "a");
  EXPECT_EQ(h->tensors[2].begin, 8 + header.size() + 1);
  EXPECT_EQ(h->tensors[2].end, 8 + header.size() + 5);
  EXPECT_EQ(h->tensors[0].shape, std::vector<int64_t>{});
}

TEST(SafetensorsParseTest, HeaderLongerThanFileIsDataLoss) {
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader("{}", 9, "short.safetensors");
  ExpectError(h.status(), absl::StatusCode::kDataLoss, "short.safetensors", "runs past the end");
}

TEST(SafetensorsReadTest, ReadsExactlyTheTensorsByteRange) {
  ScratchDir dir;
  const std::string path = dir.File("r.safetensors");
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("a", PatternTensor(DType::kF32, {3, 5}, 1)).ok());
  ASSERT_TRUE(w.Add("b", PatternTensor(DType::kBF16, {7}, 2)).ok());
  ASSERT_TRUE(w.Write(path).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->bytes_read(), 0u);
  const TensorInfo* b = (*f)->Find("b");
  ASSERT_NE(b, nullptr);
  absl::StatusOr<HostTensor> t = (*f)->Read(*b);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->bytes, PatternTensor(DType::kBF16, {7}, 2).bytes);
  EXPECT_EQ((*f)->bytes_read(), 14u);
  EXPECT_EQ((*f)->Find("c"), nullptr);
  EXPECT_EQ((*f)->file_size(), std::filesystem::file_size(path));
}

TEST(SafetensorsReadTest, HandMadeInfoOutsideTheFileIsRefused) {
  ScratchDir dir;
  const std::string path = dir.File("r.safetensors");
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("a", PatternTensor(DType::kF32, {4}, 1)).ok());
  ASSERT_TRUE(w.Write(path).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  TensorInfo bad = *(*f)->Find("a");
  bad.end += 4;
  bad.shape = {5};
  ExpectError((*f)->Read(bad).status(), absl::StatusCode::kInvalidArgument, path,
              "outside the data section");
}

TEST(SafetensorsReadTest, FileTruncatedAfterOpenIsDataLoss) {
  ScratchDir dir;
  const std::string path = dir.File("r.safetensors");
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("a", PatternTensor(DType::kF32, {64}, 1)).ok());
  ASSERT_TRUE(w.Write(path).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  std::filesystem::resize_file(path, (*f)->header().data_start + 10);
  ExpectError((*f)->Read(*(*f)->Find("a")).status(), absl::StatusCode::kDataLoss, path,
              "truncated");
}

// A sparse 1 TiB file: opening it and reading a small tensor behind a huge one must touch only
// the header and that tensor (a real shard of a trillion-parameter model never fits in memory).
TEST(SafetensorsReadTest, HugeSparseFileReadsOnlyTheRequestedRange) {
  ScratchDir dir;
  const std::string path = dir.File("huge.safetensors");
  const uint64_t kHugeBytes = uint64_t{1} << 40;
  std::string header =
      "{\"huge\":{\"dtype\":\"F8_E4M3\",\"shape\":[1048576,1048576],"
      "\"data_offsets\":[0," +
      std::to_string(kHugeBytes) +
      "]},"
      "\"small\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" +
      std::to_string(kHugeBytes) + "," + std::to_string(kHugeBytes + 8) + "]}}";
  WriteBytes(path, SafetensorsImage(header, ""));
  const uint64_t data_start = 8 + header.size();
  std::error_code ec;
  std::filesystem::resize_file(path, data_start + kHugeBytes + 8, ec);
  if (ec) GTEST_SKIP() << "filesystem cannot hold a 1 TiB sparse file: " << ec.message();
  {
    const int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const float values[2] = {1.5f, -2.0f};
    ASSERT_EQ(::pwrite(fd, values, 8, static_cast<off_t>(data_start + kHugeBytes)), 8);
    ::close(fd);
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<HostTensor> small = (*f)->Read(*(*f)->Find("small"));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->data<float>()[0], 1.5f);
  EXPECT_EQ(small->data<float>()[1], -2.0f);
  EXPECT_EQ((*f)->bytes_read(), 8u);
}

TEST(SafetensorsReadTest, ConcurrentReadsAgree) {
  ScratchDir dir;
  const std::string path = dir.File("c.safetensors");
  SafetensorsWriter w;
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(w.Add("t" + std::to_string(i),
                      PatternTensor(DType::kF32, {1000 + i}, static_cast<uint8_t>(i)))
                    .ok());
  }
  ASSERT_TRUE(w.Write(path).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches = 0;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep) {
        for (int i = 0; i < 16; ++i) {
          const int j = (i + k * 5) % 16;
          absl::StatusOr<HostTensor> t = (*f)->Read(*(*f)->Find("t" + std::to_string(j)));
          if (!t.ok() ||
              t->bytes != PatternTensor(DType::kF32, {1000 + j}, static_cast<uint8_t>(j)).bytes) {
            ++mismatches;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, 0);
  uint64_t per_pass = 0;
  for (int i = 0; i < 16; ++i) per_pass += 4 * (1000 + i);
  EXPECT_EQ((*f)->bytes_read(), 4 * 20 * per_pass);
}

// ---- Writer ----

TEST(SafetensorsWriterTest, RoundTripsTensorsAndMetadata) {
  ScratchDir dir;
  const std::string path = dir.File("w.safetensors");
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  w.SetMetadata("quant", "gsq \"2-bit\"\n");
  const std::vector<std::pair<std::string, HostTensor>> tensors = {
      {"z.last", MakeTensor<float>(DType::kF32, {2, 2}, {1, 2, 3, 4})},
      {"a.first", PatternTensor(DType::kBF16, {3, 3}, 9)},
      {"scalar", MakeTensor<int64_t>(DType::kI64, {}, {-7})},
      {"empty", PatternTensor(DType::kF16, {0, 4}, 0)},
      {"fp8", PatternTensor(DType::kF8E4M3, {5}, 3)},
      {"mask", MakeTensor<uint8_t>(DType::kBool, {3}, {1, 0, 1})},
  };
  for (const auto& [name, t] : tensors) ASSERT_TRUE(w.Add(name, t).ok()) << name;
  ASSERT_TRUE(w.Write(path).ok());
  // Nothing beside the file: its temporary was renamed over the name.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
    EXPECT_EQ(e.path().string(), path);
    ++entries;
  }
  EXPECT_EQ(entries, 1);

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->header().metadata.at("format"), "pt");
  EXPECT_EQ((*f)->header().metadata.at("quant"), "gsq \"2-bit\"\n");
  EXPECT_EQ((*f)->header().data_start % 8, 0u);
  ASSERT_EQ((*f)->header().tensors.size(), tensors.size());
  uint64_t expected_begin = (*f)->header().data_start;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, want] = tensors[i];
    // Header order is data-offset order, which the writer makes insertion order.
    const TensorInfo& info = (*f)->header().tensors[i];
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.begin, expected_begin);
    expected_begin = info.end;
    absl::StatusOr<HostTensor> got = (*f)->Read(info);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->dtype, want.dtype) << name;
    EXPECT_EQ(got->shape, want.shape) << name;
    EXPECT_EQ(got->bytes, want.bytes) << name;
  }
  EXPECT_EQ(expected_begin, (*f)->file_size());  // no trailing bytes
}

TEST(SafetensorsWriterTest, DataStartIsAlignedAndPaddingIsSpaces) {
  ScratchDir dir;
  for (int len = 1; len <= 24; ++len) {
    const std::string path = dir.File("a" + std::to_string(len) + ".safetensors");
    SafetensorsWriter w;
    if (len % 2) w.SetMetadata("format", "pt");
    ASSERT_TRUE(w.Add(std::string(len, 'n'), PatternTensor(DType::kU8, {len}, 1)).ok());
    ASSERT_TRUE(w.Write(path).ok());
    const std::string bytes = ReadBytes(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ((8 + n) % 8, 0u) << len;
    const std::string header = bytes.substr(8, n);
    const size_t close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
    EXPECT_LT(n - close - 1, 8u);
    if (len % 2) {
      EXPECT_EQ(header.rfind("{\"__metadata__\":", 0), 0u) << header;
    }
    const nlohmann::json parsed = nlohmann::json::parse(header);
    EXPECT_EQ(parsed[std::string(len, 'n')]["data_offsets"], nlohmann::json({0, len}));
  }
}

TEST(SafetensorsWriterTest, OverwritesAnExistingFile) {
  ScratchDir dir;
  const std::string path = dir.File("o.safetensors");
  WriteBytes(path, "old contents, longer than what replaces it ....................");
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("x", PatternTensor(DType::kI32, {2}, 4)).ok());
  ASSERT_TRUE(w.Write(path).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
}

TEST(SafetensorsWriterTest, AddRefusesBadTensors) {
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("x", PatternTensor(DType::kF32, {2}, 0)).ok());
  absl::Status dup = w.Add("x", PatternTensor(DType::kF32, {2}, 0));
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.message()), HasSubstr("\"x\" added twice"));
  HostTensor short_bytes = PatternTensor(DType::kF32, {2}, 0);
  short_bytes.bytes.pop_back();
  EXPECT_THAT(std::string(w.Add("y", short_bytes).message()), HasSubstr("holds 7 bytes"));
  EXPECT_EQ(w.Add("", PatternTensor(DType::kF32, {2}, 0)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.Add("__metadata__", PatternTensor(DType::kF32, {2}, 0)).code(),
            absl::StatusCode::kInvalidArgument);
  HostTensor negative;
  negative.shape = {-1};
  EXPECT_EQ(w.Add("n", negative).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsWriterTest, UnwritableDirectoryNamesThePath) {
  ScratchDir dir;
  const std::string path = dir.File("no/such/dir/x.safetensors");
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("x", PatternTensor(DType::kF32, {2}, 0)).ok());
  absl::Status s = w.Write(path);
  ExpectError(s, absl::StatusCode::kNotFound, path, "cannot create");
}

TEST(SafetensorsWriterTest, InvalidUtf8IsRefusedAndLeavesNoFile) {
  ScratchDir dir;
  const std::string path = dir.File("u.safetensors");
  SafetensorsWriter w;
  w.SetMetadata("bad", std::string("\xff\xfe"));
  absl::Status s = w.Write(path);
  ExpectError(s, absl::StatusCode::kInvalidArgument, path, "cannot encode the header");
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

// The layout as the safetensors spec states it, checked by a separate reader (python3 stdlib:
// struct + json) that shares no code with ours.
TEST(SafetensorsWriterTest, PythonReaderAgreesWithTheLayout) {
  if (std::system("python3 -c 'import json, struct' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 not available";
  }
  ScratchDir dir;
  const std::string path = dir.File("py.safetensors");
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  ASSERT_TRUE(w.Add("b.weight", MakeTensor<float>(DType::kF32, {2, 3}, {1, 2, 3, 4, 5, 6})).ok());
  ASSERT_TRUE(w.Add("a.bias", MakeTensor<uint16_t>(DType::kBF16, {3}, {0x3f80, 0xc000, 0})).ok());
  ASSERT_TRUE(w.Add("c", MakeTensor<int64_t>(DType::kI64, {}, {-5})).ok());
  ASSERT_TRUE(w.Write(path).ok());
  const std::string script =
      std::string(QUANT_SOURCE_DIR) + "/storage/testdata/check_safetensors_layout.py";
  const std::string cmd = "python3 " + script + " " + path +
                          " 'b.weight:F32:2,3:1,2,3,4,5,6' 'a.bias:BF16:3:1,-2,0' 'c:I64::-5'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// The fuzzer's seeds must stay what they claim, or the fuzzer mutates nothing interesting.
TEST(SafetensorsFuzzSeedsTest, SeedsParseAsIntended) {
  const std::string testdata = std::string(QUANT_SOURCE_DIR) + "/storage/testdata/";
  const std::string header = ReadBytes(testdata + "fuzz_seed_header.json");
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(header, 8 + header.size() + 64, "s");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors.size(), 5u);

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open(testdata + "fuzz_seed_file.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<HostTensor> x = (*f)->Read(*(*f)->Find("x"));
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->data<float>()[1], -2.5f);

  const std::string bad = ReadBytes(testdata + "fuzz_seed_overlap.json");
  EXPECT_FALSE(ParseSafetensorsHeader(bad, 8 + bad.size() + 64, "s").ok());
}

}  // namespace
}  // namespace quant::storage
