// The free-space preflight through a fake statvfs (a full filesystem cannot be made without
// privileges): the nearest existing ancestor is asked, needs on one filesystem add up, and the
// error names the path, the free and the needed bytes. Plus the real statvfs on /tmp.
#include "storage/free_space.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <map>
#include <string>

namespace quant::storage {
namespace {

// Two filesystems: /big (fsid 1) and /small (fsid 2); anything else does not exist.
struct FakeFs {
  std::map<std::string, std::pair<uint64_t, uint64_t>> mounts;  // path -> {fsid, free bytes}
  std::vector<std::string> asked;
  StatvfsFn Fn() {
    return [this](const char* path, struct statvfs* out) {
      asked.emplace_back(path);
      auto it = mounts.find(path);
      if (it == mounts.end()) {
        errno = ENOENT;
        return -1;
      }
      *out = {};
      out->f_frsize = 4096;
      out->f_bavail = it->second.second / 4096;
      out->f_fsid = it->second.first;
      return 0;
    };
  }
};

TEST(FreeSpace, AskedAtTheNearestExistingAncestor) {
  FakeFs fs;
  fs.mounts["/small"] = {2, 40960};
  absl::StatusOr<FreeSpace> f = FreeSpaceAt("/small/a/b/../c/out", fs.Fn());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->checked_path, "/small");
  EXPECT_EQ(f->free_bytes, 40960u);
  EXPECT_EQ(fs.asked.front(), "/small/a/c/out");
}

TEST(FreeSpace, TooSmallIsOneLineNamingPathFreeAndNeeded) {
  FakeFs fs;
  fs.mounts["/small"] = {2, 4096 * 10};
  fs.mounts["/"] = {1, 1ull << 40};
  const absl::Status s =
      CheckFreeSpace({{"/small/out", 30000, "the checkpoint"},
                      {"/small/out.qctl-work", 20000, "the work directory"}},
                     fs.Fn());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  const std::string m(s.message());
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_EQ(m.rfind("/small/out: not enough free disk space: 40960 bytes free", 0), 0u) << m;
  EXPECT_NE(m.find("needs about 50000 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("the checkpoint 30000 bytes + the work directory 20000 bytes"),
            std::string::npos) << m;
  // Each alone fits: the sum on one filesystem is what fails.
  EXPECT_TRUE(CheckFreeSpace({{"/small/out", 30000, "x"}}, fs.Fn()).ok());
  // On two filesystems they do not add up.
  EXPECT_TRUE(CheckFreeSpace({{"/small/out", 30000, "x"}, {"/work", 30000, "y"}}, fs.Fn()).ok());
  // A zero need is skipped (nothing asked).
  fs.asked.clear();
  EXPECT_TRUE(CheckFreeSpace({{"/nowhere", 0, "z"}}, FakeFs().Fn()).ok());
}

TEST(FreeSpace, AnUnreadableFilesystemIsAnError) {
  const StatvfsFn denied = [](const char*, struct statvfs*) {
    errno = EACCES;
    return -1;
  };
  const absl::Status s = CheckFreeSpace({{"/x/out", 1, "the checkpoint"}}, denied);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/x/out: cannot read its free space"), std::string::npos) << s;
}

TEST(FreeSpace, TheRealStatvfs) {
  absl::StatusOr<FreeSpace> f = FreeSpaceAt("/tmp/does-not-exist-yet/a/b");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->checked_path, "/tmp");
  EXPECT_GT(f->free_bytes, 0u);
  EXPECT_TRUE(CheckFreeSpace({{"/tmp/x", 1, "one byte"}}).ok());
  EXPECT_EQ(CheckFreeSpace({{"/tmp/x", ~0ull, "everything"}}).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(FreeSpace, HumanBytes) {
  EXPECT_EQ(HumanBytes(512), "512 bytes");
  EXPECT_EQ(HumanBytes(1234567), "1.2 MB (1234567 bytes)");
  EXPECT_EQ(HumanBytes(4070000000ull), "4.07 GB (4070000000 bytes)");
}

}  // namespace
}  // namespace quant::storage
