// Gloo for real (TCP on loopback, one thread per rank, rendezvous through an in-memory store):
// the all-to-all moves each rank's bytes to the right peer; an MoE layer forwarded by a gang of
// 2 and of 4, each member holding only its own experts, gives bit for bit the output and the
// experts' Hessians of one process; a member that stops answering fails the others' collective
// within the watchdog.
#include "worker/exchange/exchange.h"

#include <gtest/gtest.h>

#include <functional>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/exchange/expert_parallel.h"
#include "worker/model/calibration.h"
#include "worker/model/model.h"

namespace quant::exchange {
namespace {

const std::string kModel = std::string(QUANT_SHARED_DIR) + "/models/tiny-deepseek-v3";

class MemoryStore : public RendezvousStore {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override {
    std::lock_guard<std::mutex> lock(mu_);
    kv_[key] = value;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = kv_.find(key);
    if (it == kv_.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> kv_;
};

// Runs fn(rank) on `size` threads, each with its own Gloo exchange.
void Gang(int size, std::chrono::milliseconds timeout,
          const std::function<void(Exchange&)>& fn) {
  MemoryStore store;
  const std::string prefix = absl::StrCat("test/", size, "/", timeout.count());
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto ex = ConnectGloo(&store, prefix, r, size, "127.0.0.1", timeout);
      ASSERT_TRUE(ex.ok()) << ex.status();
      fn(**ex);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooExchange, AllToAllDeliversEachRanksBytesToItsPeer) {
  Gang(3, std::chrono::seconds(20), [](Exchange& ex) {
    std::vector<std::string> send;
    for (int d = 0; d < ex.size(); ++d) {
      send.push_back(std::string(static_cast<size_t>(d * 7 + ex.rank()), 'a' + ex.rank()));
    }
    auto recv = ex.AllToAll(send);
    ASSERT_TRUE(recv.ok()) << recv.status();
    for (int s = 0; s < ex.size(); ++s) {
      EXPECT_EQ((*recv)[s], std::string(static_cast<size_t>(ex.rank() * 7 + s), 'a' + s));
    }
    EXPECT_GT(ex.bytes_sent(), 0);
  });
}

TEST(GlooExchange, ASilentMemberFailsTheOthersCollectiveWithinTheWatchdog) {
  const auto start = std::chrono::steady_clock::now();
  Gang(2, std::chrono::milliseconds(1500), [](Exchange& ex) {
    if (ex.rank() == 1) {
      std::this_thread::sleep_for(std::chrono::seconds(4));  // never joins the collective
      return;
    }
    auto recv = ex.AllToAll({"x", "y"});
    EXPECT_FALSE(recv.ok());
    EXPECT_NE(recv.status().message().find("watchdog"), std::string::npos) << recv.status();
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

// The first MoE layer of tiny-deepseek-v3 on random hidden states: four batches.
struct Reference {
  std::vector<at::Tensor> inputs, outputs;
  std::map<std::string, model::HessianStats> hessians;
  int layer = 0;
  int experts = 0;
};

const Reference& OneProcess() {
  static Reference* ref = [] {
    auto* r = new Reference();
    auto m = model::Model::Open(kModel, model::ComputeDType::kF32);
    EXPECT_TRUE(m.ok()) << m.status();
    const model::ModelConfig& c = (*m)->config();
    while (!c.IsMoeLayer(r->layer)) ++r->layer;
    r->experts = c.num_experts;
    auto w = (*m)->LoadLayer(r->layer, nullptr);
    EXPECT_TRUE(w.ok());
    at::manual_seed(7);
    model::HessianCollector h;
    for (int b = 0; b < 4; ++b) {
      r->inputs.push_back(at::randn({2, 32, c.hidden_size}));
      r->outputs.push_back((*m)->LayerForward(*w, r->inputs.back(), &h));
    }
    r->hessians = h.stats();
    return r;
  }();
  return *ref;
}

class ExpertParallel : public ::testing::TestWithParam<int> {};

TEST_P(ExpertParallel, AGangGivesTheBitsOfOneProcessHoldingOnlyItsExperts) {
  const Reference& ref = OneProcess();
  const int size = GetParam();
  std::vector<int64_t> resident(size), sent(size);
  Gang(size, std::chrono::seconds(30), [&](Exchange& ex) {
    auto m = model::Model::Open(kModel, model::ComputeDType::kF32);
    ASSERT_TRUE(m.ok());
    ExpertParallelRunner runner(&ex, ref.experts);
    const auto [first, last] = OwnedExperts(ex.rank(), ex.size(), ref.experts);
    (*m)->SetExpertParallel(first, last, &runner);
    auto w = (*m)->LoadLayer(ref.layer, nullptr);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int e = 0; e < ref.experts; ++e) {
      const bool here = w->tensors.count(absl::StrCat("mlp.experts.", e, ".gate_proj.weight")) > 0;
      EXPECT_EQ(here, e >= first && e < last) << "expert " << e;
      resident[ex.rank()] += here;
    }
    model::HessianCollector h;
    // Batches round-robin over the members; a member without a batch serves its experts.
    const int steps = (4 + size - 1) / size;
    for (int step = 0; step < steps; ++step) {
      const int b = step * size + ex.rank();
      if (b < 4) {
        at::Tensor out = (*m)->LayerForward(*w, ref.inputs[b], &h);
        ASSERT_TRUE(runner.status().ok()) << runner.status();
        EXPECT_TRUE(at::equal(out, ref.outputs[b])) << "batch " << b;
      } else {
        ASSERT_TRUE(runner.Idle(**m, *w, &h).ok()) << runner.status();
      }
    }
    for (int e = first; e < last; ++e) {
      for (const char* proj : {"gate_proj", "down_proj"}) {
        const std::string key =
            absl::StrCat("model.layers.", ref.layer, ".mlp.experts.", e, ".", proj);
        ASSERT_TRUE(h.stats().count(key)) << key;
        EXPECT_EQ(h.stats().at(key).tokens, ref.hessians.at(key).tokens) << key;
        EXPECT_TRUE(at::equal(h.stats().at(key).xtx, ref.hessians.at(key).xtx)) << key;
      }
    }
    sent[ex.rank()] = ex.bytes_sent();
  });
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(resident[r], ref.experts / size) << "rank " << r;
    EXPECT_GT(sent[r], 0) << "rank " << r;
    total += sent[r];
  }
  std::printf("gang of %d: %lld experts resident per member, %lld bytes exchanged\n", size,
              static_cast<long long>(resident[0]), static_cast<long long>(total));
}

INSTANTIATE_TEST_SUITE_P(Sizes, ExpertParallel, ::testing::Values(2, 4));

}  // namespace
}  // namespace quant::exchange
