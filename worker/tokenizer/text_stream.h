// A text file encoded a chunk at a time, cut only where Tokenizer::LastCut allows, so that the
// ids are those of the whole text encoded at once while memory follows the tokens asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace quant::tokenizer {

struct TextStreamOptions {
  // Bytes read per step. Encode holds about 13 bytes of matches, segments, pieces and ids per
  // text byte while it runs (200 MB encoded whole peaked at 2.7 GB, measured with
  // tokenizer_bench), so 1 MiB keeps a step near 15 MiB; a cut costs one backward scan to the
  // last line start, so small steps barely slow it down.
  size_t chunk_bytes = size_t{1} << 20;
  // Text held without a place to cut before giving up (a file with no line starts, or a
  // tokenizer that offers no cuts): past this the text cannot be encoded in bounded memory.
  size_t max_uncut_bytes = size_t{64} << 20;
};

struct EncodedText {
  std::vector<int32_t> ids;  // the first `max_tokens` ids of the text (all, when it has fewer)
  int64_t bytes_read = 0;    // bytes of the file read to get them
  bool whole_file = false;   // the file was read to its end
};

// Encode(text of `path`, add_special_tokens=false), stopping once `max_tokens` ids are there
// (max_tokens < 0: the whole file). Bytes that are not UTF-8 are replaced as Encode does.
// Errors name the file and `what` ("calibration file"), as ReadWholeFile's do: NotFound when it
// cannot be opened, DataLoss on a read error, InvalidArgument when it is empty or holds more
// than options.max_uncut_bytes without a place to cut.
absl::StatusOr<EncodedText> EncodeFile(const Tokenizer& tokenizer, const std::string& path,
                                       const std::string& what, int64_t max_tokens,
                                       const TextStreamOptions& options = {});

}  // namespace quant::tokenizer
