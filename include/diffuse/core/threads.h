// Thread control: one setting honored by oneDNN and by diffuse's own OpenMP kernels.
#pragma once

namespace diffuse {

// Sets the number of threads used by every parallel kernel (OpenMP, which the Debian oneDNN
// build also uses). n <= 0 restores the default (the number of cores, or OMP_NUM_THREADS).
// Call it from the main thread, between ops.
void set_num_threads(int n);
// The number of threads parallel kernels use now.
int num_threads();

}  // namespace diffuse
