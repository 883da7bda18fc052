// The last line of defence at process and RPC boundaries: an exception (std::bad_alloc above
// all) turned into the one-line status the project reports bad input with, instead of an abort
// (qctl, rc 134) or gRPC's "Unexpected error in RPC handling".
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace quant {

// The exception being handled, as a status: std::bad_alloc is ResourceExhausted
// "<where>: out of memory (std::bad_alloc)"; another std::exception is Internal
// "<where>: <first line of what()>" (libtorch appends a backtrace on further lines); anything
// else is Internal "<where>: unknown exception". Precondition: called inside a catch block.
absl::Status CurrentExceptionStatus(std::string_view where);

}  // namespace quant
