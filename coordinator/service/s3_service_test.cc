// Object storage end to end: tiny-deepseek-v3 uploaded to s3rver (behind the botocore
// signature-checking proxy) by the aws CLI, quantized from s3:// to s3:// by a coordinator and
// two workers (gangs of 2) with the credentials in the standard AWS variables, its progress read
// through Prometheus, the result listed and downloaded by /usr/bin/aws and checked against the
// manifest's SHA-256 of every file; the secret appears in no log or output of ours.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "coordinator/service/prometheus_test_util.h"
#include "coordinator/service/service_test_util.h"
#include "nlohmann/json.hpp"
#include "tests/sha256_hex.h"
#include "tests/s3/s3_servers.h"

namespace {

namespace fs = std::filesystem;
using quant::testing::Coordinator;
using quant::testing::RunCommand;
using quant::testing::Sha256Hex;
using quant::testing::Worker;
const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";
const std::string kBucket = "quant";
const std::string kSecret = "e2e-Secret-Key-4b9f0c";  // distinctive: grepped for in every log

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(S3ServiceTest, AModelFromS3QuantizedByTheServiceToS3) {
  const fs::path dir = fs::temp_directory_path() / ("s3_service_test_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "data");
  quant::testing::S3Servers s3(dir.string(), kBucket, kSecret);
  ASSERT_GT(s3.port(), 0);
  // Credentials only in the standard variables; the endpoint by flag (and for aws, by its own).
  setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
  setenv("AWS_SECRET_ACCESS_KEY", kSecret.c_str(), 1);
  setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
  const std::string aws = "/usr/bin/aws --endpoint-url " + s3.endpoint() + " ";
  int rc = 1;
  std::string out;
  for (int i = 0; i < 100 && rc != 0; ++i) {  // s3rver is up when it lists the bucket
    out = RunCommand(aws + "s3 ls s3://" + kBucket + "/", &rc);
    if (rc != 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(rc, 0) << out << s3.Logs();
  const std::string model = "s3://" + kBucket + "/models/tiny-deepseek-v3";
  const std::string result = "s3://" + kBucket + "/out/tiny-deepseek-v3-gsq2";
  out = RunCommand(aws + "s3 cp --recursive --only-show-errors " + kModel + " " + model, &rc);
  ASSERT_EQ(rc, 0) << out;

  std::ofstream(dir / "token") << "t0ken\n";
  const std::vector<std::string> s3_flags = {"--s3-endpoint", s3.endpoint()};
  std::vector<std::string> coordinator_flags = s3_flags;
  // The evaluation text: the first 3000 bytes of kjv_val (a few windows; the whole text took
  // ~10 CPU seconds and the claim is that the report has an evaluation), inside the roots.
  {
    std::ifstream in(std::string(QUANT_SHARED_DIR) + "/data/eval/kjv_val.txt");
    std::string text(3000, '\0');
    in.read(text.data(), text.size());
    fs::create_directories(dir / "text");
    std::ofstream(dir / "text" / "short.txt") << text;
  }
  coordinator_flags.insert(coordinator_flags.end(),
                           {"--roots", "s3://" + kBucket + "/," + std::string(QUANT_SHARED_DIR) +
                                           "," + (dir / "text").string()});
  Coordinator c(dir / "state.db", dir / "token", coordinator_flags, dir / "coordinator.log");
  ASSERT_TRUE(c.up());
  Worker w0(c.grpc_address(), "w0", dir / "w0.log", s3_flags);
  Worker w1(c.grpc_address(), "w1", dir / "w1.log", s3_flags);
  ASSERT_TRUE(w0.up() && w1.up());
  quant::testing::Prometheus prometheus(dir, {c.http_port(), w0.http_port(), w1.http_port()});
  ASSERT_TRUE(prometheus.WaitForTargets(3));

  const std::string qctl = std::string(QCTL_BINARY) + " ";
  const std::string auth =
      " --coordinator " + c.grpc_address() + " --token-file " + (dir / "token").string();
  const std::string submitted =
      RunCommand(qctl + "submit" + auth + " --model " + model + " --out " + result +
                     " --method gsq --bits 2 --steps 30 --calib-tokens 8192 --no-mse"
                     " --expert-shards 2 --eval-text " + (dir / "text" / "short.txt").string(),
                 &rc);
  ASSERT_EQ(rc, 0) << submitted;
  std::printf("$ qctl submit ... --model %s --out %s\n%s", model.c_str(), result.c_str(),
              submitted.c_str());

  // Progress through Prometheus while the job runs.
  const std::string progress = "sum(quant_tasks{state=\"done\"}) / sum(quant_tasks)";
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(900);
  double midway = -1;
  while (std::chrono::steady_clock::now() < until &&
         prometheus.Query("quant_jobs{state=\"succeeded\"}") < 1 &&
         prometheus.Query("quant_jobs{state=\"failed\"}") < 1) {
    const double p = prometheus.Query(progress);
    if (p > 0 && p < 1 && midway < 0) {
      midway = p;
      std::printf("Prometheus, midway: %s = %.3f\n", progress.c_str(), p);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_EQ(prometheus.Query("quant_jobs{state=\"succeeded\"}"), 1)
      << ReadFile(dir / "w0.log") << ReadFile(dir / "w1.log") << ReadFile(dir / "coordinator.log");
  EXPECT_GT(midway, 0) << "no progress seen while the job ran";
  std::printf("Prometheus, at the end: quant_jobs{state=\"succeeded\"} = 1\n");
  // The publishing worker's counter, once Prometheus has scraped it after the last task.
  double uploaded = -1;
  for (int i = 0; i < 40 && uploaded <= 0; ++i) {
    uploaded = prometheus.Query("sum(quant_object_bytes_uploaded_total)");
    if (uploaded <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  std::printf("Prometheus: sum(quant_object_bytes_uploaded_total) = %.0f\n", uploaded);
  EXPECT_GT(uploaded, 0);

  // The result, listed and read back by the aws CLI, matches the manifest's checksums.
  const std::string listing = RunCommand(aws + "s3 ls --recursive " + result + "/", &rc);
  ASSERT_EQ(rc, 0) << listing;
  std::printf("$ aws s3 ls --recursive %s/\n%s", result.c_str(), listing.c_str());
  out = RunCommand(
      aws + "s3 cp --recursive --only-show-errors " + result + " " + (dir / "back").string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto manifest = nlohmann::json::parse(ReadFile(dir / "back/quant_manifest.json"));
  int checked = 0;
  for (const char* group : {"shards", "files"}) {
    for (const auto& f : manifest[group]) {
      const std::string name = f["file"].get<std::string>();
      EXPECT_EQ(Sha256Hex(ReadFile(dir / "back" / name)), f["sha256"].get<std::string>()) << name;
      ++checked;
    }
  }
  EXPECT_GE(checked, 5);
  const auto report = nlohmann::json::parse(ReadFile(dir / "back/report.json"));
  ASSERT_TRUE(report.contains("eval")) << report.dump();
  std::printf(
      "aws-downloaded files matching the manifest's SHA-256: %d; report: KL %.5f, EAR %.5f\n",
      checked, report["eval"]["kl"][0].get<double>(), report["eval"]["ear"][0].get<double>());
  // The job's log through qctl, and a resubmission refused: the output prefix now exists.
  const std::string logs = RunCommand(qctl + "logs" + auth + " 1", &rc);
  EXPECT_EQ(rc, 0) << logs;
  const std::string again = RunCommand(
      qctl + "submit" + auth + " --model " + model + " --out " + result + " --job-id other", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(again.find("already exists"), std::string::npos) << again;

  // Credentials never logged: not in any log or output of ours, nor on /metrics.
  const std::string metrics =
      RunCommand("curl -s http://127.0.0.1:" + std::to_string(w0.http_port()) + "/metrics", &rc);
  for (const auto& [what, text] : std::vector<std::pair<std::string, std::string>>{
           {"coordinator.log", ReadFile(dir / "coordinator.log")},
           {"w0.log", ReadFile(dir / "w0.log")},
           {"w1.log", ReadFile(dir / "w1.log")},
           {"qctl submit", submitted},
           {"qctl logs", logs},
           {"qctl submit (refused)", again},
           {"worker /metrics", metrics},
           {"report.json", report.dump()}}) {
    EXPECT_EQ(text.find(kSecret), std::string::npos) << "the secret is in " << what;
  }
  if (::testing::Test::HasFailure()) std::printf("%s", s3.Logs().c_str());
  fs::remove_all(dir);
}

}  // namespace
