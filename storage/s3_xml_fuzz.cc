// libFuzzer target: S3 XML answers (ListObjectsV2, CreateMultipartUpload, errors) through the
// value extractor the client reads them with. It must not crash or read out of bounds on any
// input, and every value it returns lies inside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "storage/s3_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view xml(reinterpret_cast<const char*>(data), size);
  for (const char* tag : {"Key", "UploadId", "ETag", "Code", "IsTruncated",
                          "NextContinuationToken"}) {
    for (const std::string& v : quant::storage::XmlValues(xml, tag)) {
      if (v.size() > size || xml.find(v) == std::string_view::npos) std::abort();
    }
  }
  return 0;
}
