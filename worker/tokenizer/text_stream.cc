// EncodeFile: read a chunk, encode up to the last place to cut, keep the rest for the next one.
#include "worker/tokenizer/text_stream.h"

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/confine.h"
#include "common/status.h"

namespace quant::tokenizer {

absl::StatusOr<EncodedText> EncodeFile(const Tokenizer& tokenizer, const std::string& path,
                                       const std::string& what, int64_t max_tokens,
                                       const TextStreamOptions& options) {
  ASSIGN_OR_RETURN(UniqueFile file, OpenInputFile(path, what));
  const size_t chunk_bytes = options.chunk_bytes > 0 ? options.chunk_bytes : 1;
  EncodedText out;
  std::string pending;  // read and not yet encoded; starts at a place to cut
  auto enough = [&] {
    return max_tokens >= 0 && out.ids.size() >= static_cast<size_t>(max_tokens);
  };
  while (!enough()) {
    const size_t old_size = pending.size();
    pending.resize(old_size + chunk_bytes);
    const size_t n = std::fread(pending.data() + old_size, 1, chunk_bytes, file.get());
    pending.resize(old_size + n);
    out.bytes_read += static_cast<int64_t>(n);
    if (n < chunk_bytes) {
      // fread falls short only at the end of the file or on an error.
      if (std::ferror(file.get()) != 0) {
        return absl::DataLossError(absl::StrCat(path, ": read error in ", what));
      }
      if (out.bytes_read == 0) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": empty ", what));
      }
      const std::vector<int32_t> ids = tokenizer.Encode(pending, /*add_special_tokens=*/false);
      out.ids.insert(out.ids.end(), ids.begin(), ids.end());
      out.whole_file = true;
      break;
    }
    // A cut needs the '\n' before it and the whole character at it, so the places this chunk
    // can make new start at most 4 bytes (a '\n' and a character cut short by the last
    // read) before it; text before them was searched already.
    const size_t from = old_size >= 4 ? old_size - 4 : 0;
    const size_t cut = tokenizer.LastCut(std::string_view(pending).substr(from));
    if (cut == 0) {
      if (pending.size() > options.max_uncut_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": the ", what, " has no place to cut in the ", pending.size(),
            " bytes from byte ", out.bytes_read - static_cast<int64_t>(pending.size()),
            " (a line start that this tokenizer's pieces never cross), so it cannot be "
            "encoded a piece at a time; the limit is ",
            options.max_uncut_bytes, " bytes"));
      }
      continue;
    }
    const std::vector<int32_t> ids =
        tokenizer.Encode(std::string_view(pending).substr(0, from + cut),
                         /*add_special_tokens=*/false);
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    pending.erase(0, from + cut);
  }
  if (enough()) out.ids.resize(static_cast<size_t>(max_tokens));
  return out;
}

}  // namespace quant::tokenizer
