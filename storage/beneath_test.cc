// OpenDirBeneath and ResolvesInside against real directories and symlinks in a temporary tree.
#include "storage/beneath.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace quant::storage {
namespace {

namespace fs = std::filesystem;

class BeneathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() / ("beneath_test_" + std::to_string(::getpid()));
    fs::remove_all(tmp_);
    fs::create_directories(tmp_ / "root" / "a");
    fs::create_directories(tmp_ / "outside");
    root_ = (tmp_ / "root").string();
  }
  void TearDown() override { fs::remove_all(tmp_); }
  fs::path tmp_;
  std::string root_;
};

TEST_F(BeneathTest, CreatesMissingDirectoriesAndWritesThroughThePin) {
  auto dir = OpenDirBeneath({root_}, root_ + "/a/b/c", /*create=*/true);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(fs::is_directory(tmp_ / "root" / "a" / "b" / "c"));
  // The path swapped for a symlink afterwards: writes through the pin stay where they were.
  fs::rename(tmp_ / "root" / "a" / "b", tmp_ / "root" / "a" / "b.moved");
  fs::create_directory_symlink(tmp_ / "outside", tmp_ / "root" / "a" / "b");
  std::ofstream((*dir)->path() + "/file") << "x";
  EXPECT_TRUE(fs::exists(tmp_ / "root" / "a" / "b.moved" / "c" / "file"));
  EXPECT_TRUE(fs::is_empty(tmp_ / "outside"));
}

TEST_F(BeneathTest, RefusesSymlinksAndDotsThatLeaveTheRoot) {
  fs::create_directory_symlink(tmp_ / "outside", tmp_ / "root" / "abs");     // absolute
  fs::create_directory_symlink("../../outside", tmp_ / "root" / "a" / "up");  // climbs out
  for (const std::string& dir : {root_ + "/abs/x", root_ + "/a/up/x", root_ + "/a/../../outside"}) {
    auto pinned = OpenDirBeneath({root_}, dir, /*create=*/true);
    EXPECT_FALSE(pinned.ok()) << dir;
  }
  EXPECT_TRUE(fs::is_empty(tmp_ / "outside"));
  EXPECT_FALSE(OpenDirBeneath({root_}, (tmp_ / "outside").string(), false).ok());
  EXPECT_FALSE(OpenDirBeneath({root_}, "relative/path", false).ok());
}

TEST_F(BeneathTest, FollowsSymlinksThatStayInside) {
  fs::create_directory_symlink("a", tmp_ / "root" / "alias");
  auto pinned = OpenDirBeneath({root_}, root_ + "/alias/new", /*create=*/true);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_TRUE(fs::is_directory(tmp_ / "root" / "a" / "new"));
}

TEST_F(BeneathTest, ResolvesInside) {
  fs::create_directory_symlink(tmp_ / "outside", tmp_ / "root" / "abs");
  EXPECT_TRUE(ResolvesInside(root_ + "/a/not-yet", {root_}));
  EXPECT_FALSE(ResolvesInside(root_ + "/abs/x", {root_}));
  EXPECT_FALSE(ResolvesInside(root_ + "/../outside", {root_}));
  EXPECT_TRUE(ResolvesInside("s3://b/p/x", {"s3://b/p/"}));
  EXPECT_FALSE(ResolvesInside("s3://b/px", {"s3://b/p"}));
  EXPECT_FALSE(ResolvesInside("s3://b/p/../q", {"s3://b/p"}));
}

}  // namespace
}  // namespace quant::storage
