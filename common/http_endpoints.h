// The HTTP side of every service process: /metrics (Prometheus text exposition of the default
// registry, with the process's resident memory), /healthz and /readyz, served on a thread.
// Slow or idle clients cannot hold it: each connection has deadlines and a size cap (HttpLimits).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace quant {

// What one client may cost the server. The defaults suit Kubernetes probes (kubelet gives a
// probe 1 s by default) and Prometheus (one request per write, keep-alive between scrapes).
struct HttpLimits {
  // From accept, or from the first byte of a later request on a kept-alive connection, to the
  // blank line that ends the request headers. Probes and scrapers send their few hundred bytes in
  // one segment; 2 s is generous for them and bounds what a byte-trickling client holds.
  int header_deadline_ms = 2000;
  // A kept-alive connection with no request in flight: cpp-httplib's default (5 s), which we
  // served before, so Prometheus' reuse of its connection is unchanged.
  int idle_timeout_ms = 5000;
  // To send one whole response (a /metrics body is tens of KiB) to a client that reads slowly.
  int write_deadline_ms = 5000;
  // Request line plus headers: cpp-httplib's and nginx's default header buffer (8 KiB).
  size_t max_header_bytes = 8192;
  // Open connections; a new one past this evicts the reading connection nearest its deadline,
  // so a flood of slow clients cannot keep a probe out. Well below the usual 1024 fd soft limit,
  // which the process shares with gRPC.
  int max_connections = 256;
};

class HttpEndpoints {
 public:
  // Binds host:port (port 0: any free one) and starts serving; the bound port is port().
  // `before_scrape` (optional) refreshes gauges just before each /metrics answer; it runs on a
  // thread of its own, so a slow one delays only /metrics, never /healthz or /readyz.
  static absl::StatusOr<std::unique_ptr<HttpEndpoints>> Start(
      const std::string& host, int port, std::function<void()> before_scrape = nullptr,
      const HttpLimits& limits = HttpLimits());
  // Stops serving and closes every connection; returns once both threads have exited.
  ~HttpEndpoints();
  int port() const { return port_; }

 private:
  HttpEndpoints() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace quant
