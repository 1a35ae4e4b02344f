#!/usr/bin/env bash
# Sets everything up, builds the release preset and runs the main job: generating an image with
# the tiny Stable Diffusion pipeline (random weights, diffusers layout) from ../shared/reference,
# through exactly the code path a real SD 1.x/2.x model takes. Pass a model folder and a prompt
# to generate with your own model:  scripts/run.sh /path/to/stable-diffusion-v1-5 "a red fox"
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target diffuse_cli
model="${1:-../shared/reference/base/tiny/pipeline}"
prompt="${2:-a painting of a lighthouse at dawn}"
./build/release/tools/diffuse generate -m "$model" -p "$prompt" --steps 20 --seed 42 \
  --sampler "DPM++ 2M" --schedule karras -o output.png
