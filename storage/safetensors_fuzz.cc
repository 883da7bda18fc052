// Fuzz target for the safetensors header parser (outside input, DESIGN.md section 8): the bytes
// as a bare JSON header, and as a whole file image (8-byte length, header, data). Any accepted
// header must satisfy the invariants the readers rely on; any error must be one line.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/status.h"
#include "storage/safetensors.h"

namespace {

constexpr std::string_view kLabel = "fuzz.safetensors";

void CheckError(const absl::Status& status) {
  QUANT_CHECK(!status.ok());
  // absl::string_view here is Debian Abseil's own type, not std::string_view.
  const std::string message(status.message());
  QUANT_CHECK(message.compare(0, kLabel.size(), kLabel) == 0);
  QUANT_CHECK(message.find('\n') == std::string::npos);
}

void CheckHeader(const quant::storage::SafetensorsHeader& header, size_t header_bytes,
                 uint64_t file_size) {
  QUANT_CHECK(header.data_start == 8 + header_bytes);
  uint64_t prev_end = header.data_start;
  for (const quant::storage::TensorInfo& t : header.tensors) {
    QUANT_CHECK(!t.name.empty());
    QUANT_CHECK(t.begin >= prev_end);  // sorted and not overlapping
    QUANT_CHECK(t.begin <= t.end && t.end <= file_size);
    QUANT_CHECK(t.end - t.begin == static_cast<uint64_t>(quant::storage::NumElements(t.shape) *
                                                         quant::storage::DTypeSize(t.dtype)));
    prev_end = t.end;
  }
}

void ParseAsHeader(std::string_view header, uint64_t file_size) {
  absl::StatusOr<quant::storage::SafetensorsHeader> parsed =
      quant::storage::ParseSafetensorsHeader(header, file_size, kLabel);
  if (parsed.ok()) {
    CheckHeader(*parsed, header.size(), file_size);
  } else {
    CheckError(parsed.status());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // A bare header with data sections of 0, 64 bytes and 1 MiB, so offsets land on both sides of
  // the end of the data.
  for (uint64_t data_bytes : {uint64_t{0}, uint64_t{64}, uint64_t{1} << 20}) {
    ParseAsHeader(bytes, 8 + size + data_bytes);
  }
  // A file image: the same path SafetensorsFile::Open takes after its two preads.
  if (size >= 8) {
    uint8_t prefix[8];
    std::memcpy(prefix, data, 8);
    absl::StatusOr<uint64_t> header_bytes =
        quant::storage::ParseSafetensorsHeaderLength(prefix, size, kLabel);
    if (header_bytes.ok()) {
      QUANT_CHECK(8 + *header_bytes <= size);
      ParseAsHeader(bytes.substr(8, *header_bytes), size);
    } else {
      CheckError(header_bytes.status());
    }
  }
  return 0;
}
