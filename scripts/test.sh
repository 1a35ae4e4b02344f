#!/usr/bin/env bash
# Sets everything up, builds the release preset and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake --preset release
cmake --build --preset release
# Serially: every test already uses all cores through OpenMP and oneDNN; two at once would
# oversubscribe the CPU and make OpenMP spin-waits dominate.
ctest --preset release
