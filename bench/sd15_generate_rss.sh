#!/usr/bin/env bash
# Peak resident memory of a whole `diffuse generate` with Stable Diffusion 1.5 shapes at 512x512
# (random weights of the real shapes, bf16 weights and compute, 2 threads), next to the weights'
# size. See docs/benchmarks.md ("Whole-pipeline peak memory").
#
#   bench/sd15_generate_rss.sh [DIFFUSE_BINARY] [MODEL_DIR]
#
# DIFFUSE_BINARY defaults to build/release/tools/diffuse; MODEL_DIR (default /tmp/sd15-random) is
# created with `diffuse random-weights` from the runwayml/stable-diffusion-v1-5 configs of the
# shared assets when it has no model_index.json yet. Environment: THREADS (2), STEPS (2), SIZE
# (512), DTYPE (bf16: the weight and compute dtype of the run), FILE_DTYPE (DTYPE: the dtype the
# weight files hold, and are written in when the folder is created; f16 or f32 measures a
# checkpoint converted at load), SHARED (the shared folder, default ../shared next to the
# repository), CONFIGS (the config folder, default SD 1.5's; e.g. the SDXL base 1.0 one with
# SIZE=1024 for SDXL).
#
# Prints the weights' size in DTYPE, /usr/bin/time's maximum RSS, the peaks of RssAnon (heap:
# weights in the compute layout, activations) and RssFile (touched pages of the memory-mapped
# weight files) sampled every 50 ms from /proc, and the target 1.3 x weights + 512 MB.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$repo/build/release/tools/diffuse}"
model="${2:-/tmp/sd15-random}"
threads="${THREADS:-2}"
steps="${STEPS:-2}"
size="${SIZE:-512}"
dtype="${DTYPE:-bf16}"
file_dtype="${FILE_DTYPE:-$dtype}"
shared="${SHARED:-$repo/../shared}"
configs="${CONFIGS:-$shared/assets/model-configs/runwayml/stable-diffusion-v1-5}"

[[ -x "$bin" ]] || { echo "no diffuse binary at $bin (build the diffuse_cli target)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time (GNU time) is required" >&2; exit 1; }

if [[ ! -f "$model/model_index.json" ]]; then
  echo "writing random $file_dtype weights to $model ..."
  "$bin" random-weights "$configs" "$model" --dtype "$file_dtype"
fi
# The config folder's tokenizers have no vocabulary: use the shared CLIP tokenizer's (SDXL's
# tokenizer_2 keeps its own special tokens: pad "!").
for tok in tokenizer tokenizer_2; do
  [[ -d "$model/$tok" ]] || continue
  for f in vocab.json merges.txt; do
    [[ -f "$model/$tok/$f" ]] || cp "$shared/assets/clip-tokenizer/$f" "$model/$tok/$f"
  done
done

# The weights' size in the dtype of the run (the files' size scaled when they hold another).
file_bytes=0
for f in "$model"/text_encoder/*.safetensors "$model"/unet/*.safetensors \
         "$model"/vae/*.safetensors "$model"/text_encoder_2/*.safetensors; do
  [[ -f "$f" ]] || continue
  file_bytes=$((file_bytes + $(stat -c %s "$f")))
done
bytes_of() { case "$1" in f32) echo 4 ;; *) echo 2 ;; esac; }
weights_bytes=$((file_bytes * $(bytes_of "$dtype") / $(bytes_of "$file_dtype")))

log="$(mktemp)"
samples="$(mktemp)"
trap 'rm -f "$log" "$samples"' EXIT

/usr/bin/time -v "$bin" generate -m "$model" -p "a photo" --steps "$steps" -W "$size" -H "$size" \
  --dtype "$dtype" --compute "$dtype" -t "$threads" --seed 1 -o "${TMPDIR:-/tmp}/sd15_rss.png" \
  >"$log" 2>&1 &
time_pid=$!
# Sample the child of /usr/bin/time (the diffuse process) until it exits.
child=""
while kill -0 "$time_pid" 2>/dev/null; do
  [[ -n "$child" ]] || child="$(pgrep -P "$time_pid" || true)"
  if [[ -n "$child" && -r "/proc/$child/status" ]]; then
    awk '/^RssAnon:|^RssFile:/ {printf "%s %s ", $1, $2} END {print ""}' \
      "/proc/$child/status" >>"$samples" 2>/dev/null || true
  fi
  sleep 0.05
done
wait "$time_pid" || { cat "$log" >&2; exit 1; }

max_kb="$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$log")"
read -r anon_kb file_kb < <(awk '{ if ($2 > a) a = $2; if ($4 > f) f = $4 } END {print a+0, f+0}' \
  "$samples")
wall="$(awk -F'): ' '/Elapsed \(wall clock\)/ {print $2}' "$log")"
awk -v w="$weights_bytes" -v m="$max_kb" -v a="$anon_kb" -v f="$file_kb" -v t="$wall" \
    -v th="$threads" -v st="$steps" -v sz="$size" -v dt="$dtype" 'BEGIN {
  mb = 1e6
  printf "generate %dx%d, %s weights+compute, %d threads, %d steps, wall %s\n", sz, sz, dt, th, st, t
  printf "weights in %-4s         %8.0f MB\n", dt, w / mb
  printf "peak RSS (time -v)     %8.0f MB  (%.2f x weights)\n", m * 1024 / mb, m * 1024 / w
  printf "  peak RssAnon         %8.0f MB  (sampled every 50 ms)\n", a * 1024 / mb
  printf "  peak RssFile         %8.0f MB  (mapped weight pages, sampled)\n", f * 1024 / mb
  printf "target 1.3 x W + 512   %8.0f MB  -> %s\n", (1.3 * w + 512 * mb) / mb,
         (m * 1024 <= 1.3 * w + 512 * mb) ? "met" : "NOT met"
}'
grep -E "s/step|decode" "$log" | tr '\r' '\n' | grep -E "step [0-9]+/[0-9]+ " | tail -1 || true
