// `qctl quantize --model s3://... --out s3://...` and `qctl eval` on s3:// for real: s3rver
// behind the botocore signature-checking proxy (tests/s3), credentials in the standard AWS
// variables. The checkpoint written to S3 has the same shards, byte for byte, as the same job
// written to disk; bad S3 input is one error line, and nothing is left in the bucket or in the
// local staging directory.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "tests/s3/s3_servers.h"

namespace {

namespace fs = std::filesystem;
// tiny-deepseek-v3: 201 tensors against tiny-qwen3-moe's 423, and the model is read from S3 a
// tensor per ranged GET (~60 ms each through the signature-checking proxy on this machine).
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";
const std::string kBucket = "qctl";
const std::string kSecret = "qctl-s3-test-Secret-61ad";

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class QctlS3Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("qctl_s3_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    fs::create_directories(dir_ / "tmp");
    servers_ = new quant::testing::S3Servers(dir_.string(), kBucket, kSecret);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", kSecret.c_str(), 1);
    setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
    setenv("TMPDIR", (dir_ / "tmp").c_str(), 1);  // qctl's staging directory goes here
    std::ifstream in(std::string(QUANT_SHARED_DIR) + "/data/eval/kjv_val.txt");
    std::string text(3000, '\0');
    in.read(text.data(), text.size());
    std::ofstream(dir_ / "short.txt") << text;
    int rc = 1;
    for (int i = 0; i < 100 && rc != 0; ++i) {  // s3rver is up when it lists the bucket
      Run(Aws() + "s3 ls s3://" + kBucket + "/", &rc);
      if (rc != 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    Run(Aws() + "s3 cp --recursive --only-show-errors " + kModel + " " + Model(), &rc);
    uploaded_ = rc == 0;
  }
  static void TearDownTestSuite() {
    if (::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
      std::printf("%s", servers_->Logs().c_str());
    }
    delete servers_;
    fs::remove_all(dir_);
  }
  static std::string Aws() { return "/usr/bin/aws --endpoint-url " + servers_->endpoint() + " "; }
  static std::string Model() { return "s3://" + kBucket + "/models/tiny-deepseek-v3"; }
  // stdout + stderr of a shell command; exit status in *rc.
  static std::string Run(const std::string& cmd, int* rc) {
    const fs::path out = dir_ / "cmd.out";
    const int status = std::system((cmd + " >" + out.string() + " 2>&1").c_str());
    *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return Slurp(out);
  }
  static std::string Qctl(const std::string& args, int* rc) {
    return Run(std::string(QCTL_BINARY) + " " + args + " --s3-endpoint " + servers_->endpoint(),
               rc);
  }
  // The cheapest job that reads the model, writes a checkpoint and evaluates it: RTN, on one
  // calibration window (the job still runs the calibration forward; the default 384 windows
  // cost 20 CPU seconds). The claims are about where the bytes come from and go, not the
  // method; GPTQ with its MSE scale search cost ~6x the CPU.
  static std::string Quantize(const std::string& model, const std::string& out) {
    return "quantize --model " + model + " --out " + out +
           " --method rtn --bits 3 --calib-tokens 256 --eval-text " + (dir_ / "short.txt").string();
  }
  static bool NothingStaged() { return fs::is_empty(dir_ / "tmp"); }

  static fs::path dir_;
  static quant::testing::S3Servers* servers_;
  static bool uploaded_;
};

fs::path QctlS3Test::dir_;
quant::testing::S3Servers* QctlS3Test::servers_ = nullptr;
bool QctlS3Test::uploaded_ = false;

TEST_F(QctlS3Test, FromS3ToS3IsTheSameCheckpointAsOnDisk) {
  ASSERT_TRUE(uploaded_);
  int rc = 0;
  const std::string result = "s3://" + kBucket + "/out/rtn3";
  std::string out = Qctl(Quantize(Model(), result), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("uploaded"), std::string::npos) << out;
  EXPECT_TRUE(NothingStaged());
  const fs::path local = dir_ / "local";
  out = Qctl(Quantize(kModel, local.string()), &rc);
  ASSERT_EQ(rc, 0) << out;
  out = Run(Aws() + "s3 cp --recursive --only-show-errors " + result + " " +
                (dir_ / "back").string(),
            &rc);
  ASSERT_EQ(rc, 0) << out;
  int shards = 0;
  for (const auto& e : fs::directory_iterator(local)) {
    const std::string name = e.path().filename().string();
    ASSERT_TRUE(fs::exists(dir_ / "back" / name)) << name;
    if (e.path().extension() == ".safetensors" || name == "config.json" ||
        name == "model.safetensors.index.json" || name == "tokenizer.json") {
      EXPECT_EQ(Slurp(e.path()), Slurp(dir_ / "back" / name)) << name;
      shards += e.path().extension() == ".safetensors";
    }
  }
  EXPECT_GE(shards, 1);
  EXPECT_NE(Slurp(dir_ / "back/report.json").find("\"eval\""), std::string::npos);

  // qctl eval reads both from S3.
  out = Qctl("eval --model " + result + " --reference " + Model() + " --text " +
                 (dir_ / "short.txt").string() + " --json",
             &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"kl\""), std::string::npos) << out;

  // The prefix now holds a checkpoint: a second run is refused in one line.
  out = Qctl(Quantize(Model(), result), &rc);
  EXPECT_NE(rc, 0);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("already exists"), std::string::npos) << out;
}

TEST_F(QctlS3Test, BadS3InputIsOneLineAndLeavesNothing) {
  ASSERT_TRUE(uploaded_);
  int rc = 0;
  const std::string result = "s3://" + kBucket + "/out/never";
  // A model prefix with nothing under it.
  std::string out = Qctl(Quantize("s3://" + kBucket + "/models/absent", result), &rc);
  EXPECT_NE(rc, 0);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("s3://" + kBucket + "/models/absent/config.json"), std::string::npos) << out;
  // A wrong secret: the proxy's 403, named with the bucket, without the secret.
  out = Run("AWS_SECRET_ACCESS_KEY=wrong-Secret-0000 " + std::string(QCTL_BINARY) + " " +
                Quantize(Model(), result) + " --s3-endpoint " + servers_->endpoint(),
            &rc);
  EXPECT_NE(rc, 0);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("403"), std::string::npos) << out;
  EXPECT_NE(out.find(kBucket), std::string::npos) << out;
  EXPECT_EQ(out.find("wrong-Secret"), std::string::npos) << out;
  // No credentials at all.
  out = Run("env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE=/none " +
                std::string(QCTL_BINARY) + " " + Quantize(Model(), result),
            &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("no credentials"), std::string::npos) << out;
  // An unreachable endpoint: retried, then one line.
  out = Run(std::string(QCTL_BINARY) + " " + Quantize(Model(), result) +
                " --s3-endpoint http://127.0.0.1:1",
            &rc);
  EXPECT_NE(rc, 0);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  // Nothing was written under the output prefix, nothing left staged.
  out = Run(Aws() + "s3 ls --recursive " + result + "/", &rc);
  EXPECT_TRUE(out.empty()) << out;
  EXPECT_TRUE(NothingStaged());
}

// An s3:// output with a local model: a bad secret, a bucket that does not exist and an endpoint
// that does not answer are each one line before any work (no progress event, no staging or
// work directory, nothing in the bucket).
TEST_F(QctlS3Test, BadS3OutputIsOneLineBeforeAnyWork) {
  const std::string cache = (dir_ / "cache").string();
  struct Case {
    std::string name, env, out, endpoint;
    std::vector<std::string> expect;
  };
  const std::string out = "s3://" + kBucket + "/out/late";
  const std::vector<Case> cases = {
      {"wrong secret", "AWS_SECRET_ACCESS_KEY=wrong-Secret-0000", out, servers_->endpoint(),
       {"--out " + out + ": the output cannot be reached", "403"}},
      {"missing bucket", "", "s3://no-such-bucket/out", servers_->endpoint(),
       {"--out s3://no-such-bucket/out: the output cannot be reached", "no-such-bucket"}},
      {"unreachable endpoint", "", out, "http://127.0.0.1:1",
       {"--out " + out + ": the output cannot be reached"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    int rc = 0;
    const auto start = std::chrono::steady_clock::now();
    const std::string text =
        Run("env XDG_CACHE_HOME=" + cache + " " + c.env + " " + std::string(QCTL_BINARY) + " " +
                Quantize(kModel, c.out) + " --progress json --s3-endpoint " + c.endpoint,
            &rc);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %.2f s: %s", c.name.c_str(), seconds, text.c_str());
    EXPECT_NE(rc, 0);
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;  // no progress event
    EXPECT_EQ(text.rfind("qctl: error: ", 0), 0u) << text;
    for (const std::string& e : c.expect) EXPECT_NE(text.find(e), std::string::npos) << e;
    EXPECT_EQ(text.find("wrong-Secret"), std::string::npos) << text;
    EXPECT_LT(seconds, 30) << "retries of the unreachable endpoint are bounded";
    EXPECT_FALSE(fs::exists(cache + "/moe-quant/work")) << "a work directory was made";
    EXPECT_TRUE(NothingStaged());
  }
  int rc = 0;
  const std::string listed = Run(Aws() + "s3 ls --recursive " + out + "/", &rc);
  EXPECT_TRUE(listed.empty()) << listed;
}

}  // namespace
