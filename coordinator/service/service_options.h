// The coordinator service's options: one struct, documented once (STYLE.md 9); main.cc's flags
// set some, the rest are measured or protocol-bound defaults.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace quant::coordinator {

struct ServiceOptions {
  std::string token;  // submit/cancel bearer token; "" : no token required
  // How workers authenticate every Workers call (both may be set; either one suffices): a
  // worker token (a bearer token distinct from `token`), and/or with mTLS a client certificate
  // whose subject CN starts with `worker_cert_cn`. Both empty: workers are not checked (only
  // allowed when `token` is empty too: a loopback or test setup; main() enforces it).
  std::string worker_token;
  std::string worker_cert_cn;
  // file:// confinement: when not empty, every path a job names (model, out, calib, allocation)
  // must resolve, symlinks and ".." followed, inside one of these directories.
  std::vector<std::string> roots;
  double lease_seconds = 60;
  // Where jobs' intermediate outputs live (a directory per job), shared with the workers.
  std::string scratch;
  // A failed or cancelled job's scratch is removed when it ends unless this is set (debugging).
  bool keep_failed_scratch = false;

  // Lease is a long poll: a task that becomes ready within this long goes out at once, so idle
  // workers pick up a layer's parallel tasks together, and a gang forms from the workers asking.
  // 0: one look (unit tests with a fake clock).
  double lease_long_poll_seconds = 2.0;
  // A worker waiting for a gang that stopped asking for this long leaves the forming gang (a
  // waiting worker asks again within about 0.1 s: retry_after_seconds).
  double gang_forget_after_seconds = 1.0;
  // Ended jobs' leftovers are swept at most this often (from Lease: jobs also end by expiry).
  double sweep_every_seconds = 5.0;
  // The rendezvous store, per gang attempt: Gloo's and NCCL's rendezvous for a gang of g set
  // about 2g keys of under 1 KiB each, so these limits leave room for gangs of 64 and then some.
  size_t rendezvous_max_value_bytes = 64 << 10;
  size_t rendezvous_max_keys_per_attempt = 256;
  size_t rendezvous_max_bytes_per_attempt = 4 << 20;
  // Log lines kept per job, in memory (the oldest go first).
  size_t max_log_lines = 10000;
};

}  // namespace quant::coordinator
