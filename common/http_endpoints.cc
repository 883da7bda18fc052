#include "common/http_endpoints.h"

#include <httplib.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"

namespace quant {

struct HttpEndpoints::Impl {
  httplib::Server server;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<HttpEndpoints>> HttpEndpoints::Start(
    const std::string& host, int port, std::function<void()> before_scrape) {
  std::unique_ptr<HttpEndpoints> h(new HttpEndpoints());
  h->impl_ = std::make_unique<Impl>();
  httplib::Server& http = h->impl_->server;
  http.Get("/metrics", [before_scrape](const httplib::Request&, httplib::Response& res) {
    if (before_scrape) before_scrape();
    metrics::Default()
        .GetGauge("quant_resident_memory_bytes", "Resident memory of the process.")
        .Set(static_cast<double>(metrics::ResidentBytes()));
    res.set_content(metrics::Default().Expose(), "text/plain; version=0.0.4");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  http.Get("/readyz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ready\n", "text/plain");
  });
  const int bound =
      port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on http ", host, ":", port));
  }
  h->port_ = bound;
  h->impl_->thread = std::thread([impl = h->impl_.get()] { impl->server.listen_after_bind(); });
  return h;
}

HttpEndpoints::~HttpEndpoints() {
  if (impl_ == nullptr) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace quant
