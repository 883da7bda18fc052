// Reads confined to directories: the file a descriptor holds is checked, so a symlink out of
// the roots (swapped in after a path check, or sitting inside a checked directory) is not read.
#include "common/confine.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/file.h"

namespace quant {
namespace {

namespace fs = std::filesystem;

class ConfineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("confine_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "root" / "model");
    fs::create_directories(dir_ / "outside");
    std::ofstream(dir_ / "root" / "model" / "inside.txt") << "inside";
    std::ofstream(dir_ / "outside" / "secret.txt") << "secret";
    fs::create_symlink(dir_ / "outside" / "secret.txt", dir_ / "root" / "model" / "escape.txt");
    fs::create_symlink("inside.txt", dir_ / "root" / "model" / "relative.txt");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& rel) const { return (dir_ / rel).string(); }
  fs::path dir_;
};

TEST_F(ConfineTest, WithoutRootsEverythingReadableIsRead) {
  EXPECT_EQ(*ReadWholeFile(P("root/model/escape.txt"), "text"), "secret");
  EXPECT_EQ(*ReadWholeFile(P("outside/secret.txt"), "text"), "secret");
}

TEST_F(ConfineTest, InsideTheRootsIsReadThroughSymlinksThatStayInside) {
  ScopedReadRoots confined({P("root")});
  EXPECT_EQ(*ReadWholeFile(P("root/model/inside.txt"), "text"), "inside");
  EXPECT_EQ(*ReadWholeFile(P("root/model/relative.txt"), "text"), "inside");
  EXPECT_EQ(*ReadWholeFile(P("root/model/../model/inside.txt"), "text"), "inside");
  EXPECT_TRUE(CheckFileReadable(P("root/model/inside.txt"), "text").ok());
}

TEST_F(ConfineTest, ASymlinkOutOfTheRootsIsNotRead) {
  ScopedReadRoots confined({P("root"), "s3://bucket/prefix"});
  for (const std::string& path : {P("root/model/escape.txt"), P("outside/secret.txt"),
                                  P("root/../outside/secret.txt")}) {
    absl::StatusOr<std::string> text = ReadWholeFile(path, "text");
    ASSERT_FALSE(text.ok()) << path;
    EXPECT_EQ(text.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(text.status().message(),
              path + ": opens a file outside the allowed roots; it is not read");
    EXPECT_EQ(CheckFileReadable(path, "text").code(), absl::StatusCode::kPermissionDenied);
  }
}

// The check is on the opened file, not on a path checked earlier: a path that was inside when
// checked and is a symlink out of the roots when opened is refused.
TEST_F(ConfineTest, APathSwappedAfterItsCheckIsRefusedAtTheOpen) {
  ScopedReadRoots confined({P("root")});
  const std::string path = P("root/model/tokenizer.json");
  std::ofstream(path) << "{}";
  ASSERT_TRUE(CheckFileReadable(path, "tokenizer").ok());
  fs::remove(path);
  fs::create_symlink(dir_ / "outside" / "secret.txt", path);
  EXPECT_EQ(ReadWholeFile(path, "tokenizer").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(ConfineTest, ScopesNestAndEnd) {
  {
    ScopedReadRoots outer({P("outside")});
    EXPECT_TRUE(ReadWholeFile(P("outside/secret.txt"), "text").ok());
    {
      ScopedReadRoots inner({P("root")});
      EXPECT_FALSE(ReadWholeFile(P("outside/secret.txt"), "text").ok());
    }
    EXPECT_TRUE(ReadWholeFile(P("outside/secret.txt"), "text").ok());
    EXPECT_FALSE(ReadWholeFile(P("root/model/inside.txt"), "text").ok());
  }
  EXPECT_TRUE(ReadWholeFile(P("root/model/inside.txt"), "text").ok());
}

// A FIFO outside the roots is refused without hanging the open (no writer ever comes).
TEST_F(ConfineTest, AFifoOutsideTheRootsDoesNotHang) {
  ASSERT_EQ(::mkfifo(P("outside/fifo").c_str(), 0600), 0);
  fs::create_symlink(dir_ / "outside" / "fifo", dir_ / "root" / "fifo");
  ScopedReadRoots confined({P("root")});
  EXPECT_EQ(OpenInputFile(P("root/fifo"), "text").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(ConfineTest, DirectoriesAndDevicesAreNotInputs) {
  EXPECT_EQ(OpenInputFile(P("root/model"), "calibration file").status().message(),
            P("root/model") + ": is a directory; the calibration file must be a file");
  EXPECT_EQ(OpenInputFile("/dev/null", "text").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quant
