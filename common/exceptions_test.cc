// CurrentExceptionStatus: each kind of exception becomes one line naming where it happened.
#include "common/exceptions.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace quant {
namespace {

void* volatile g_sink = nullptr;

absl::Status StatusOf(void (*thrower)()) {
  try {
    thrower();
  } catch (...) {
    return CurrentExceptionStatus("Submit");
  }
  return absl::OkStatus();
}

TEST(CurrentExceptionStatusTest, BadAllocIsResourceExhausted) {
  const absl::Status s = StatusOf([] { throw std::bad_alloc(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "Submit: out of memory (std::bad_alloc)");
}

TEST(CurrentExceptionStatusTest, ArrayNewOfAnAbsurdSizeIsCaughtAsOutOfMemory) {
  const absl::Status s = StatusOf([] {
    volatile size_t n = size_t{1} << 62;  // more than any machine has: operator new throws
    std::vector<char> v(n);
    g_sink = v.data();  // keeps the allocation from being optimized away
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
}

TEST(CurrentExceptionStatusTest, OtherExceptionsKeepTheFirstLineOfWhat) {
  const absl::Status s =
      StatusOf([] { throw std::runtime_error("tensor too big\nException raised from ..."); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "Submit: tensor too big");
  const absl::Status odd = StatusOf([] { throw 7; });
  EXPECT_EQ(odd.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(odd.message(), "Submit: unknown exception");
}

}  // namespace
}  // namespace quant
