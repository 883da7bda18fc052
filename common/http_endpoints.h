// The HTTP side of every service process: /metrics (Prometheus text exposition of the default
// registry, with the process's resident memory), /healthz and /readyz, served on a thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace quant {

class HttpEndpoints {
 public:
  // Binds host:port (port 0: any free one) and starts serving; the bound port is port().
  // `before_scrape` (optional) refreshes gauges just before each /metrics answer.
  static absl::StatusOr<std::unique_ptr<HttpEndpoints>> Start(
      const std::string& host, int port, std::function<void()> before_scrape = nullptr);
  ~HttpEndpoints();
  int port() const { return port_; }

 private:
  HttpEndpoints() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace quant
