// ScopedBlasThreads: sets OpenBLAS's thread count for a scope and restores it after. Code that
// runs its own threads, each making BLAS calls, asks for 1 so that OpenBLAS's pool does not spin
// (sched_yield) against them on the same cores. A no-op where the BLAS is not OpenBLAS.
#pragma once

#include <dlfcn.h>

namespace quant::quant {

class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int threads) {
    get_ = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    set_ = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (get_ == nullptr || set_ == nullptr) return;
    previous_ = get_();
    set_(threads);
  }
  ~ScopedBlasThreads() {
    if (set_ != nullptr && previous_ > 0) set_(previous_);
  }
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

 private:
  int (*get_)() = nullptr;
  void (*set_)(int) = nullptr;
  int previous_ = 0;
};

}  // namespace quant::quant
