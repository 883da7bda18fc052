// KeepFreedMemory: glibc malloc settings for processes that allocate and free the same large
// tensors every step (GSQ, eval). By default each thread's arena hands freed memory back to the
// kernel once 128 KiB sit free at its top, and the next step faults the same pages back in
// (measured: ~20% of a GSQ step on this machine, docs/benchmarks.md). Call first thing in main.
#pragma once

#include <malloc.h>

namespace quant {

inline void KeepFreedMemory() {
  mallopt(M_TRIM_THRESHOLD, 1 << 30);      // give memory back only past 1 GiB free at the top
  mallopt(M_MMAP_THRESHOLD, 32 << 20);     // glibc's largest; fixed, so trimming stays off
}

}  // namespace quant
