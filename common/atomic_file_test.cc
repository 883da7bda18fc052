// The one rule for whole-file writes, and the one SHA-256.
#include "common/atomic_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/sha256.h"

namespace quant {
namespace {

namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("atomic_file_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string Read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  int Entries() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }
  fs::path dir_;
};

TEST_F(AtomicFileTest, WritesTheBytesAndLeavesNoTemporary) {
  const std::string path = (dir_ / "report.json").string();
  ASSERT_TRUE(WriteFileAtomically(path, "{\"a\": 1}\n").ok());
  EXPECT_EQ(Read(path), "{\"a\": 1}\n");
  EXPECT_EQ(Entries(), 1);
}

// Until the commit, the name holds the old bytes; a writer that never commits leaves the old
// file and no temporary.
TEST_F(AtomicFileTest, TheNameHoldsOldOrNewBytesNeverAPart) {
  const std::string path = (dir_ / "state.safetensors").string();
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  {
    auto file = AtomicFile::Create(path);
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->Write("new, half").ok());
    EXPECT_EQ(Read(path), "old");
    EXPECT_EQ(Entries(), 2);  // the name and the temporary
  }
  EXPECT_EQ(Read(path), "old");
  EXPECT_EQ(Entries(), 1);
  auto file = AtomicFile::Create(path);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Write("new, whole").ok());
  EXPECT_EQ((*file)->bytes(), 10u);
  ASSERT_TRUE((*file)->Commit().ok());
  EXPECT_EQ(Read(path), "new, whole");
  EXPECT_EQ(Entries(), 1);
}

TEST_F(AtomicFileTest, AMissingDirectoryIsOneLineNamingThePath) {
  const std::string path = (dir_ / "no" / "such" / "x.json").string();
  absl::Status s = WriteFileAtomically(path, "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message().substr(0, path.size() + 15), path + ": cannot create");
}

TEST_F(AtomicFileTest, RenameDurablyMovesDirectoriesAndFiles) {
  fs::create_directories(dir_ / "attempts" / "L1-gsq.e3");
  std::ofstream(dir_ / "attempts" / "L1-gsq.e3" / "units.json") << "{}";
  ASSERT_TRUE(RenameDurably((dir_ / "attempts" / "L1-gsq.e3").string(),
                            (dir_ / "L1-gsq").string()).ok());
  EXPECT_EQ(Read(dir_ / "L1-gsq" / "units.json"), "{}");
  EXPECT_FALSE(fs::exists(dir_ / "attempts" / "L1-gsq.e3"));
  absl::Status s = RenameDurably((dir_ / "gone").string(), (dir_ / "x").string());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot rename"), absl::string_view::npos);
}

TEST(Sha256Test, KnownVectorsAndPiecesEqualTheWhole) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 sha;
  sha.Update("a");
  sha.Update("bc");
  EXPECT_EQ(sha.HexDigest(), Sha256Hex("abc"));
}

}  // namespace
}  // namespace quant
