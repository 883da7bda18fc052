// HttpEndpoints under slow clients, with plain sockets on 127.0.0.1: /healthz answers within a
// second while 64 slow connections (more than the 8 threads cpp-httplib served with; half of them
// trickle header bytes, half send nothing) are open, each is closed at its header deadline, a full
// connection table evicts them rather than keep a probe out, an idle kept-alive connection is
// closed at the idle timeout, and a slow /metrics scrape does not hold /healthz. Then the routes.
#include "common/http_endpoints.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace quant {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// Kubelet's default probe timeout; what /healthz must always beat.
constexpr milliseconds kProbeLimit(1000);
// Slack on a deadline for scheduling on a shared 2-core machine, and for SlowClients' polling.
constexpr milliseconds kSlack(1000);

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads until the server closes the connection (then *closed), `until` is in the text, or
// `deadline` passes.
std::string Read(int fd, Clock::time_point deadline, bool* closed, absl::string_view until = "") {
  std::string text;
  *closed = false;
  while (until.empty() || !absl::StrContains(text, until)) {
    const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // FIN, or RST (ECONNRESET)
      *closed = true;
      break;
    }
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

struct Answer {
  std::string text;
  bool closed = false;  // the server ended the connection after answering
  microseconds took{0};
};

// Sends `request` on a fresh connection and reads the answer for at most `limit`.
Answer Fetch(int port, absl::string_view request, milliseconds limit = kProbeLimit) {
  Answer a;
  const Clock::time_point start = Clock::now();
  const int fd = Connect(port);
  if (fd < 0) return a;
  if (SendAll(fd, request)) a.text = Read(fd, start + limit, &a.closed);
  a.took = std::chrono::duration_cast<microseconds>(Clock::now() - start);
  close(fd);
  return a;
}

std::string Get(absl::string_view path) {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
}

// Slowloris clients on one thread: `trickling` of them send one header byte every `interval` and
// never end their request head, `silent` ones send nothing. A connection the server closes is
// timed and replaced by a new one, at most `reconnects_per_round` of them per `interval`, so the
// load stays on until Stop() (or `kMaxRun`).
class SlowClients {
 public:
  SlowClients(int port, int trickling, int silent, milliseconds interval,
              int reconnects_per_round = INT_MAX)
      : port_(port), interval_(interval), reconnects_per_round_(reconnects_per_round) {
    for (int i = 0; i < trickling + silent; ++i) clients_.push_back(Open(i < trickling));
    thread_ = std::thread([this] { Run(); });
  }
  ~SlowClients() { Stop(); }

  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    for (const Client& c : clients_) {
      if (c.fd >= 0) close(c.fd);
    }
    clients_.clear();
  }
  // How long each connection the server closed had been open (connect to seeing the close).
  std::vector<milliseconds> lifetimes() {
    std::lock_guard<std::mutex> lock(mu_);
    return lifetimes_;
  }
  int connect_failures() const { return connect_failures_.load(); }

 private:
  // Never finished: no empty line ever comes.
  static constexpr absl::string_view kHead = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  // Bounds the thread even if a test forgets Stop().
  static constexpr milliseconds kMaxRun{30000};

  struct Client {
    int fd;
    bool trickle;
    Clock::time_point opened;
    size_t sent_bytes;
  };

  // The clock starts before connect(), so no lifetime can come out shorter than the server's
  // count from accept (the thread may be preempted right after connect returns).
  Client Open(bool trickle) {
    const Clock::time_point opened = Clock::now();
    return {Connect(port_), trickle, opened, 0};
  }

  void Run() {
    const Clock::time_point end = Clock::now() + kMaxRun;
    while (!stop_.load() && Clock::now() < end) {
      int reconnects = 0;
      for (Client& c : clients_) {
        bool closed = c.fd < 0;
        if (!closed && c.trickle) {
          const char byte = c.sent_bytes < kHead.size() ? kHead[c.sent_bytes] : 'a';
          if (send(c.fd, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
            ++c.sent_bytes;
          } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            closed = true;
          }
        }
        if (!closed) {
          char buf[256];
          const ssize_t n = recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
          closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        }
        if (!closed) continue;
        if (c.fd >= 0) {
          std::lock_guard<std::mutex> lock(mu_);
          lifetimes_.push_back(std::chrono::duration_cast<milliseconds>(Clock::now() - c.opened));
          close(c.fd);
          c.fd = -1;
        }
        if (reconnects++ >= reconnects_per_round_) continue;
        c = Open(c.trickle);
        if (c.fd < 0) connect_failures_.fetch_add(1);
      }
      std::this_thread::sleep_for(interval_);
    }
  }

  const int port_;
  const milliseconds interval_;
  const int reconnects_per_round_;
  std::vector<Client> clients_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connect_failures_{0};
  std::mutex mu_;
  std::vector<milliseconds> lifetimes_;
};

// Probes /healthz every 100 ms for `duration`; each must answer 200 "ok" within kProbeLimit.
// Returns the slowest answer.
microseconds ProbeHealthz(int port, milliseconds duration, int* probes) {
  microseconds worst{0};
  const Clock::time_point end = Clock::now() + duration;
  for (*probes = 0; Clock::now() < end; ++*probes) {
    const Answer a = Fetch(port, Get("/healthz"));
    EXPECT_LT(a.took, kProbeLimit) << "probe " << *probes << (a.closed ? " closed" : "");
    EXPECT_TRUE(absl::StartsWith(a.text, "HTTP/1.1 200 OK\r\n")) << a.text;
    EXPECT_TRUE(absl::EndsWith(a.text, "\r\n\r\nok\n")) << a.text;
    worst = std::max(worst, a.took);
    std::this_thread::sleep_for(milliseconds(100));
  }
  return worst;
}

// 64: eight times the 8 threads of the cpp-httplib server these endpoints had, which eight slow
// connections were enough to block.
constexpr int kTrickling = 32;
constexpr int kSilent = 32;

TEST(HttpEndpoints, HealthzAnswersWithinASecondUnderMoreSlowConnectionsThanThreads) {
  auto http = HttpEndpoints::Start("127.0.0.1", 0);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  const HttpLimits limits;
  SlowClients slow(port, kTrickling, kSilent, milliseconds(50));
  std::this_thread::sleep_for(milliseconds(200));  // all 64 accepted, tricklers under way
  // Past the first header deadline, so through the server closing them and their reconnecting.
  int probes = 0;
  const microseconds worst =
      ProbeHealthz(port, milliseconds(limits.header_deadline_ms + 500), &probes);
  slow.Stop();
  std::printf("%d probes of /healthz beside %d slow connections: slowest %.2f ms\n", probes,
              kTrickling + kSilent, worst.count() / 1e3);
  EXPECT_GE(probes, 10);
  EXPECT_EQ(slow.connect_failures(), 0);
  // Every slow connection was closed by the server at its header deadline (counted from accept,
  // which follows the client's connect), none early: the table had room for all 64.
  const std::vector<milliseconds> lifetimes = slow.lifetimes();
  EXPECT_GE(lifetimes.size(), static_cast<size_t>(kTrickling + kSilent));
  for (const milliseconds l : lifetimes) {
    EXPECT_GE(l, milliseconds(limits.header_deadline_ms));
    EXPECT_LE(l, milliseconds(limits.header_deadline_ms) + kSlack);
  }
  if (!lifetimes.empty()) {
    std::printf(
        "slow connections closed after %lld to %lld ms (header deadline %d ms)\n",
        static_cast<long long>(std::min_element(lifetimes.begin(), lifetimes.end())->count()),
        static_cast<long long>(std::max_element(lifetimes.begin(), lifetimes.end())->count()),
        limits.header_deadline_ms);
  }
}

TEST(HttpEndpoints, AFullConnectionTableEvictsSlowConnectionsNotTheProbe) {
  HttpLimits limits;
  limits.max_connections = 16;  // a quarter of the slow connections
  auto http = HttpEndpoints::Start("127.0.0.1", 0, nullptr, limits);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  // Evicted ones come back, one per round: the table stays full of slow connections. (A flood
  // of more than max_connections new ones between a probe's connect and its request's arrival
  // could evict the probe too; a bounded table cannot avoid that, and a slowloris needs no flood.)
  SlowClients slow(port, kTrickling, kSilent, milliseconds(50), /*reconnects_per_round=*/1);
  std::this_thread::sleep_for(milliseconds(200));
  int probes = 0;
  const microseconds worst = ProbeHealthz(port, milliseconds(1000), &probes);
  slow.Stop();
  std::printf("%d probes beside %d slow connections, table of %d: slowest %.2f ms\n", probes,
              kTrickling + kSilent, limits.max_connections, worst.count() / 1e3);
  // At least the 48 that did not fit were evicted long before their header deadline.
  const std::vector<milliseconds> lifetimes = slow.lifetimes();
  const auto evicted = std::count_if(lifetimes.begin(), lifetimes.end(), [&](milliseconds l) {
    return l < milliseconds(limits.header_deadline_ms);
  });
  EXPECT_GE(evicted, kTrickling + kSilent - limits.max_connections);
}

TEST(HttpEndpoints, KeptAliveConnectionAnswersPipelinedRequestsThenClosesWhenIdle) {
  HttpLimits limits;
  limits.idle_timeout_ms = 300;
  auto http = HttpEndpoints::Start("127.0.0.1", 0, nullptr, limits);
  ASSERT_TRUE(http.ok()) << http.status();
  const int fd = Connect((*http)->port());
  ASSERT_GE(fd, 0);
  // The server's idle clock starts once it has sent the answers: after this, before we read them.
  const Clock::time_point sent = Clock::now();
  ASSERT_TRUE(SendAll(fd,
                      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                      "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  bool closed = false;
  const std::string both = Read(fd, sent + kProbeLimit, &closed, "ready\n");
  EXPECT_FALSE(closed);
  const size_t ok = both.find("\r\n\r\nok\n"), ready = both.find("\r\n\r\nready\n");
  EXPECT_NE(ok, std::string::npos) << both;
  EXPECT_NE(ready, std::string::npos) << both;
  EXPECT_LT(ok, ready) << both;
  EXPECT_TRUE(absl::StrContains(both, "Connection: keep-alive\r\n")) << both;
  // Then nothing more: the server closes it once it has been idle for idle_timeout_ms.
  const std::string rest =
      Read(fd, Clock::now() + milliseconds(limits.idle_timeout_ms) + kSlack, &closed);
  const auto open = std::chrono::duration_cast<milliseconds>(Clock::now() - sent);
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_EQ(rest, "");
  EXPECT_GE(open, milliseconds(limits.idle_timeout_ms));
  EXPECT_LE(open, milliseconds(limits.idle_timeout_ms) + kSlack);
}

TEST(HttpEndpoints, SlowScrapeDoesNotHoldHealthz) {
  std::atomic<int> scrapes{0};
  auto http = HttpEndpoints::Start("127.0.0.1", 0, [&scrapes] {
    std::this_thread::sleep_for(milliseconds(1500));  // a SQLite query waiting on a lock, say
    scrapes.fetch_add(1);
  });
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  Answer metrics;
  std::thread scraper([&] { metrics = Fetch(port, Get("/metrics"), milliseconds(5000)); });
  std::this_thread::sleep_for(milliseconds(100));  // the scrape has started
  const Answer health = Fetch(port, Get("/healthz"));
  EXPECT_LT(health.took, kProbeLimit);
  EXPECT_TRUE(absl::EndsWith(health.text, "\r\n\r\nok\n")) << health.text;
  scraper.join();
  EXPECT_EQ(scrapes.load(), 1);
  EXPECT_GE(metrics.took, milliseconds(1500));
  EXPECT_TRUE(absl::StartsWith(metrics.text, "HTTP/1.1 200 OK\r\n")) << metrics.text;
  EXPECT_TRUE(absl::StrContains(metrics.text, "Content-Type: text/plain; version=0.0.4\r\n"));
  EXPECT_TRUE(absl::StrContains(metrics.text, "\nquant_resident_memory_bytes ")) << metrics.text;
}

TEST(HttpEndpoints, Routes) {
  auto http = HttpEndpoints::Start("127.0.0.1", 0);
  ASSERT_TRUE(http.ok()) << http.status();
  const int port = (*http)->port();
  const Answer ready = Fetch(port, Get("/readyz"));
  EXPECT_TRUE(absl::StartsWith(ready.text, "HTTP/1.1 200 OK\r\n")) << ready.text;
  EXPECT_TRUE(absl::EndsWith(ready.text, "\r\n\r\nready\n")) << ready.text;
  EXPECT_TRUE(ready.closed);  // it asked for Connection: close
  EXPECT_TRUE(absl::EndsWith(Fetch(port, Get("/healthz?verbose=1")).text, "\r\n\r\nok\n"));
  EXPECT_TRUE(absl::StartsWith(Fetch(port, Get("/nope")).text, "HTTP/1.1 404 Not Found\r\n"));
  // HTTP/1.0 closes by default; HEAD has the length of the body but not the body.
  const Answer head = Fetch(port, "HEAD /healthz HTTP/1.0\r\n\r\n");
  EXPECT_TRUE(head.closed);
  EXPECT_TRUE(absl::StrContains(head.text, "Content-Length: 3\r\n")) << head.text;
  EXPECT_TRUE(absl::EndsWith(head.text, "\r\n\r\n")) << head.text;
  const Answer post = Fetch(port, "POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
  EXPECT_TRUE(absl::StartsWith(post.text, "HTTP/1.1 405 Method Not Allowed\r\n")) << post.text;
  EXPECT_TRUE(post.closed);  // its body is never read
  const Answer garbage = Fetch(port, "HELLO\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(garbage.text, "HTTP/1.1 400 Bad Request\r\n")) << garbage.text;
  // A head past max_header_bytes: 431 and the end, without waiting for the rest.
  const Answer big = Fetch(
      port, "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(HttpLimits().max_header_bytes, 'a'));
  EXPECT_TRUE(absl::StartsWith(big.text, "HTTP/1.1 431 ")) << big.text;
  EXPECT_TRUE(big.closed);
}

TEST(HttpEndpoints, BadPortIsAnError) {
  EXPECT_EQ(HttpEndpoints::Start("127.0.0.1", 70000).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = HttpEndpoints::Start("127.0.0.1", 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(HttpEndpoints::Start("127.0.0.1", (*first)->port()).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace quant
