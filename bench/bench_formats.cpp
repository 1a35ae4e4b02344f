// Loading a multi-GB safetensors file: time and memory to list it and to load every tensor.
//
//   bench_formats [GB=1] [path=/tmp/diffuse_bench_<pid>.safetensors]
//
// Writes a file of GB gigabytes (f16 tensors of 16 MiB, streamed: the writer holds one tensor),
// then in this process:
//   1. opens it (header only) and lists its tensors: time, RSS before/after;
//   2. gets every tensor (zero-copy views) and touches one byte per page, printing RSS after each
//      quarter of the tensors, so RSS is seen to grow with the bytes touched, not the file size;
//   3. drops the views: the mapping goes away with the last tensor.
// The file is deleted at the end. The file was just written, so its pages are in the page
// cache: the load figures are minor page faults (mmap cost), not disk reads; run
// `echo 3 > /proc/sys/vm/drop_caches` between writing and reading for cold-cache figures.
// A benchmark, not a test: it prints numbers and checks nothing but the values it reads.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "diffuse/formats/safetensors.h"

namespace {

// Resident and peak resident set size of this process, in MiB (/proc/self/status).
double status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + std::strlen(key)) / 1024.0;
  }
  return -1;
}
double rss_mib() {
  return status_mib("VmRSS:");
}
double peak_mib() {
  return status_mib("VmHWM:");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace diffuse;
  const double gb = argc > 1 ? std::atof(argv[1]) : 1.0;
  const std::filesystem::path path =
      argc > 2 ? argv[2]
               : std::filesystem::temp_directory_path() /
                     ("diffuse_bench_" + std::to_string(::getpid()) + ".safetensors");
  constexpr int64_t kElems = 8 << 20;  // 8 Mi f16 = 16 MiB per tensor
  const auto n = static_cast<int>(gb * 1024 / 16);
  if (n < 4) {
    std::fprintf(stderr, "bench_formats: give at least 0.0625 GB\n");
    return 1;
  }
  const long page = ::sysconf(_SC_PAGESIZE);

  // 0. Write (streaming).
  {
    std::vector<SafetensorsTensorSpec> specs;
    for (int i = 0; i < n; ++i)
      specs.push_back(
          {"blocks." + std::to_string(i) + ".weight", DType::f16, {kElems / 1024, 1024}});
    const auto t0 = std::chrono::steady_clock::now();
    save_safetensors_streaming(path, specs, [&](const SafetensorsTensorSpec& s) {
      Tensor t = Tensor::empty(s.shape, DType::f16);
      auto* p = static_cast<uint16_t*>(t.data_ptr());
      const auto tag = static_cast<uint16_t>(std::stoi(s.name.substr(7)));
      for (int64_t e = 0; e < kElems; ++e) p[e] = static_cast<uint16_t>(tag + e);
      return t;
    });
    std::printf("write  %d tensors, %.2f GiB in %.2f s (peak RSS %.0f MiB)\n", n,
                static_cast<double>(std::filesystem::file_size(path)) / (1u << 30),
                seconds_since(t0), peak_mib());
  }

  int status = 0;
  {
    // 1. List.
    const double rss0 = rss_mib();
    auto t0 = std::chrono::steady_clock::now();
    const SafetensorsFile f = SafetensorsFile::open(path);
    uint64_t total = 0;
    for (const auto& e : f.entries()) total += e.end - e.begin;
    std::printf("list   %zu tensors, %.2f GiB in %.3f ms; RSS %.0f -> %.0f MiB\n",
                f.entries().size(), static_cast<double>(total) / (1u << 30),
                seconds_since(t0) * 1e3, rss0, rss_mib());

    // 2. Load every tensor and touch every page; RSS after each quarter.
    t0 = std::chrono::steady_clock::now();
    uint64_t sum = 0;
    std::vector<Tensor> held;
    for (int i = 0; i < n; ++i) {
      const SafetensorsEntry& e = f.entries()[static_cast<std::size_t>(i)];
      Tensor t = f.get(e.name);
      const auto* b = static_cast<const uint8_t*>(t.data_ptr());
      for (std::size_t off = 0; off < t.nbytes(); off += static_cast<std::size_t>(page))
        sum += b[off];
      const auto tag = static_cast<uint16_t>(std::stoi(e.name.substr(7)));
      if (static_cast<const uint16_t*>(t.data_ptr())[1] != static_cast<uint16_t>(tag + 1))
        status = 1;
      held.push_back(std::move(t));
      if ((i + 1) % (n / 4) == 0 || i + 1 == n)
        std::printf("load   %3d/%d tensors (%.2f GiB touched): %.2f s, RSS %.0f MiB\n", i + 1, n,
                    static_cast<double>(i + 1) * 16 / 1024, seconds_since(t0), rss_mib());
    }
    const double secs = seconds_since(t0);
    std::printf("load   all: %.2f s = %.2f GB/s (checksum %llu), peak RSS %.0f MiB\n", secs,
                static_cast<double>(total) / secs / 1e9, static_cast<unsigned long long>(sum),
                peak_mib());
  }
  // 3. Views and file released.
  std::printf("after  release: RSS %.0f MiB\n", rss_mib());
  std::filesystem::remove(path);
  if (status != 0) std::fprintf(stderr, "bench_formats: read back wrong values\n");
  return status;
}
