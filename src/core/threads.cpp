#include "diffuse/core/threads.h"

#include <omp.h>

#include <thread>

namespace diffuse {
namespace {

int default_threads() {
  // omp_get_max_threads() already honors OMP_NUM_THREADS; remember it before any change.
  static const int n = omp_get_max_threads();
  return n > 0 ? n : static_cast<int>(std::thread::hardware_concurrency());
}

}  // namespace

void set_num_threads(int n) {
  const int fallback = default_threads();
  // oneDNN's OpenMP runtime reads omp_get_max_threads() at each primitive execution.
  omp_set_num_threads(n > 0 ? n : fallback);
}

int num_threads() {
  return omp_get_max_threads();
}

}  // namespace diffuse
