// Debian's Abseil is built with ABSL_OPTION_USE_STD_STRING_VIEW 0, so absl::string_view is its
// own type and absl::StrCat / hash-map lookups do not take std::string_view: bridge here.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace quant::tokenizer {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace quant::tokenizer
