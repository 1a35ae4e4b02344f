// Thread control: set_num_threads is what OpenMP (and so oneDNN and diffuse's kernels) uses.
#include "diffuse/core/threads.h"

#include <gtest/gtest.h>
#include <omp.h>

namespace diffuse {
namespace {

int threads_in_parallel_region() {
  int n = 0;
#pragma omp parallel
  {
#pragma omp single
    n = omp_get_num_threads();
  }
  return n;
}

TEST(Threads, SetNumThreadsIsHonoredByOpenMP) {
  set_num_threads(0);  // the default: cores or OMP_NUM_THREADS
  const int def = num_threads();
  ASSERT_GE(def, 1);
  EXPECT_EQ(def, omp_get_max_threads());
  for (const int n : {1, 3, 2}) {
    set_num_threads(n);
    EXPECT_EQ(num_threads(), n);
    EXPECT_EQ(omp_get_max_threads(), n);
    // Oversubscription is allowed, and a parallel region really gets n threads (dynamic
    // adjustment is off by default).
    if (!omp_get_dynamic()) {
      EXPECT_EQ(threads_in_parallel_region(), n);
    }
  }
  set_num_threads(-4);  // any n <= 0 restores the default
  EXPECT_EQ(num_threads(), def);
  set_num_threads(3);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), def);
}

}  // namespace
}  // namespace diffuse
