// Memory housekeeping between the phases of a pipeline. Private to the library.
#pragma once

namespace diffuse::ops {

// Hands the memory that the C heap keeps from freed tensors back to the system (glibc
// malloc_trim; a no-op elsewhere). A model forward frees its activations, but the allocator
// keeps most of that memory (pages pinned by long-lived small allocations made meanwhile) for
// the next forward of the same model; a different model that follows (the VAE after the UNet
// steps) allocates its own, larger buffers directly from the system, on top. Call it at such a
// boundary: it costs milliseconds, and the memory it returns is faulted back in by whoever
// needs it again.
void release_free_memory() noexcept;

}  // namespace diffuse::ops
