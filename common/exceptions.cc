// CurrentExceptionStatus: rethrows the exception in hand to tell its kind.
#include "common/exceptions.h"

#include <exception>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace quant {

absl::Status CurrentExceptionStatus(std::string_view where_view) {
  const absl::string_view where(where_view.data(), where_view.size());
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": out of memory (std::bad_alloc)"));
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return absl::InternalError(absl::StrCat(where, ": ", what));
  } catch (...) {
    return absl::InternalError(absl::StrCat(where, ": unknown exception"));
  }
}

}  // namespace quant
