// Debian's prometheus for tests: started on loopback scraping the given targets every second,
// and instant queries through its HTTP API.
#pragma once

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/service/service_test_util.h"
#include "nlohmann/json.hpp"
#include "tests/free_port.h"

namespace quant::testing {

// The value of an instant query's first sample, or -1.
inline double PromQuery(int port, const std::string& promql) {
  httplib::Client http("127.0.0.1", port);
  auto res = http.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
  if (!res || res->status != 200) return -1;
  const auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_discarded() || j["data"]["result"].empty()) return -1;
  return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
}

// prometheus scraping `http_ports` on 127.0.0.1 every second, its data and log under `dir`.
class Prometheus {
 public:
  Prometheus(const std::filesystem::path& dir, const std::vector<int>& http_ports)
      : port_(FreePort()) {
    std::ofstream config(dir / "prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
           << "scrape_configs:\n  - job_name: quant\n    static_configs:\n      - targets: [";
    for (size_t i = 0; i < http_ports.size(); ++i) {
      config << (i ? ", " : "") << "'127.0.0.1:" << http_ports[i] << "'";
    }
    config << "]\n";
    config.close();
    std::vector<std::string> ignored;
    pid_ = Spawn({"/usr/bin/prometheus", "--config.file=" + (dir / "prometheus.yml").string(),
                  "--storage.tsdb.path=" + (dir / "tsdb").string(),
                  "--web.listen-address=127.0.0.1:" + std::to_string(port_)},
                 0, &ignored, (dir / "prometheus.log").string());
  }
  ~Prometheus() { KillNine(&pid_); }
  // Waits (up to a minute) until every target is scraped; false if they never are.
  bool WaitForTargets(int targets) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (Query("count(up == 1)") < targets && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return Query("count(up == 1)") == targets;
  }
  double Query(const std::string& promql) const { return PromQuery(port_, promql); }
  int port() const { return port_; }

 private:
  int port_;
  pid_t pid_ = -1;
};

}  // namespace quant::testing
