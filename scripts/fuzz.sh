#!/usr/bin/env bash
# Builds the libFuzzer targets (clang preset: DIFFUSE_BUILD_FUZZ=ON) and runs each one for a
# bounded time, starting from the seed corpus checked in under fuzz/corpus/<target>.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 10         # 10 s per target
#   scripts/fuzz.sh 60 gguf    # only fuzz_gguf
#
# A crash, leak, sanitizer report or timeout makes the script fail; libFuzzer leaves the input
# that triggered it (crash-*, leak-*, timeout-*) in the current directory.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors pickle torch_zip gguf json)
fi

cd "$root"
cmake --preset clang >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
cmake --build --preset clang --target "${build_targets[@]}"

status=0
for t in "${targets[@]}"; do
  # Work on a copy: libFuzzer adds the inputs it finds to the corpus folder it is given.
  work="$(mktemp -d)"
  cp "$root/fuzz/corpus/$t/"* "$work/"
  echo "== fuzz_$t for ${seconds}s"
  if ! "$root/build/clang/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$work"; then
    echo "fuzz_$t FAILED" >&2
    status=1
  fi
  rm -rf "$work"
done
exit $status
