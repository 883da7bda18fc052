// s3:// for real: s3rver (npm) on loopback behind tests/s3/sigv4_proxy.py, which recomputes every
// request's SigV4 signature with botocore and refuses mismatches, so our libcurl signing is
// checked by AWS's own code. Round trips, ranged GETs, multipart upload and abort, listing,
// a wrong secret's clear 403 naming the bucket (and not the secret), retries that give up on a
// dead endpoint, the aws CLI (/usr/bin/aws) reading our object back, and configuration from the
// standard AWS variables and files.
#include "storage/s3_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/free_port.h"
#include "tests/s3/s3_servers.h"

namespace quant::storage {
namespace {

namespace fs = std::filesystem;
const std::string kBucket = "quant-test";
using quant::testing::FreePort;

class S3Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("s3_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    servers_ = new quant::testing::S3Servers(dir_.string(), kBucket, "S3RVER");
    proxy_port_ = servers_->port();
    // s3rver is up when the bucket answers.
    for (int i = 0; i < 100 && proxy_port_ > 0; ++i) {
      auto c = Client("S3RVER");
      if (c->List(kBucket, "").ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  static void TearDownTestSuite() {
    if (::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
      std::printf("%s", servers_->Logs().c_str());  // what the servers saw
    }
    delete servers_;
    servers_ = nullptr;
    fs::remove_all(dir_);
  }
  static std::unique_ptr<S3Client> Client(const std::string& secret, int attempts = 3) {
    S3Config c;
    c.endpoint = "http://127.0.0.1:" + std::to_string(proxy_port_);
    c.access_key = "S3RVER";
    c.secret_key = secret;
    c.max_attempts = attempts;
    return *S3Client::Create(c);
  }
  static std::string Bytes(size_t n, uint32_t seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) {
      seed = seed * 1664525u + 1013904223u;
      s[i] = static_cast<char>(seed >> 24);
    }
    return s;
  }
  static fs::path dir_;
  static quant::testing::S3Servers* servers_;
  static int proxy_port_;
};

fs::path S3Test::dir_;
quant::testing::S3Servers* S3Test::servers_ = nullptr;
int S3Test::proxy_port_ = 0;

TEST_F(S3Test, RoundTripRangesListAndDelete) {
  ASSERT_GT(proxy_port_, 0);
  auto s3 = Client("S3RVER");
  const std::string data = Bytes(300000, 7);
  const absl::Status put = s3->Put(kBucket, "models/a/model-00001.safetensors", data);
  ASSERT_TRUE(put.ok()) << put;
  auto back = s3->Get(kBucket, "models/a/model-00001.safetensors");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, data);
  auto part = s3->Get(kBucket, "models/a/model-00001.safetensors", std::make_pair(1000, 5000));
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(*part, data.substr(1000, 4000));
  auto size = s3->Size(kBucket, "models/a/model-00001.safetensors");
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, data.size());
  ASSERT_TRUE(s3->Put(kBucket, "models/a/config.json", "{}").ok());
  auto keys = s3->List(kBucket, "models/a/");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, (std::vector<std::string>{"models/a/config.json",
                                             "models/a/model-00001.safetensors"}));
  ASSERT_TRUE(s3->Delete(kBucket, "models/a/config.json").ok());
  EXPECT_EQ(s3->Get(kBucket, "models/a/config.json").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(S3Test, MultipartUploadAndAbort) {
  auto s3 = Client("S3RVER");
  const std::string data = Bytes(12u << 20, 11);  // three parts of 5, 5 and 2 MiB
  const absl::Status put = s3->PutMultipart(kBucket, "out/big.safetensors", data, 5u << 20);
  ASSERT_TRUE(put.ok()) << put;
  auto back = s3->Get(kBucket, "out/big.safetensors");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data);
  // An abandoned upload is aborted. s3rver 3.7.1 has no AbortMultipartUpload (it answers 405
  // MethodNotAllowed), so what is checked here is the request: signed as botocore computes it
  // (the proxy's log) and the answer reported; the object never appears.
  auto id = s3->StartUpload(kBucket, "out/abandoned");
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(s3->UploadPart(kBucket, "out/abandoned", *id, 1, Bytes(5u << 20, 3)).ok());
  const absl::Status aborted = s3->AbortUpload(kBucket, "out/abandoned", *id);
  EXPECT_TRUE(aborted.ok() || aborted.message().find("405 MethodNotAllowed") != std::string::npos)
      << aborted;
  EXPECT_FALSE(s3->Get(kBucket, "out/abandoned").ok());
  std::ifstream log(dir_ / "proxy.log");
  std::stringstream ss;
  ss << log.rdbuf();
  // The proxy saw (and botocore accepted) the three parts and the abort.
  EXPECT_NE(ss.str().find("partNumber=3&uploadId="), std::string::npos) << ss.str();
  EXPECT_NE(ss.str().find("DELETE /quant-test/out/abandoned?uploadId=" + *id + ": signature ok"),
            std::string::npos)
      << ss.str();
}

TEST_F(S3Test, AWrongSecretIsAClear403NamingTheBucketNotTheSecret) {
  auto s3 = Client("not-the-secret");
  const absl::Status s = s3->Put(kBucket, "x", "y");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_NE(s.message().find("403 SignatureDoesNotMatch"), std::string::npos) << s;
  EXPECT_NE(s.message().find("'" + kBucket + "'"), std::string::npos) << s;
  EXPECT_EQ(s.message().find("not-the-secret"), std::string::npos) << s;
}

TEST_F(S3Test, RetriesGiveUpOnADeadEndpoint) {
  S3Config c;
  c.endpoint = "http://127.0.0.1:" + std::to_string(FreePort());
  c.access_key = "S3RVER";
  c.secret_key = "S3RVER";
  c.max_attempts = 3;
  auto s3 = *S3Client::Create(c);
  const absl::Status s = s3->Put(kBucket, "x", "y");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("after 3 attempts"), std::string::npos) << s;
}

TEST_F(S3Test, TheAwsCliReadsOurObjectBack) {
  auto s3 = Client("S3RVER");
  const std::string data = Bytes(100000, 5);
  const absl::Status put = s3->Put(kBucket, "cli/check.bin", data);
  ASSERT_TRUE(put.ok()) << put;
  const std::string out = (dir_ / "cli.bin").string();
  const std::string cmd =
      "AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1 "
      "/usr/bin/aws --endpoint-url http://127.0.0.1:" + std::to_string(proxy_port_) +
      " s3api get-object --bucket " + kBucket + " --key cli/check.bin " + out +
      " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(out, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_TRUE(ss.str() == data);
}

TEST(S3Config, FromTheAwsVariablesAndFiles) {
  const fs::path dir = fs::temp_directory_path() / ("s3_config_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "credentials") << "[default]\naws_access_key_id = AKFILE\n"
                                        "aws_secret_access_key = SKFILE\n[other]\n"
                                        "aws_access_key_id = AKOTHER\naws_secret_access_key = SKO\n";
  std::ofstream(dir / "config") << "[profile other]\nregion = eu-west-1\n";
  setenv("AWS_SHARED_CREDENTIALS_FILE", (dir / "credentials").c_str(), 1);
  setenv("AWS_CONFIG_FILE", (dir / "config").c_str(), 1);
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  unsetenv("AWS_REGION");
  unsetenv("AWS_DEFAULT_REGION");
  unsetenv("AWS_ENDPOINT_URL");
  unsetenv("AWS_ENDPOINT_URL_S3");
  setenv("AWS_PROFILE", "other", 1);
  auto c = ResolveS3Config({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key, "AKOTHER");
  EXPECT_EQ(c->region, "eu-west-1");
  EXPECT_EQ(c->endpoint, "https://s3.eu-west-1.amazonaws.com");
  setenv("AWS_ACCESS_KEY_ID", "AKENV", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "SKENV", 1);
  setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/", 1);
  c = ResolveS3Config({});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key, "AKENV");  // the variables win over the files
  EXPECT_EQ(c->endpoint, "http://127.0.0.1:9000");
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  setenv("AWS_PROFILE", "missing", 1);
  EXPECT_EQ(ResolveS3Config({}).status().code(), absl::StatusCode::kInvalidArgument);
  unsetenv("AWS_PROFILE");
  unsetenv("AWS_ENDPOINT_URL");
  fs::remove_all(dir);
}

TEST(S3Url, ParsesBucketAndKeyAndRefusesTheRest) {
  auto u = ParseS3Url("s3://models/kimi-k2/config.json");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->first, "models");
  EXPECT_EQ(u->second, "kimi-k2/config.json");
  EXPECT_FALSE(ParseS3Url("file:///x").ok());
  EXPECT_FALSE(ParseS3Url("s3:///key").ok());
  EXPECT_EQ(XmlValues("<a><Key>x</Key><Key>y</Key><Key>z", "Key"),
            (std::vector<std::string>{"x", "y"}));
}

}  // namespace
}  // namespace quant::storage
