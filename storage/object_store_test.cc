// ObjectStore for real: local directories, and s3:// prefixes on s3rver behind the botocore
// signature-checking proxy (tests/s3). A checkpoint published to s3:// and opened from there
// reads every tensor byte for byte as from disk, by ranged GETs only; publishing puts the
// manifest last and, replacing, removes what the new checkpoint lacks; errors name the URL and
// never the secret.
#include "storage/object_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "storage/checkpoint.h"
#include "storage/safetensors.h"
#include "tests/s3/s3_servers.h"

namespace quant::storage {
namespace {

namespace fs = std::filesystem;
const std::string kBucket = "quant-store";
const std::string kSecret = "store-test-secret-7c1d";  // the proxy knows only this one
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(LocalStoreTest, ListsReadsAndNamesMissingFiles) {
  const fs::path dir = fs::temp_directory_path() / ("store_local_" + std::to_string(getpid()));
  fs::create_directories(dir / "sub");
  WriteText(dir / "b.json", "{\"x\": 1}");
  WriteText(dir / "a.bin", "abcdef");
  for (const std::string& root : {dir.string(), "file://" + dir.string() + "/"}) {
    auto store = OpenObjectStore(root);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->root(), dir.string());
    auto list = (*store)->List();
    ASSERT_TRUE(list.ok()) << list.status();
    ASSERT_EQ(list->size(), 2u);  // regular files only, sorted
    EXPECT_EQ((*list)[0].name, "a.bin");
    EXPECT_EQ((*list)[0].size, 6u);
    auto file = (*store)->Open("a.bin");
    ASSERT_TRUE(file.ok()) << file.status();
    uint8_t buf[3];
    ASSERT_TRUE((*file)->ReadAt(2, 3, buf).ok());
    EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), 3), "cde");
    EXPECT_EQ((*file)->ReadAt(4, 3, buf).code(), absl::StatusCode::kDataLoss);
    auto missing = (*store)->Read("nope.json", 100);
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(missing.status().message().find(dir.string() + "/nope.json"), std::string::npos);
    EXPECT_EQ((*store)->Read("b.json", 3).status().code(), absl::StatusCode::kInvalidArgument);
  }
  // Publishing into another local directory: every file, stale ones removed with replace.
  const fs::path target = dir.string() + "-published";
  fs::create_directories(target);
  WriteText(target / "stale.bin", "old");
  auto sent = PublishDirectory(dir.string(), target.string(), "b.json", /*replace=*/true);
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(*sent, 6u + 8u);
  EXPECT_FALSE(fs::exists(target / "stale.bin"));
  std::ifstream copied(target / "a.bin");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(copied), {}), "abcdef");
  fs::remove_all(target);
  EXPECT_EQ(OpenObjectStore((dir / "absent").string()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(OpenObjectStore((dir / "a.bin").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LocalPathOf("file://" + dir.string()), dir.string());
  EXPECT_EQ(LocalPathOf("s3://b/p"), "s3://b/p");
  EXPECT_TRUE(*LocationExists("file://" + dir.string()));
  auto via_url = Checkpoint::Open("file://" + kModel);
  ASSERT_TRUE(via_url.ok()) << via_url.status();
  EXPECT_EQ((*via_url)->store().root(), kModel);
  EXPECT_TRUE(*LocationExists(dir.string()));
  EXPECT_FALSE(*LocationExists((dir / "absent").string()));
  fs::remove_all(dir);
}

class S3StoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("store_s3_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    servers_ = new quant::testing::S3Servers(dir_.string(), kBucket, kSecret);
    Configure(kSecret);
    for (int i = 0; i < 100 && servers_->port() > 0; ++i) {  // s3rver is up when it lists
      auto store = OpenObjectStore("s3://" + kBucket + "/probe");
      if (store.ok() && (*store)->List().ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  static void TearDownTestSuite() {
    if (::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
      std::printf("%s", servers_->Logs().c_str());
    }
    delete servers_;
    fs::remove_all(dir_);
  }
  static void Configure(const std::string& secret) {
    S3Config c;
    c.endpoint = servers_->endpoint();
    c.access_key = "S3RVER";
    c.secret_key = secret;
    c.max_attempts = 2;
    SetS3Defaults(c);
  }
  void TearDown() override { Configure(kSecret); }
  static std::string ProxyLog() {
    std::ifstream in(dir_ / "proxy.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static fs::path dir_;
  static quant::testing::S3Servers* servers_;
};

fs::path S3StoreTest::dir_;
quant::testing::S3Servers* S3StoreTest::servers_ = nullptr;

TEST_F(S3StoreTest, ACheckpointReadFromS3IsTheOneOnDisk) {
  ASSERT_GT(servers_->port(), 0);
  const std::string url = "s3://" + kBucket + "/models/tiny-deepseek-v3";
  auto sent = PublishDirectory(kModel, url, "config.json", /*replace=*/false);
  ASSERT_TRUE(sent.ok()) << sent.status();
  uint64_t local_bytes = 0;
  for (const auto& e : fs::directory_iterator(kModel)) local_bytes += e.file_size();
  EXPECT_EQ(*sent, local_bytes);

  auto local = Checkpoint::Open(kModel);
  ASSERT_TRUE(local.ok()) << local.status();
  const size_t log_before = ProxyLog().size();
  auto remote = Checkpoint::Open(url + "/");  // a trailing slash is the same prefix
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ((*remote)->store().root(), url);
  EXPECT_EQ((*remote)->config(), (*local)->config());
  ASSERT_EQ((*remote)->Names(), (*local)->Names());
  // Opening reads headers only: nothing of the tensor data yet.
  EXPECT_EQ((*remote)->bytes_read(), 0u);
  for (const std::string& name : (*local)->Names()) {
    auto a = (*local)->ReadRaw(name);
    auto b = (*remote)->ReadRaw(name);
    ASSERT_TRUE(a.ok() && b.ok()) << name << ": " << b.status();
    ASSERT_EQ(a->bytes, b->bytes) << name;
  }
  EXPECT_EQ((*remote)->bytes_read(), (*local)->bytes_read());
  // Every tensor came by a ranged GET: the proxy saw Range headers and no whole-shard GET.
  const std::string log = ProxyLog().substr(log_before);
  EXPECT_NE(log.find(".safetensors: signature ok bytes="), std::string::npos) << log;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("GET") && line.find(".safetensors") != std::string::npos) {
      EXPECT_NE(line.find("bytes="), std::string::npos) << "a whole-shard GET: " << line;
    }
  }
}

TEST_F(S3StoreTest, ALargeTensorIsReadInParallelParts) {
  ASSERT_GT(servers_->port(), 0);
  const fs::path local = dir_ / "large";
  fs::create_directories(local);
  HostTensor t;
  t.dtype = DType::kF32;
  t.shape = {5, 1 << 21};  // 40 MiB: three parts
  t.bytes.resize(5ull << 23);
  for (size_t i = 0; i < t.bytes.size(); ++i)
    t.bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("w", t).ok());
  ASSERT_TRUE(w.Write((local / "x.safetensors").string()).ok());
  const std::string url = "s3://" + kBucket + "/large";
  ASSERT_TRUE(PublishDirectory(local.string(), url, "", false).ok());
  auto store = OpenObjectStore(url);
  ASSERT_TRUE(store.ok()) << store.status();
  auto source = (*store)->Open("x.safetensors");
  ASSERT_TRUE(source.ok()) << source.status();
  auto file = SafetensorsFile::Open(std::move(*source));
  ASSERT_TRUE(file.ok()) << file.status();
  auto back = (*file)->Read(*(*file)->Find("w"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->bytes, t.bytes);
}

TEST_F(S3StoreTest, PublishingPutsTheManifestLastAndReplacesStaleObjects) {
  ASSERT_GT(servers_->port(), 0);
  const fs::path first = dir_ / "first", second = dir_ / "second";
  fs::create_directories(first);
  fs::create_directories(second);
  for (const char* name : {"a.safetensors", "quant_manifest.json", "z.json", "stale.bin"}) {
    WriteText(first / name, std::string("v1 ") + name);
  }
  for (const char* name : {"a.safetensors", "quant_manifest.json", "z.json"}) {
    WriteText(second / name, std::string("v2 ") + name);
  }
  const std::string url = "s3://" + kBucket + "/out/q";
  const size_t log_before = ProxyLog().size();
  ASSERT_TRUE(PublishDirectory(first.string(), url, "quant_manifest.json", false).ok());
  const std::string log = ProxyLog().substr(log_before);
  const size_t manifest = log.find("PUT /" + kBucket + "/out/q/quant_manifest.json");
  const size_t last_other = log.rfind("PUT /" + kBucket + "/out/q/z.json");
  ASSERT_NE(manifest, std::string::npos) << log;
  EXPECT_GT(manifest, last_other) << "the manifest must be the last object written";
  EXPECT_TRUE(*LocationExists(url));
  EXPECT_FALSE(*LocationExists("s3://" + kBucket + "/out/nothing-here"));

  ASSERT_TRUE(PublishDirectory(second.string(), url, "quant_manifest.json", true).ok());
  auto store = OpenObjectStore(url);
  ASSERT_TRUE(store.ok());
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> names;
  for (const StoreEntry& e : *list) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a.safetensors", "quant_manifest.json", "z.json"}));
  EXPECT_EQ(*(*store)->Read("z.json", 100), "v2 z.json");
}

TEST_F(S3StoreTest, ErrorsNameTheUrlAndNeverTheSecret) {
  ASSERT_GT(servers_->port(), 0);
  auto missing = Checkpoint::Open("s3://" + kBucket + "/models/absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("s3://" + kBucket + "/models/absent/config.json"),
            std::string::npos)
      << missing.status();

  Configure("not-the-secret-9f2e");
  auto denied = Checkpoint::Open("s3://" + kBucket + "/models/tiny-deepseek-v3");
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();
  EXPECT_NE(denied.status().message().find(kBucket), std::string::npos);
  EXPECT_EQ(denied.status().message().find("not-the-secret"), std::string::npos);
  EXPECT_EQ(denied.status().message().find(kSecret), std::string::npos);
}

TEST(S3LocationTest, NoCredentialsIsOneClearLine) {
  // Nothing in the environment or files: refused before any request.
  for (const char* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"}) unsetenv(v);
  setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
  setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
  SetS3Defaults(S3Config{});
  auto store = OpenObjectStore("s3://some-bucket/m");
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(store.status().message().find("no credentials"), std::string::npos);
  EXPECT_EQ(OpenObjectStore("s3://").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quant::storage
