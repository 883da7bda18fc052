// /metrics, /healthz and /readyz on a small poll() server: one thread serves every connection,
// a second one runs the /metrics scrapes.
//
// Why not cpp-httplib, which served these before: Debian 12's 0.11.4 gives each connection one
// thread of a fixed pool (8 here) for the connection's whole life and bounds only each recv()
// (set_read_timeout); it has no deadline for a request's headers as a whole. A client trickling a
// header byte every few seconds keeps its thread as long as it likes, and eight such clients
// blocked /healthz for their whole timeout: a liveness probe would have killed a healthy
// coordinator. A gate in front of httplib would have to read the headers itself and could not
// hand them on, so for three GET routes a poll() loop is smaller. Here a slow client costs one
// table entry, not a thread, and HttpLimits bounds its header time, idle time, write time, header
// bytes and the number of connections. Request bodies are never read (no route takes one).
#include "common/http_endpoints.h"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/metrics.h"

namespace quant {
namespace {

using Clock = std::chrono::steady_clock;

// Read per recv(): a whole probe or scrape request fits.
constexpr size_t kRecvChunkBytes = 4096;
// When accept() fails for want of file descriptors the listener stays readable; this long we
// stop polling it rather than spin (connections in the table still get served meanwhile).
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

enum class ConnState {
  kReading,   // waiting for (the rest of) a request head
  kScraping,  // its /metrics body is being made on the scrape thread
  kWriting,   // sending `out`
};

struct Conn {
  int fd = -1;
  ConnState state = ConnState::kReading;
  // kReading: header deadline, or idle deadline when `idle`; kWriting: write deadline.
  // kScraping has none: the wait is ours, not the client's.
  Clock::time_point deadline;
  bool idle = false;       // kept alive after a response, no byte of a new request yet
  bool keep_alive = true;  // for the response being made or sent
  bool head_only = false;  // HEAD: the response has no body
  std::string in;          // received, not yet parsed; at most max_header_bytes + one chunk
  std::string out;         // the response being sent
  size_t out_sent_bytes = 0;
};

struct Request {
  std::string method, path;
  bool keep_alive = true;
  bool has_body = false;
};

// Where the request head in `buf` ends (just past its empty line), or npos while incomplete.
// Lines may end in CRLF or a bare LF.
size_t HeadEnd(absl::string_view buf) {
  size_t line_start = 0;
  while (true) {
    const size_t nl = buf.find('\n', line_start);
    if (nl == absl::string_view::npos) return absl::string_view::npos;
    const absl::string_view line = buf.substr(line_start, nl - line_start);
    if (line.empty() || line == "\r") return nl + 1;
    line_start = nl + 1;
  }
}

// Parses a complete head (request line and header lines). False: not HTTP/1.x.
bool ParseHead(absl::string_view head, Request* req) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, '\n');
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(lines[0]), ' ', absl::SkipEmpty());
  if (parts.size() != 3 || !absl::StartsWith(parts[2], "HTTP/1.")) return false;
  req->method = std::string(parts[0]);
  req->path = std::string(parts[1].substr(0, parts[1].find('?')));
  // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep it.
  req->keep_alive = parts[2] != "HTTP/1.0";
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view name = absl::StripAsciiWhitespace(lines[i].substr(0, colon));
    const std::string value =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    if (absl::EqualsIgnoreCase(name, "connection")) {
      for (absl::string_view token : absl::StrSplit(value, ',')) {
        token = absl::StripAsciiWhitespace(token);
        if (token == "close") req->keep_alive = false;
        if (token == "keep-alive") req->keep_alive = true;
      }
    } else if (absl::EqualsIgnoreCase(name, "transfer-encoding")) {
      req->has_body = true;
    } else if (absl::EqualsIgnoreCase(name, "content-length")) {
      uint64_t length = 0;
      if (!absl::SimpleAtoi(value, &length) || length > 0) req->has_body = true;
    }
  }
  return true;
}

absl::string_view Reason(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
  }
  return "Error";
}

std::string MakeResponse(int code, absl::string_view content_type, absl::string_view body,
                         bool head_only, bool keep_alive) {
  return absl::StrCat(
      "HTTP/1.1 ", code, " ", Reason(code), "\r\nContent-Type: ", content_type,
      "\r\nContent-Length: ", body.size(), code == 405 ? "\r\nAllow: GET, HEAD" : "",
      "\r\nConnection: ", keep_alive ? "keep-alive" : "close", "\r\n\r\n", head_only ? "" : body);
}

}  // namespace

struct HttpEndpoints::Impl {
  HttpLimits limits;
  std::function<void()> before_scrape;
  int listen_fd = -1;
  int wake_fd = -1;  // eventfd: the destructor and finished scrapes wake poll()
  std::atomic<bool> stopping{false};
  std::thread serve_thread, scrape_thread;

  // The serve thread's alone.
  std::map<uint64_t, Conn> conns;  // by id, in accept order
  uint64_t next_id = 1;
  Clock::time_point accept_paused_until;

  // Shared with the scrape thread.
  std::mutex mu;
  std::condition_variable scrape_wanted;
  bool stop_scraping = false;
  std::vector<uint64_t> scrape_waiting;  // connections wanting a scrape that has not started
  std::vector<std::pair<std::vector<uint64_t>, std::string>> scrapes_done;  // who, body

  ~Impl() {
    if (listen_fd >= 0) close(listen_fd);
    if (wake_fd >= 0) close(wake_fd);
  }

  void Wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd, &one, sizeof(one));  // full counter: already woken
  }

  void Close(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    close(it->second.fd);
    conns.erase(it);
  }

  void Respond(Conn& c, std::string response, bool keep_alive) {
    c.state = ConnState::kWriting;
    c.keep_alive = keep_alive;
    c.out = std::move(response);
    c.out_sent_bytes = 0;
    c.deadline = Clock::now() + std::chrono::milliseconds(limits.write_deadline_ms);
  }

  // Answers the request head at the front of c.in once it is complete (a response to send, or a
  // scrape to wait for); a head past max_header_bytes gets 431 and the connection's end.
  void TryParse(uint64_t id, Conn& c) {
    // RFC 9112 section 2.2: empty lines before a request line are to be ignored.
    c.in.erase(0, std::min(c.in.find_first_not_of("\r\n"), c.in.size()));
    if (c.in.empty()) return;
    const size_t end = HeadEnd(c.in);
    if (end == std::string::npos ? c.in.size() > limits.max_header_bytes
                                 : end > limits.max_header_bytes) {
      Respond(c, MakeResponse(431, "text/plain", "request head too large\n", false, false), false);
      return;
    }
    if (end == std::string::npos) return;
    Request req;
    const bool ok = ParseHead(absl::string_view(c.in).substr(0, end), &req);
    c.in.erase(0, end);
    if (!ok) {
      Respond(c, MakeResponse(400, "text/plain", "bad request\n", false, false), false);
      return;
    }
    // A body we do not read would be taken for the next request: answer, then close.
    const bool keep_alive = req.keep_alive && !req.has_body;
    const bool head_only = req.method == "HEAD";
    if (req.method != "GET" && !head_only) {
      Respond(c, MakeResponse(405, "text/plain", "method not allowed\n", false, keep_alive),
              keep_alive);
    } else if (req.path == "/healthz") {
      Respond(c, MakeResponse(200, "text/plain", "ok\n", head_only, keep_alive), keep_alive);
    } else if (req.path == "/readyz") {
      Respond(c, MakeResponse(200, "text/plain", "ready\n", head_only, keep_alive), keep_alive);
    } else if (req.path == "/metrics") {
      c.state = ConnState::kScraping;
      c.keep_alive = keep_alive;
      c.head_only = head_only;
      std::lock_guard<std::mutex> lock(mu);
      scrape_waiting.push_back(id);
      scrape_wanted.notify_one();
    } else {
      Respond(c, MakeResponse(404, "text/plain", "not found\n", head_only, keep_alive), keep_alive);
    }
  }

  void OnReadable(uint64_t id, Conn& c) {
    char buf[kRecvChunkBytes];
    const ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {  // the client closed, or the connection broke
      Close(id);
      return;
    }
    if (c.idle) {  // first byte of a new request on a kept-alive connection
      c.idle = false;
      c.deadline = Clock::now() + std::chrono::milliseconds(limits.header_deadline_ms);
    }
    c.in.append(buf, static_cast<size_t>(n));
    TryParse(id, c);
  }

  void OnWritable(uint64_t id, Conn& c) {
    const ssize_t n =
        send(c.fd, c.out.data() + c.out_sent_bytes, c.out.size() - c.out_sent_bytes, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n < 0) {
      Close(id);
      return;
    }
    c.out_sent_bytes += static_cast<size_t>(n);
    if (c.out_sent_bytes < c.out.size()) return;
    if (!c.keep_alive) {
      Close(id);
      return;
    }
    c.state = ConnState::kReading;
    c.out.clear();
    c.idle = c.in.empty();
    c.deadline = Clock::now() + std::chrono::milliseconds(c.idle ? limits.idle_timeout_ms
                                                                 : limits.header_deadline_ms);
    TryParse(id, c);  // a pipelined request may be waiting in c.in already
  }

  // Makes room for one more connection: the reading one nearest its deadline goes (it is the
  // one that loses least), or, if none is reading, the oldest.
  void Evict() {
    auto victim = conns.end();
    for (auto it = conns.begin(); it != conns.end(); ++it) {
      if (it->second.state == ConnState::kReading &&
          (victim == conns.end() || it->second.deadline < victim->second.deadline)) {
        victim = it;
      }
    }
    Close(victim != conns.end() ? victim->first : conns.begin()->first);
  }

  void AcceptAll() {
    while (true) {
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          accept_paused_until = Clock::now() + kAcceptBackoff;
        }
        return;  // EAGAIN: none left
      }
      if (static_cast<int>(conns.size()) >= limits.max_connections) Evict();
      const uint64_t id = next_id++;
      Conn& c = conns[id];
      c.fd = fd;
      c.deadline = Clock::now() + std::chrono::milliseconds(limits.header_deadline_ms);
      // A probe's request is usually here already: answering it now takes it out of reading,
      // so the next connections of a burst evict slow clients, not the probe.
      OnReadable(id, c);
    }
  }

  void FinishScrapes() {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = read(wake_fd, &count, sizeof(count));
    std::vector<std::pair<std::vector<uint64_t>, std::string>> done;
    {
      std::lock_guard<std::mutex> lock(mu);
      done.swap(scrapes_done);
    }
    for (const auto& [ids, body] : done) {
      for (uint64_t id : ids) {
        auto it = conns.find(id);
        if (it == conns.end() || it->second.state != ConnState::kScraping) continue;  // evicted
        Conn& c = it->second;
        Respond(c, MakeResponse(200, "text/plain; version=0.0.4", body, c.head_only, c.keep_alive),
                c.keep_alive);
      }
    }
  }

  void Serve() {
    std::vector<pollfd> fds;
    std::vector<uint64_t> ids;  // ids[i] is the connection of fds[i + 2]
    while (!stopping.load()) {
      const Clock::time_point now = Clock::now();
      const bool accepting = now >= accept_paused_until;
      Clock::time_point wake_at = accepting ? Clock::time_point::max() : accept_paused_until;
      fds.clear();
      ids.clear();
      fds.push_back({wake_fd, POLLIN, 0});
      fds.push_back({listen_fd, static_cast<short>(accepting ? POLLIN : 0), 0});
      for (const auto& [id, c] : conns) {
        short events = 0;
        if (c.state == ConnState::kReading) events = POLLIN;
        if (c.state == ConnState::kWriting) events = POLLOUT;
        fds.push_back({c.fd, events, 0});
        ids.push_back(id);
        if (c.state != ConnState::kScraping) wake_at = std::min(wake_at, c.deadline);
      }
      int timeout_ms = -1;
      if (wake_at != Clock::time_point::max()) {
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake_at - now).count();
        timeout_ms = static_cast<int>(std::clamp<int64_t>(wait, 0, INT_MAX));
      }
      if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
        // Only EFAULT, EINVAL or ENOMEM: none is ours to fix; wait a little and go on.
        std::this_thread::sleep_for(kAcceptBackoff);
        continue;
      }
      if (fds[0].revents != 0) FinishScrapes();
      for (size_t i = 0; i < ids.size(); ++i) {
        const short revents = fds[i + 2].revents;
        if (revents == 0) continue;
        auto it = conns.find(ids[i]);
        if (it == conns.end()) continue;
        Conn& c = it->second;
        if ((revents & (POLLERR | POLLNVAL)) != 0) {
          Close(ids[i]);
        } else if (c.state == ConnState::kReading && (revents & (POLLIN | POLLHUP)) != 0) {
          OnReadable(ids[i], c);
        } else if (c.state == ConnState::kWriting && (revents & (POLLOUT | POLLHUP)) != 0) {
          OnWritable(ids[i], c);
        } else if ((revents & POLLHUP) != 0) {
          Close(ids[i]);
        }
      }
      const Clock::time_point after = Clock::now();
      for (auto it = conns.begin(); it != conns.end();) {
        const Conn& c = it->second;
        if (c.state != ConnState::kScraping && c.deadline <= after) {
          close(c.fd);
          it = conns.erase(it);
        } else {
          ++it;
        }
      }
      if ((fds[1].revents & POLLIN) != 0) AcceptAll();
    }
    for (const auto& [id, c] : conns) close(c.fd);
    conns.clear();
  }

  void ScrapeLoop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      scrape_wanted.wait(lock, [&] { return stop_scraping || !scrape_waiting.empty(); });
      if (stop_scraping) return;
      // Everyone waiting now shares this scrape: it starts after each of their requests.
      std::vector<uint64_t> ids;
      ids.swap(scrape_waiting);
      lock.unlock();
      if (before_scrape) before_scrape();
      metrics::Default()
          .GetGauge("quant_resident_memory_bytes", "Resident memory of the process.")
          .Set(static_cast<double>(metrics::ResidentBytes()));
      std::string body = metrics::Default().Expose();
      lock.lock();
      scrapes_done.emplace_back(std::move(ids), std::move(body));
      Wake();
    }
  }
};

absl::StatusOr<std::unique_ptr<HttpEndpoints>> HttpEndpoints::Start(
    const std::string& host, int port, std::function<void()> before_scrape,
    const HttpLimits& limits) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http port ", port, " not in [0, 65535]"));
  }
  if (limits.header_deadline_ms <= 0 || limits.idle_timeout_ms <= 0 ||
      limits.write_deadline_ms <= 0 || limits.max_header_bytes == 0 ||
      limits.max_connections <= 0) {
    return absl::InvalidArgumentError("http limits must all be positive");
  }
  std::unique_ptr<HttpEndpoints> h(new HttpEndpoints());
  h->impl_ = std::make_unique<Impl>();
  Impl& impl = *h->impl_;
  impl.limits = limits;
  impl.before_scrape = std::move(before_scrape);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addrs = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc =
          getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &addrs);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on http ", host, ":", port, ": ", gai_strerror(rc)));
  }
  int last_errno = 0;
  for (addrinfo* a = addrs; a != nullptr && impl.listen_fd < 0; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));  // restart despite TIME_WAIT
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
      impl.listen_fd = fd;
    } else {
      last_errno = errno;
      close(fd);
    }
  }
  freeaddrinfo(addrs);
  if (impl.listen_fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on http ", host, ":", port, ": ", std::strerror(last_errno)));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (getsockname(impl.listen_fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    return absl::UnavailableError(absl::StrCat("getsockname: ", std::strerror(errno)));
  }
  char service_out[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&bound), bound_len, nullptr, 0, service_out,
                  sizeof(service_out), NI_NUMERICSERV) != 0 ||
      !absl::SimpleAtoi(service_out, &h->port_)) {
    return absl::UnavailableError("cannot read the bound http port");
  }
  impl.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl.wake_fd < 0)
    return absl::UnavailableError(absl::StrCat("eventfd: ", std::strerror(errno)));
  impl.serve_thread = std::thread([&impl] { impl.Serve(); });
  impl.scrape_thread = std::thread([&impl] { impl.ScrapeLoop(); });
  return h;
}

HttpEndpoints::~HttpEndpoints() {
  if (impl_ == nullptr) return;
  impl_->stopping.store(true);
  impl_->Wake();
  if (impl_->serve_thread.joinable()) impl_->serve_thread.join();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop_scraping = true;
  }
  impl_->scrape_wanted.notify_one();
  if (impl_->scrape_thread.joinable()) impl_->scrape_thread.join();
}

}  // namespace quant
