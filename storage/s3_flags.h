// --s3-endpoint and --s3-region for the programs that read or write s3:// locations (qctl
// quantize and eval, quant-coordinator, quant-worker). What they leave empty, and the
// credentials, come from the standard AWS variables and files (never from a flag: a secret on a
// command line is visible to every user of the machine).
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "storage/object_store.h"

namespace quant::storage {

struct S3Flags {
  std::string endpoint;
  std::string region;

  void AddTo(CLI::App* app) {
    app->add_option("--s3-endpoint", endpoint,
                    "S3 endpoint for s3:// locations (default: AWS_ENDPOINT_URL_S3, "
                    "AWS_ENDPOINT_URL, else AWS)");
    app->add_option("--s3-region", region,
                    "S3 region (default: AWS_REGION, AWS_DEFAULT_REGION, the AWS config file, "
                    "else us-east-1)");
  }
  // Makes them the defaults of every s3:// location this process opens.
  void Apply() const {
    S3Config config;
    config.endpoint = endpoint;
    config.region = region;
    SetS3Defaults(config);
  }
};

}  // namespace quant::storage
