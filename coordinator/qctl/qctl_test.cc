// qctl end to end: bad input gives one clear error line naming the file and the problem, a
// non-zero exit and no output on stdout; a good run prints the evaluation table.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
const std::string kShared = QUANT_SHARED_DIR;
const std::string kQwen = kShared + "/models/tiny-qwen3-moe";
const std::string kDeepseek = kShared + "/models/tiny-deepseek-v3";

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  int64_t max_rss_bytes = 0;  // QctlMeasured only
  double seconds = 0;         // QctlMeasured only
};

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class QctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("qctl_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // qctl with `args`; `env` ("NAME=value ...") set for it alone.
  RunResult Qctl(const std::string& args, const std::string& env = "") {
    const fs::path out = tmp_ / "stdout", err = tmp_ / "stderr";
    const std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(QCTL_BINARY) +
                            " " + args + " >" + out.string() + " 2>" + err.string();
    RunResult r;
    const int status = std::system(cmd.c_str());
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  }

  // Qctl(args) run as `sh -c "<prefix>qctl <args>"`, with the peak resident set of the process
  // tree (wait4's rusage: the shell and what it waited for; `exec` in the prefix makes that qctl
  // itself) and the wall time.
  RunResult QctlMeasured(const std::string& args, const std::string& prefix = "exec ") {
    const fs::path out = tmp_ / "stdout", err = tmp_ / "stderr";
    const std::string cmd =
        prefix + QCTL_BINARY + " " + args + " >" + out.string() + " 2>" + err.string();
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    RunResult r;
    int status = 0;
    struct rusage usage {};
    if (pid < 0 || ::wait4(pid, &status, 0, &usage) != pid) return r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.max_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;  // reported in KiB
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;      // -1: killed by a signal
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  }

  // `path` made of copies of the calibration text, `bytes` long at least.
  static void WriteLargeText(const fs::path& path, int64_t bytes) {
    const std::string unit = Slurp(kShared + "/data/calib/calib.txt");
    std::ofstream out(path, std::ios::binary);
    for (int64_t written = 0; written < bytes; written += static_cast<int64_t>(unit.size())) {
      out << unit;
    }
  }

  // A copy of tiny-qwen3-moe: small files copied, shards symlinked unless `copy_shards`.
  fs::path CopyModel(bool copy_shards) {
    const fs::path dst = tmp_ / "model";
    fs::create_directories(dst);
    for (const auto& entry : fs::directory_iterator(kQwen)) {
      const fs::path to = dst / entry.path().filename();
      if (entry.path().extension() == ".safetensors" && !copy_shards) {
        fs::create_symlink(entry.path(), to);
      } else {
        fs::copy_file(entry.path(), to);
        fs::permissions(to, fs::perms::owner_write, fs::perm_options::add);
      }
    }
    return dst;
  }

  // One error line; the JSON progress events that come before it when stderr is not a terminal
  // (--progress auto) are not counted.
  void ExpectOneLineError(const RunResult& r, const std::vector<std::string>& needles) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
    ASSERT_FALSE(r.err.empty());
    std::string err;
    std::istringstream lines(r.err);
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("{\"event\"")) err += line + "\n";
    }
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(err.rfind("qctl: error: ", 0), 0u) << r.err;
    for (const std::string& n : needles) EXPECT_NE(err.find(n), std::string::npos) << r.err;
  }

  // Rewrites the header of one shard (keeping the data) through `edit` of its JSON text.
  void EditHeader(const fs::path& shard, const std::function<std::string(std::string)>& edit) {
    std::string bytes = Slurp(shard);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    std::string header = edit(bytes.substr(8, n));
    header.resize(std::max<size_t>(header.size(), n), ' ');
    ASSERT_EQ(header.size(), n) << "edited header must not grow";
    std::ofstream out(shard, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), 8);
    out.write(header.data(), header.size());
    out.write(bytes.data() + 8 + n, bytes.size() - 8 - n);
  }

  fs::path tmp_;
};

std::string Args(const fs::path& model) { return "eval --model " + model.string(); }

TEST_F(QctlTest, MissingModelDirectory) {
  ExpectOneLineError(Qctl(Args(tmp_ / "nope")), {(tmp_ / "nope").string()});
}

TEST_F(QctlTest, ConfigNotJson) {
  fs::path m = CopyModel(false);
  std::ofstream(m / "config.json", std::ios::trunc) << "{not json";
  ExpectOneLineError(Qctl(Args(m)), {"config.json"});
}

TEST_F(QctlTest, UnknownArchitecture) {
  fs::path m = CopyModel(false);
  std::string cfg = Slurp(m / "config.json");
  cfg.replace(cfg.find("Qwen3MoeForCausalLM"), 19, "LlamaForCausalLM");
  cfg.replace(cfg.find("\"qwen3_moe\""), 11, "\"llama\"");
  std::ofstream(m / "config.json", std::ios::trunc) << cfg;
  ExpectOneLineError(Qctl(Args(m)), {"config.json", "unknown architecture 'LlamaForCausalLM'"});
}

TEST_F(QctlTest, TruncatedShard) {
  fs::path m = CopyModel(true);
  fs::resize_file(m / "model-00002-of-00003.safetensors", 5);
  ExpectOneLineError(Qctl(Args(m)), {"model-00002-of-00003.safetensors"});
}

TEST_F(QctlTest, HeaderLengthPastEndOfFile) {
  fs::path m = CopyModel(true);
  const fs::path shard = m / "model-00001-of-00003.safetensors";
  std::fstream f(shard, std::ios::binary | std::ios::in | std::ios::out);
  const uint64_t huge = uint64_t{1} << 40;
  f.write(reinterpret_cast<const char*>(&huge), 8);
  f.close();
  ExpectOneLineError(Qctl(Args(m)), {"model-00001-of-00003.safetensors"});
}

TEST_F(QctlTest, CorruptHeader) {
  fs::path m = CopyModel(true);
  EditHeader(m / "model-00001-of-00003.safetensors", [](std::string h) {
    h[0] = '[';
    return h;
  });
  ExpectOneLineError(Qctl(Args(m)), {"model-00001-of-00003.safetensors"});
}

TEST_F(QctlTest, OffsetsPastEnd) {
  fs::path m = CopyModel(true);
  const fs::path shard = m / "model-00003-of-00003.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 4096);
  ExpectOneLineError(Qctl(Args(m)), {"model-00003-of-00003.safetensors"});
}

TEST_F(QctlTest, OverlappingOffsets) {
  fs::path m = CopyModel(true);
  EditHeader(m / "model-00001-of-00003.safetensors", [](std::string h) {
    // The embedding occupies [0, 2097152); make the next tensor start inside it.
    const std::string from = "\"data_offsets\":[2097152,";
    const size_t at = h.find(from);
    if (at != std::string::npos) h.replace(at, from.size(), "\"data_offsets\":[2097150,");
    return h;
  });
  ExpectOneLineError(Qctl(Args(m)), {"model-00001-of-00003.safetensors"});
}

TEST_F(QctlTest, TensorInIndexMissingFromShard) {
  fs::path m = CopyModel(false);
  std::string idx = Slurp(m / "model.safetensors.index.json");
  const std::string name = "\"model.norm.weight\"";
  idx.replace(idx.find(name), name.size(), "\"model.norm.weight\", \"model.bogus.weight\"");
  // Keep it valid JSON: the replacement above turned one entry into two keys sharing a value.
  const size_t colon = idx.find("\"model.bogus.weight\"");
  idx.replace(colon - 2, 2, ": \"model-00001-of-00003.safetensors\",");
  std::ofstream(m / "model.safetensors.index.json", std::ios::trunc) << idx;
  ExpectOneLineError(Qctl(Args(m)), {"model.bogus.weight"});
}

TEST_F(QctlTest, DTypeNotAllowedByConfig) {
  fs::path m = CopyModel(true);
  EditHeader(m / "model-00001-of-00003.safetensors", [](std::string h) {
    const size_t at = h.find("\"dtype\":\"BF16\"");
    h.replace(at, 14, "\"dtype\":\"I16\" ");
    return h;
  });
  ExpectOneLineError(Qctl(Args(m)), {"model-00001-of-00003.safetensors"});
}

TEST_F(QctlTest, BitsOutOfRange) {
  ExpectOneLineError(Qctl(Args(kQwen) + " --fake-quant rtn --bits 9"), {"bits"});
  ExpectOneLineError(Qctl(Args(kQwen) + " --fake-quant rtn --bits 1"), {"bits"});
}

TEST_F(QctlTest, EmptyTextFile) {
  std::ofstream(tmp_ / "empty.txt").close();
  ExpectOneLineError(Qctl(Args(kQwen) + " --text " + (tmp_ / "empty.txt").string()),
                     {"empty.txt", "empty"});
}

TEST_F(QctlTest, EvaluatesShortTextAgainstItself) {
  // Two windows' worth of text keeps this fast; the full recipe runs in eval tests.
  std::ifstream in(kShared + "/data/eval/kjv_val.txt");
  std::string text(3000, '\0');
  in.read(text.data(), text.size());
  std::ofstream(tmp_ / "short.txt") << text;
  RunResult r = Qctl(Args(kQwen) + " --reference " + kQwen + " --text " +
                     (tmp_ / "short.txt").string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"ear\""), std::string::npos);
  EXPECT_NE(r.out.find("\"ppl\""), std::string::npos);
}

std::string Quantize(const fs::path& out, const std::string& extra) {
  return "quantize --model " + kQwen + " --out " + out.string() + " " + extra;
}

TEST_F(QctlTest, QuantizeBitsOutOfRange) {
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--bits 9")), {"--bits", "9"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--bits 1")), {"--bits", "1"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// --bits inf was taken as a huge integer and 4.0000001 was printed as "4 is not a whole number".
TEST_F(QctlTest, QuantizeBitsNotFiniteOrNotWhole) {
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--bits inf")), {"--bits: inf", "not a number"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--bits nan")), {"--bits: nan"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--bits 4.0000001")),
                     {"--bits: 4.0000001 is not a whole number"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// --calib as users keep it (.jsonl records, a directory): each bad input is one line naming the
// file and the line, before the model is read.
TEST_F(QctlTest, QuantizeCalibEmptyDirectory) {
  fs::create_directories(tmp_ / "calib");
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--method rtn --calib " + (tmp_ / "calib").string())),
                     {(tmp_ / "calib").string() + ": empty calibration directory"});
  std::ofstream(tmp_ / "calib" / "README.md") << "not data";
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--method rtn --calib " + (tmp_ / "calib").string())),
                     {(tmp_ / "calib").string() + ": no .txt or .jsonl file"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

TEST_F(QctlTest, QuantizeCalibEmptyJsonlFile) {
  std::ofstream(tmp_ / "data.jsonl").flush();
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--method rtn --calib " + (tmp_ / "data.jsonl").string())),
      {(tmp_ / "data.jsonl").string() + ":1: empty calibration file"});
  // In a directory too, beside a good file.
  fs::create_directories(tmp_ / "dir");
  std::ofstream(tmp_ / "dir" / "a.jsonl") << "{\"text\": \"In the beginning\"}\n";
  std::ofstream(tmp_ / "dir" / "b.txt").flush();
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--method rtn --calib " + (tmp_ / "dir").string())),
      {(tmp_ / "dir" / "b.txt").string() + ":1: empty calibration file"});
}

TEST_F(QctlTest, QuantizeCalibLineNotJson) {
  std::ofstream(tmp_ / "data.jsonl") << "{\"text\": \"In the beginning\"}\n\n{\"text\": 'x'}\n";
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--method rtn --calib " + (tmp_ / "data.jsonl").string())),
      {(tmp_ / "data.jsonl").string() + ":3: not JSON"});
}

TEST_F(QctlTest, QuantizeCalibRecordWithNeitherField) {
  std::ofstream(tmp_ / "data.jsonl") << "{\"text\": \"In the beginning\"}\n{\"prompt\": \"x\"}\n";
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--method rtn --calib " + (tmp_ / "data.jsonl").string())),
      {(tmp_ / "data.jsonl").string() + ":2: a record with neither \"text\" nor \"messages\""});
}

TEST_F(QctlTest, QuantizeCalibTemplateTheRendererCannotRun) {
  const fs::path model = CopyModel(false);
  std::ofstream(model / "tokenizer_config.json")
      << R"({"bos_token": "<|begin_of_text|>", "chat_template": "{{ bos_token }}\n{% for m in messages %}{{ m|tojson }}{% endfor %}"})";
  std::ofstream(tmp_ / "data.jsonl")
      << "{\"text\": \"In the beginning\"}\n"
      << "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n";
  ExpectOneLineError(
      Qctl("quantize --model " + model.string() + " --out " + (tmp_ / "out").string() +
           " --method rtn --no-eval --calib " + (tmp_ / "data.jsonl").string()),
      {(tmp_ / "data.jsonl").string() + ":2: the chat template of " +
           (model / "tokenizer_config.json").string() +
           " cannot be rendered here: line 2: filter '|tojson' is not supported"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// A .jsonl of text and chat records (the chats rendered by a Qwen3-style template): 8 samples
// packed into windows of 128 tokens; the records past the 8th are not read.
TEST_F(QctlTest, QuantizeFromJsonlRecords) {
  const fs::path model = CopyModel(false);
  const std::string tmpl =
      Slurp(fs::path(QUANT_SOURCE_DIR) / "worker/tokenizer/testdata/chat_templates/qwen3.jinja");
  std::ofstream(model / "tokenizer_config.json")
      << nlohmann::json({{"bos_token", "<|begin_of_text|>"}, {"chat_template", tmpl}}).dump();
  const std::string text = Slurp(kShared + "/data/calib/calib.txt");
  std::ofstream data(tmp_ / "data.jsonl");
  for (int i = 0; i < 12; ++i) {
    const std::string piece = text.substr(static_cast<size_t>(i) * 2000, 1500);
    if (i % 3 == 2) {
      data << nlohmann::json({{"messages", {{{"role", "user"}, {"content", piece.substr(0, 400)}},
                                            {{"role", "assistant"}, {"content", piece.substr(400)}}}}})
                  .dump()
           << "\n";
    } else {
      data << nlohmann::json({{"text", piece}}).dump() << "\n";
    }
  }
  data << "this line is past the samples asked for and never read\n";
  data.close();
  RunResult r = Qctl("quantize --model " + model.string() + " --out " + (tmp_ / "out").string() +
                     " --method rtn --calib " + (tmp_ / "data.jsonl").string() +
                     " --seq-len 128 --calib-samples 8 --no-eval");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json report = nlohmann::json::parse(Slurp(tmp_ / "out" / "report.json"));
  EXPECT_EQ(report["options"]["window_tokens"], 128);
  EXPECT_EQ(report["options"]["calib_samples"], 8);
  EXPECT_TRUE(fs::exists(tmp_ / "out" / "quant_manifest.json"));
}

// The task boundary: a torch error or an out-of-memory inside a task is one line naming the task
// and its layer (for out-of-memory, the bytes asked for), and what had finished before it.
TEST_F(QctlTest, QuantizeTaskFailuresAreOneLine) {
  auto job = [&](const std::string& out) {
    return Quantize(tmp_ / out, "--method rtn --calib-tokens 2048 --no-eval");
  };
  RunResult oom = Qctl(job("a"), "QUANT_INJECT_TASK_FAILURE=oom:L1/quantize");
  ExpectOneLineError(oom, {"L1/quantize (layer 1): out of memory", "1152921504606846976 bytes",
                           "4 of 13 tasks are finished", "--resume"});
  EXPECT_FALSE(fs::exists(tmp_ / "a"));
  RunResult torch = Qctl(job("b"), "QUANT_INJECT_TASK_FAILURE=throw:L0/calibrate");
  ExpectOneLineError(torch, {"L0/calibrate (layer 0): torch error: injected failure"});
  EXPECT_FALSE(fs::exists(tmp_ / "b"));
  // Nothing had finished: no work is kept, so the same command runs afresh.
  EXPECT_FALSE(fs::exists(tmp_ / "b.qctl-work"));
  // The in-memory runner has the same boundary.
  RunResult mem = Qctl(job("c") + " --in-memory", "QUANT_INJECT_TASK_FAILURE=throw:L2/quantize");
  ExpectOneLineError(mem, {"L2/quantize (layer 2): torch error: injected failure",
                           "finished tasks"});
}

// A late failure (the export, after every layer) names what finished and the exact command that
// continues it; that command then finishes the job from the kept work.
TEST_F(QctlTest, QuantizeLateFailureNamesTheFinishedWorkAndTheResumeCommand) {
  const std::string args = Quantize(tmp_ / "late", "--method rtn --calib-tokens 2048 --no-eval");
  RunResult r = Qctl(args, "QUANT_INJECT_TASK_FAILURE=throw:write");
  const std::string command = std::string(QCTL_BINARY) + " " + args + " --resume";
  ExpectOneLineError(r, {"write: torch error: injected failure", "12 of 13 tasks are finished",
                         "(L0, L1, L2, L3 done)", "to continue run: " + command + "\n"});
  EXPECT_TRUE(fs::exists(tmp_ / "late.qctl-work"));
  std::printf("%s", r.err.c_str());
  // The named command, run as printed (a shell parses it), continues from the kept tasks.
  const std::string printed = r.err.substr(r.err.find("to continue run: ") + 17);
  const int status = std::system((printed.substr(0, printed.size() - 1) + " >" +
                                  (tmp_ / "resume.out").string() + " 2>&1").c_str());
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << Slurp(tmp_ / "resume.out");
  EXPECT_NE(Slurp(tmp_ / "resume.out").find("resumed    12 tasks"), std::string::npos)
      << Slurp(tmp_ / "resume.out");
  EXPECT_TRUE(fs::exists(tmp_ / "late" / "quant_manifest.json"));
  EXPECT_FALSE(fs::exists(tmp_ / "late.qctl-work"));
}

// Free disk space against the preflight estimate, on a real filesystem too small: a tmpfs
// mounted in a user and mount namespace of our own (no root needed where unprivileged user
// namespaces are allowed; skipped elsewhere: storage_test and plan_input_test check the same
// logic through a fake statvfs). The resumable runner keeps every layer's hand-off state
// (about 31 MB a layer here), the in-memory one writes the checkpoint only (about 10 MB).
TEST_F(QctlTest, QuantizeRefusesAFilesystemTooSmallBeforeAnyWork) {
  if (std::system("unshare --user --map-root-user --mount true >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "no unprivileged user namespaces here: cannot mount a small tmpfs";
  }
  const fs::path mnt = tmp_ / "small";
  fs::create_directories(mnt);
  auto in_tmpfs = [&](const std::string& size, const std::string& args) {
    RunResult r;
    const fs::path out = tmp_ / "stdout", err = tmp_ / "stderr";
    const std::string cmd = "unshare --user --map-root-user --mount sh -c 'mount -t tmpfs -o size=" +
                            size + " tmpfs " + mnt.string() + " && exec " + QCTL_BINARY + " " +
                            args + "' >" + out.string() + " 2>" + err.string();
    const auto start = std::chrono::steady_clock::now();
    const int status = std::system(cmd.c_str());
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  };
  const std::string job = "--method rtn --calib-tokens 2048 --no-eval --progress json";
  RunResult r = in_tmpfs("64m", Quantize(mnt / "a" / "out", job));
  ExpectOneLineError(r, {(mnt / "a" / "out").string() + ": not enough free disk space: ",
                         // its parent, created by the output's checks (mkdir -p) just before
                         " free on the filesystem of " + (mnt / "a").string() +
                             ", the job needs about ",
                         "the checkpoint", "the work directory (4 layers' hand-off state)"});
  EXPECT_EQ(r.err.find("{\"event\""), std::string::npos) << "work began: " << r.err;
  std::printf("too small (64 MiB, resumable): %.2f s: %s", r.seconds, r.err.c_str());
  // The same filesystem takes the in-memory runner's checkpoint: the normal path passes.
  r = in_tmpfs("64m", Quantize(mnt / "b" / "out", job + " --in-memory"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote"), std::string::npos) << r.out;
  std::printf("in memory on 64 MiB: %.2f s, exit %d\n", r.seconds, r.exit_code);
  // And a filesystem with room for the estimate runs the resumable job to the end.
  r = in_tmpfs("256m", Quantize(mnt / "c" / "out", job));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote"), std::string::npos) << r.out;
  std::printf("resumable on 256 MiB: %.2f s, exit %d\n", r.seconds, r.exit_code);
}

TEST_F(QctlTest, QuantizeGroupDoesNotDivideWithoutFallback) {
  // down_proj of tiny-qwen3-moe has 64 input columns: 48 divides neither it nor 256.
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--group 48 --no-channel-fallback")),
                     {"--group 48", "input columns"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

TEST_F(QctlTest, QuantizeOutputExists) {
  fs::create_directories(tmp_ / "out");
  std::ofstream(tmp_ / "out" / "keep.txt") << "mine";
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--method rtn")), {"already exists"});
  EXPECT_EQ(Slurp(tmp_ / "out" / "keep.txt"), "mine");
}

// The output location is checked before the model is read: each of these models has a config
// that does not parse, so an error naming the output (not config.json) shows the order.
class QctlOutputTest : public QctlTest {
 protected:
  fs::path BrokenModel() {
    fs::path m = CopyModel(false);
    std::ofstream(m / "config.json", std::ios::trunc) << "{not json";
    return m;
  }
  RunResult QuantizeTo(const fs::path& model, const fs::path& out, const std::string& extra = "") {
    return Qctl("quantize --model " + model.string() + " --out " + out.string() +
                " --method rtn " + extra);
  }
};

TEST_F(QctlOutputTest, MissingParentsAreCreatedBeforeTheModelIsRead) {
  const fs::path out = tmp_ / "a" / "b" / "c" / "out";
  ExpectOneLineError(QuantizeTo(BrokenModel(), out), {"config.json"});
  EXPECT_TRUE(fs::is_directory(out.parent_path()));
  EXPECT_FALSE(fs::exists(out));
  // No probe or temporary directory is left beside it.
  EXPECT_TRUE(fs::is_empty(out.parent_path()));
}

TEST_F(QctlOutputTest, OutputIsAFile) {
  std::ofstream(tmp_ / "file") << "mine";
  ExpectOneLineError(QuantizeTo(BrokenModel(), tmp_ / "file", "--overwrite"),
                     {(tmp_ / "file").string(), "not a directory"});
  EXPECT_EQ(Slurp(tmp_ / "file"), "mine");
}

TEST_F(QctlOutputTest, ParentIsAFile) {
  std::ofstream(tmp_ / "file") << "mine";
  ExpectOneLineError(QuantizeTo(BrokenModel(), tmp_ / "file" / "out"),
                     {"cannot create its parent directory", "Not a directory"});
  EXPECT_EQ(Slurp(tmp_ / "file"), "mine");
}

TEST_F(QctlOutputTest, OutputExistsWithoutOverwrite) {
  fs::create_directories(tmp_ / "out");
  std::ofstream(tmp_ / "out" / "keep.txt") << "mine";
  ExpectOneLineError(QuantizeTo(BrokenModel(), tmp_ / "out"), {"already exists", "--overwrite"});
  EXPECT_EQ(Slurp(tmp_ / "out" / "keep.txt"), "mine");
}

// Permission bits do not stop root, so as root the unwritable parent is sysfs (read-only to
// everyone); otherwise a directory without write permission.
TEST_F(QctlOutputTest, ParentNotWritable) {
  fs::path parent = tmp_ / "locked";
  if (::geteuid() == 0) {
    parent = "/sys";
  } else {
    fs::create_directories(parent);
    fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_exec);
  }
  ExpectOneLineError(QuantizeTo(BrokenModel(), parent / "qctl-test-out"),
                     {"cannot write in its parent directory", parent.string()});
  EXPECT_FALSE(fs::exists(parent / "qctl-test-out"));
  if (parent != "/sys") fs::permissions(parent, fs::perms::owner_all);
}

TEST_F(QctlOutputTest, OutputIsInsideOrContainsTheModel) {
  const fs::path model = BrokenModel();
  ExpectOneLineError(QuantizeTo(model, model, "--overwrite"), {"is the model directory"});
  ExpectOneLineError(QuantizeTo(model, model / "quantized"), {"inside the model directory"});
  ExpectOneLineError(QuantizeTo(model, tmp_, "--overwrite"), {"contains the model directory"});
  // Through a symlink to the model directory, too.
  fs::create_directory_symlink(model, tmp_ / "alias");
  ExpectOneLineError(QuantizeTo(model, tmp_ / "alias" / "q"), {"inside the model directory"});
  EXPECT_TRUE(fs::exists(model / "config.json"));
  EXPECT_FALSE(fs::exists(model / "quantized"));
}

TEST_F(QctlTest, QuantizeCalibrationTooSmall) {
  std::ofstream(tmp_ / "calib.txt") << "In the beginning God created the heaven and the earth.";
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--calib " + (tmp_ / "calib.txt").string())),
      {"calib.txt", "fewer than"});
  // --calib-samples counts a text's windows.
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--calib-samples 3 --seq-len 64 --calib " +
                                      (tmp_ / "calib.txt").string())),
      {"calib.txt", "windows of 64, fewer than the 3 that --calib-samples 3 asks for"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

TEST_F(QctlTest, QuantizeUnknownMethodAndObjective) {
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--method awq")), {"--method", "awq"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--objective kl")), {"--objective", "kl"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--export gguf")), {"gguf"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--device tpu")), {"--device", "tpu"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

TEST_F(QctlTest, QuantizeBadModel) {
  fs::path m = CopyModel(false);
  std::ofstream(m / "config.json", std::ios::trunc) << "{not json";
  ExpectOneLineError(Qctl("quantize --model " + m.string() + " --out " + (tmp_ / "out").string()),
                     {"config.json"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// --profile: a missing directory is one error line before any work; where this libtorch cannot
// write a trace (Debian's has no Kineto) that too is one line before any work; where it can, the
// trace holds the job's layer tasks and the evaluation as scopes.
TEST_F(QctlTest, QuantizeProfile) {
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--method rtn --no-eval --profile " +
                                      (tmp_ / "no" / "such" / "t.json").string())),
      {"--profile", "no such directory"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
  const fs::path trace = tmp_ / "t.json";
  std::ifstream in(kShared + "/data/eval/kjv_val.txt");
  std::string text(3000, '\0');
  in.read(text.data(), text.size());
  std::ofstream(tmp_ / "short.txt") << text;
  RunResult r = Qctl(Quantize(tmp_ / "out", "--method rtn --calib-tokens 2048 --eval-text " +
                                                (tmp_ / "short.txt").string() + " --profile " +
                                                trace.string()));
  if (r.exit_code != 0) {
    ExpectOneLineError(r, {"--profile", "Kineto"});
    EXPECT_FALSE(fs::exists(tmp_ / "out"));
    EXPECT_FALSE(fs::exists(trace));
    GTEST_SKIP() << "this libtorch writes no trace: " << r.err;
  }
  const std::string json = Slurp(trace);
  EXPECT_NE(json.find("\"traceEvents\""), std::string::npos);
  for (const char* scope : {"\"L0/calibrate\"", "\"L0/quantize\"", "\"eval\"", "\"write\""}) {
    EXPECT_NE(json.find(scope), std::string::npos) << scope;
  }
}

// A small end-to-end job per method: 8 calibration windows, a few GSQ steps; both exports are
// then read back by `qctl eval` against the original. GPTQ keeps its MSE scale search (the
// default, end to end); GSQ starts from GPTQ without it (--no-mse: the search was 3/4 of the job).
TEST_F(QctlTest, QuantizeSmallJobsAndEvaluateBothExports) {
  std::ifstream in(kShared + "/data/eval/kjv_val.txt");
  std::string text(3000, '\0');
  in.read(text.data(), text.size());
  std::ofstream(tmp_ / "short.txt") << text;
  const std::string eval_text = " --eval-text " + (tmp_ / "short.txt").string();
  for (const std::string& job :
       {std::string("--method gptq --bits 4 --export native"),
        std::string("--method gsq --bits 2 --steps 4 --grid asym --export vllm --no-mse"),
        std::string("--method rtn --bits 3 --scope all --export vllm")}) {
    fs::remove_all(tmp_ / "out");
    RunResult r = Qctl(Quantize(tmp_ / "out", job + " --calib-tokens 2048" + eval_text));
    ASSERT_EQ(r.exit_code, 0) << job << "\n" << r.err;
    EXPECT_NE(r.out.find("perplexity"), std::string::npos) << r.out;
    for (const char* f : {"config.json", "model.safetensors.index.json", "quant_manifest.json",
                          "report.json", "tokenizer.json"}) {
      EXPECT_TRUE(fs::exists(tmp_ / "out" / f)) << job << " " << f;
    }
    const std::string report = Slurp(tmp_ / "out" / "report.json");
    EXPECT_NE(report.find("\"units\""), std::string::npos);
    EXPECT_NE(report.find("\"fallback_experts\""), std::string::npos);
    RunResult e = Qctl("eval --model " + (tmp_ / "out").string() + " --reference " + kQwen +
                       " --text " + (tmp_ / "short.txt").string() + " --json");
    ASSERT_EQ(e.exit_code, 0) << job << "\n" << e.err;
    EXPECT_NE(e.out.find("\"kl\""), std::string::npos);
  }
}

TEST_F(QctlTest, QuantizeSlqBadOptions) {
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--bits 3.5")), {"--bits", "--slq"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--target-ear 0.97")), {"--target-ear", "--slq"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --bits 9")), {"--bits", "budget"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --slq-bits 3,4 --bits 2.5")),
                     {"budget", "3..4"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --target-ear 1.5")), {"--target-ear"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--per-expert-bits")), {"--per-expert-bits", "--slq"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --bits 3 --per-expert-bits")),
                     {"--per-expert-bits", "--export native"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --slq-bits 1,4 --bits 3")),
                     {"--slq-bits", "1"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --bits 3 --per-expert-bits --export native"
                                                 " --expert-aggregation max")),
                     {"--expert-aggregation", "max"});
  ExpectOneLineError(Qctl(Quantize(tmp_ / "out", "--slq --bits 3 --expert-aggregation scale")),
                     {"--expert-aggregation", "--per-expert-bits"});
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--slq --slq-allocation " + (tmp_ / "none.json").string())),
      {"none.json", "cannot read"});
  std::ofstream(tmp_ / "bad.json") << "{unit: 3";
  ExpectOneLineError(
      Qctl(Quantize(tmp_ / "out", "--slq --slq-allocation " + (tmp_ / "bad.json").string())),
      {"bad.json", "not a JSON object"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// SLQ end to end on a small budget: probes, the solve, a mixed-bit checkpoint; the second run
// of the same job reads every probe from the cache and picks the same bits. GPTQ without the MSE
// scale search (--no-mse): the search was ~80% of both runs' CPU and is not what is tested here.
TEST_F(QctlTest, QuantizeSlqUsesTheProbeCache) {
  const std::string common = " --method gptq --no-mse --slq --slq-bits 2,4 --bits 3 --grid asym"
                             " --probe-windows 2 --calib-tokens 2048 --no-eval --probe-cache " +
                             (tmp_ / "cache").string();
  RunResult first = Qctl(Quantize(tmp_ / "a", common));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  RunResult second = Qctl(Quantize(tmp_ / "b", common));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const nlohmann::json a = nlohmann::json::parse(Slurp(tmp_ / "a" / "report.json"));
  const nlohmann::json b = nlohmann::json::parse(Slurp(tmp_ / "b" / "report.json"));
  // tiny-qwen3-moe: 4 layers x (gate_up, down) = 8 units, 2 candidate bitwidths each.
  EXPECT_EQ(a["slq"]["probes_run"], 16);
  EXPECT_EQ(a["slq"]["probes_cached"], 0);
  EXPECT_EQ(b["slq"]["probes_run"], 0);
  EXPECT_EQ(b["slq"]["probes_cached"], 16);
  EXPECT_EQ(a["slq"]["units"], b["slq"]["units"]);
  EXPECT_LE(a["slq"]["average_bits"].get<double>(), 3.0 + 1e-12);
  EXPECT_TRUE(fs::exists(tmp_ / "a" / "slq_bits.png")) << a["slq"]["heatmap"];
  // Both bitwidths are used (a 3-bit average from {2, 4} needs both), and every linear of a
  // unit carries its unit's bits in the per-linear report.
  std::set<int> used;
  std::map<std::string, int> unit_bits;
  for (const auto& u : a["slq"]["units"]) {
    used.insert(u["bits"].get<int>());
    unit_bits[u["unit"]] = u["bits"];
  }
  EXPECT_EQ(used, (std::set<int>{2, 4}));
  for (const auto& u : a["units"]) {
    const std::string name = u["name"];
    const std::string layer = name.substr(0, name.find(".mlp.") + 5);
    const bool down = name.find("down_proj") != std::string::npos;
    EXPECT_EQ(u["bits"], unit_bits.at(layer + (down ? "experts.down_proj" : "experts.gate_up")))
        << name;
  }
}

// Per-expert SLQ: the tied expert units are probed too (cached with the rest) and calibrate the
// solve; the report names each layer's fit, and the calibrated prediction differs from the sum.
// GPTQ without the MSE scale search (--no-mse): 204 probes with it took ~3x the CPU.
TEST_F(QctlTest, QuantizeSlqPerExpertCalibratesWithTiedProbes) {
  const std::string common =
      " --method gptq --no-mse --slq --slq-bits 2,4 --bits 3 --grid asym --per-expert-bits"
      " --export native"
      " --probe-windows 1 --calib-tokens 1024 --no-eval --probe-cache " + (tmp_ / "cache").string();
  RunResult first = Qctl("quantize --model " + kDeepseek + " --out " + (tmp_ / "a").string() +
                         common);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  RunResult second = Qctl("quantize --model " + kDeepseek + " --out " + (tmp_ / "b").string() +
                          common + " --expert-aggregation sum");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const nlohmann::json a = nlohmann::json::parse(Slurp(tmp_ / "a" / "report.json"))["slq"];
  const nlohmann::json b = nlohmann::json::parse(Slurp(tmp_ / "b" / "report.json"))["slq"];
  // tiny-deepseek-v3: 3 MoE layers x 16 experts x (gate_up, down) = 96 units, plus 6 tied units
  // that only calibrate, at 2 bitwidths; the second run reads them all from the cache.
  EXPECT_EQ(a["probes_run"], (96 + 6) * 2);
  EXPECT_EQ(b["probes_cached"], (96 + 6) * 2);
  EXPECT_EQ(a["units"].size(), 96u);
  EXPECT_EQ(a["expert_aggregation"], "scale");
  EXPECT_EQ(b["expert_aggregation"], "sum");
  ASSERT_EQ(a["expert_groups"].size(), 6u);
  for (const auto& g : a["expert_groups"]) {
    EXPECT_EQ(g["experts"], 16);
    EXPECT_EQ(g["kl_sum_over_tied"].size(), 2u) << g;
  }
  EXPECT_LE(a["average_bits"].get<double>(), 3.0 + 1e-12);
  EXPECT_NE(a["predicted_kl"].get<double>(), a["predicted_kl_summed"].get<double>());
  EXPECT_DOUBLE_EQ(b["predicted_kl"].get<double>(), b["predicted_kl_summed"].get<double>());
}

// A 200 MB text costs the tokens a job asks for, not the file: calibration reads until
// --calib-tokens is met and `eval --max-windows` until its windows are (before: the text read
// whole and encoded whole, 2.7 GB for the encode alone, then std::bad_alloc and rc 134).
TEST_F(QctlTest, HugeTextsCostTheTokensAskedForNotTheFile) {
  const fs::path big = tmp_ / "big.txt";
  WriteLargeText(big, 200'000'000);
  // qctl with libtorch and a tiny model peaks near 300 MiB whatever the text (measured).
  constexpr int64_t kBound = int64_t{768} << 20;
  const std::string calib = " --calib " + big.string();
  RunResult q =
      QctlMeasured(Quantize(tmp_ / "out", "--method rtn --no-eval --calib-tokens 2048" + calib));
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_LT(q.max_rss_bytes, kBound) << q.max_rss_bytes / 1048576 << " MiB";
  RunResult e =
      QctlMeasured("eval --model " + kQwen + " --text " + big.string() + " --max-windows 2 --json");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_LT(e.max_rss_bytes, kBound) << e.max_rss_bytes / 1048576 << " MiB";
  const nlohmann::json j = nlohmann::json::parse(e.out);
  EXPECT_EQ(j["windows"], 2);
  EXPECT_LE(j["text_bytes"].get<int64_t>(), int64_t{4} << 20);  // a chunk or so of the file
  ExpectOneLineError(Qctl("eval --model " + kQwen + " --max-windows -1"), {"--max-windows"});
}

// The config that grew qctl to 23 GB: refused when the model is opened, in well under a second
// of qctl's own start-up, with one line naming config.json and the field.
TEST_F(QctlTest, ConfigClaimingABillionLayersFailsAtOpen) {
  fs::path m = CopyModel(false);
  std::string cfg = Slurp(m / "config.json");
  const std::string layers = "\"num_hidden_layers\": 4";
  ASSERT_NE(cfg.find(layers), std::string::npos) << cfg;
  cfg.replace(cfg.find(layers), layers.size(), "\"num_hidden_layers\": 1000000000");
  std::ofstream(m / "config.json", std::ios::trunc) << cfg;
  const std::string quantize =
      "quantize --method rtn --no-eval --model " + m.string() + " --out " + (tmp_ / "out").string();
  for (const std::string& args : {"eval --model " + m.string(), quantize}) {
    RunResult r = QctlMeasured(args);
    ExpectOneLineError(r, {(m / "config.json").string(), "'num_hidden_layers' is 1000000000"});
    EXPECT_LT(r.seconds, 10.0) << args;  // mostly loading libtorch; the check itself ~1 ms
    EXPECT_LT(r.max_rss_bytes, int64_t{768} << 20) << args;
  }
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// A config whose experts disagree with the checkpoint fails when the model is opened, naming
// the field, not inside a layer task.
TEST_F(QctlTest, ConfigExpertsDisagreeingWithTheCheckpointFailAtOpen) {
  fs::path m = CopyModel(false);
  std::string cfg = Slurp(m / "config.json");
  const std::string experts = "\"num_experts\": 32";
  ASSERT_NE(cfg.find(experts), std::string::npos) << cfg;
  cfg.replace(cfg.find(experts), experts.size(), "\"num_experts\": 16");
  std::ofstream(m / "config.json", std::ios::trunc) << cfg;
  ExpectOneLineError(
      Qctl("quantize --method rtn --no-eval --model " + m.string() + " --out " +
           (tmp_ / "out").string()),
      {(m / "config.json").string(), "'num_experts' is 16", "model.layers.0.mlp.gate.weight"});
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

// Memory running out anywhere is one error line and exit code 1, not an abort (rc 134): an
// evaluation of 8 MB of text (8,600 windows: 2.3 GB of hidden states) under a 1.5 GB address
// space limit.
TEST_F(QctlTest, RunningOutOfMemoryIsOneErrorLine) {
  const std::string limit = "ulimit -v 1500000 && exec timeout 120 ";
  RunResult small = QctlMeasured("eval --model " + kQwen + " --max-windows 1", limit);
  if (small.exit_code != 0) {
    GTEST_SKIP() << "qctl does not start under a 1.5 GB address space here: " << small.err;
  }
  const fs::path text = tmp_ / "text.txt";
  WriteLargeText(text, 8'000'000);
  RunResult r = QctlMeasured("eval --model " + kQwen + " --text " + text.string(), limit);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ExpectOneLineError(r, {"qctl: error: eval: "});
  EXPECT_TRUE(r.err.find("allocate memory") != std::string::npos ||
              r.err.find("out of memory") != std::string::npos)
      << r.err;
}


// Resume: a run killed with SIGKILL in the middle of GSQ, started again with --resume, skips the
// tasks it had finished and writes the bytes of an uninterrupted run (report.json: the same
// once its timings, the "seconds" fields, are left out).
TEST_F(QctlTest, QuantizeKilledMidGsqResumesToTheSameBytes) {
  std::ifstream in(kShared + "/data/eval/kjv_val.txt");
  std::string text(3000, '\0');
  in.read(text.data(), text.size());
  std::ofstream(tmp_ / "short.txt") << text;
  // 30 steps a layer keep L1's GSQ seconds long (the kill lands in it; 80 before), and GPTQ's
  // start skips the MSE scale search: the resume's bytes are the claim, not the quality.
  const std::string flags = "--method gsq --bits 2 --steps 30 --no-mse --calib-tokens 2048 "
                            "--eval-text " +
                            (tmp_ / "short.txt").string();
  ASSERT_EQ(Qctl(Quantize(tmp_ / "whole", flags)).exit_code, 0);
  const fs::path out = tmp_ / "killed", work = tmp_ / "killed.qctl-work";
  const std::string cmd = std::string(QCTL_BINARY) + " " + Quantize(out, flags);
  const fs::path events = tmp_ / "events.jsonl";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>" + events.string()).c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Kill it inside layer 1's GSQ: once its first step event (JSON progress) is out.
  bool in_gsq = false;
  for (int i = 0; i < 3000 && !in_gsq; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    in_gsq = Slurp(events).find("{\"event\":\"step\",\"phase\":\"gsq\",\"task\":\"L1/gsq\"") !=
             std::string::npos;
  }
  ASSERT_TRUE(in_gsq) << Slurp(events);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  const std::string journal = Slurp(work / "finished");
  EXPECT_EQ(journal.find("L1/gsq"), std::string::npos) << "killed too late: " << journal;
  EXPECT_FALSE(fs::exists(out));
  // The same command without --resume refuses to start over the kept work.
  ExpectOneLineError(Qctl(Quantize(out, flags)), {work.string(), "--resume"});
  RunResult resumed = Qctl(Quantize(out, flags + " --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed"), std::string::npos) << resumed.out;
  EXPECT_FALSE(fs::exists(work));
  auto strip = [](nlohmann::json j) {
    std::function<void(nlohmann::json&)> drop = [&](nlohmann::json& x) {
      if (x.is_object()) {
        x.erase("seconds");
        for (auto& [k, v] : x.items()) drop(v);
      } else if (x.is_array()) {
        for (auto& v : x) drop(v);
      }
    };
    drop(j);
    return j;
  };
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp_ / "whole")) {
    const std::string name = e.path().filename().string();
    ++files;
    if (name == "report.json") {
      EXPECT_EQ(strip(nlohmann::json::parse(Slurp(e.path()))),
                strip(nlohmann::json::parse(Slurp(out / name))));
    } else {
      EXPECT_EQ(Slurp(e.path()), Slurp(out / name)) << name;
    }
  }
  EXPECT_GE(files, 5);
  EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator{}), files);
}


// Progress when stderr is not a terminal: one JSON object per event, every task once, GSQ's
// steps with their loss and ETAs; --progress none: silent.
TEST_F(QctlTest, QuantizeProgressAsJsonLines) {
  // GPTQ's start without the MSE scale search: half of each run's CPU, and not what is tested.
  const std::string job = "--method gsq --bits 2 --steps 10 --calib-tokens 2048 --no-mse --no-eval";
  RunResult r = Qctl(Quantize(tmp_ / "out", job));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.err);
  std::set<std::string> tasks;
  int steps = 0;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json e = nlohmann::json::parse(line);  // every line is one event
    for (const char* key : {"event", "phase", "task", "layer", "seconds", "eta_job_s",
                            "tasks_done", "tasks_total"}) {
      EXPECT_TRUE(e.contains(key)) << key << " in " << line;
    }
    if (e["event"] == "task") EXPECT_TRUE(tasks.insert(e["task"].get<std::string>()).second);
    if (e["event"] == "step") {
      ++steps;
      EXPECT_EQ(e["phase"], "gsq");
      EXPECT_GT(e["loss"].get<double>(), 0);
      EXPECT_LE(e["step"].get<int>(), e["steps"].get<int>());
      EXPECT_GE(e["eta_task_s"].get<double>(), 0);
    }
  }
  EXPECT_GE(steps, 4);  // at least the last step of each layer's GSQ
  EXPECT_TRUE(tasks.count("L3/gsq") && tasks.count("write")) << r.err;
  fs::remove_all(tmp_ / "out");
  RunResult quiet = Qctl(Quantize(tmp_ / "out", job + " --progress none"));
  ASSERT_EQ(quiet.exit_code, 0);
  EXPECT_EQ(quiet.err, "");
}

}  // namespace
