#include <gloo/alltoall.h>
#include <gloo/alltoallv.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/exchange/exchange.h"

namespace quant::exchange {
namespace {

// Gloo's store interface over ours: get and wait poll until the key is there or time runs out.
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(RendezvousStore* store, std::chrono::milliseconds timeout)
      : store_(store), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    const absl::Status s = store_->Set(key, std::string(data.begin(), data.end()));
    if (!s.ok()) throw std::runtime_error("rendezvous set " + key + ": " + std::string(s.message()));
  }
  std::vector<char> get(const std::string& key) override {
    wait({key});
    auto v = store_->Get(key);
    if (!v.ok() || !v->has_value()) throw std::runtime_error("rendezvous get " + key);
    return std::vector<char>((*v)->begin(), (*v)->end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (const std::string& key : keys) {
      while (true) {
        auto v = store_->Get(key);
        if (v.ok() && v->has_value()) break;
        if (std::chrono::steady_clock::now() > end) {
          throw std::runtime_error("rendezvous: " + key + " did not appear (a gang member is missing)");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

 private:
  RendezvousStore* store_;
  std::chrono::milliseconds timeout_;
};

class GlooExchange : public Exchange {
 public:
  GlooExchange(std::shared_ptr<gloo::Context> context, std::chrono::milliseconds timeout)
      : context_(std::move(context)), timeout_(timeout) {}
  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }

  absl::StatusOr<std::vector<std::string>> AllToAll(const std::vector<std::string>& send) override {
    const int n = size();
    if (static_cast<int>(send.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat("all-to-all: ", send.size(), " buffers for ",
                                                     n, " ranks"));
    }
    try {
      // Sizes first (fixed size), then the bytes (variable size).
      std::vector<int64_t> out_sizes(n), in_sizes(n);
      for (int d = 0; d < n; ++d) out_sizes[d] = static_cast<int64_t>(send[d].size());
      gloo::AlltoallOptions sizes(context_);
      sizes.setInput(out_sizes.data(), out_sizes.size());
      sizes.setOutput(in_sizes.data(), in_sizes.size());
      sizes.setTimeout(timeout_);
      gloo::alltoall(sizes);
      std::string packed;
      for (const std::string& s : send) packed += s;
      int64_t total_in = 0;
      for (int64_t v : in_sizes) total_in += v;
      std::string received(static_cast<size_t>(total_in), '\0');
      // Gloo wants real buffers even when nothing moves.
      if (packed.empty()) packed.push_back('\0');
      if (received.empty()) received.push_back('\0');
      gloo::AlltoallvOptions bytes(context_);
      bytes.setInput(packed.data(), std::vector<int64_t>(out_sizes));
      bytes.setOutput(received.data(), std::vector<int64_t>(in_sizes));
      bytes.setTimeout(timeout_);
      gloo::alltoallv(bytes);
      std::vector<std::string> recv(n);
      int64_t pos = 0;
      for (int s = 0; s < n; ++s) {
        recv[s] = received.substr(static_cast<size_t>(pos), static_cast<size_t>(in_sizes[s]));
        pos += in_sizes[s];
        if (s != rank()) {
          bytes_sent_ += out_sizes[s];
          bytes_received_ += in_sizes[s];
        }
      }
      return recv;
    } catch (const std::exception& e) {
      return absl::DeadlineExceededError(absl::StrCat("all-to-all (watchdog ", timeout_.count(),
                                                      " ms): ", e.what()));
    }
  }

 private:
  std::shared_ptr<gloo::Context> context_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Exchange>> ConnectGloo(RendezvousStore* store,
                                                      const std::string& prefix, int rank,
                                                      int size, const std::string& host,
                                                      std::chrono::milliseconds timeout) {
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    GlooStore gloo_store(store, timeout);
    gloo::rendezvous::PrefixStore prefixed(prefix, gloo_store);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(timeout);
    context->connectFullMesh(prefixed, device);
    return std::unique_ptr<Exchange>(new GlooExchange(context, timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gang rendezvous ", prefix, " as rank ", rank,
                                               " of ", size, ": ", e.what()));
  }
}

}  // namespace quant::exchange
