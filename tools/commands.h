// Subcommands of the `diffuse` command line; each lives in its own file and registers itself
// on the app from main.cpp.
#pragma once

#include <CLI/CLI.hpp>

namespace diffuse::cli {

// `diffuse info PATH [--tensors]` (info.cpp).
void add_info_command(CLI::App& app);
// `diffuse convert IN OUT [--dtype f16|bf16|f32]` (convert.cpp).
void add_convert_command(CLI::App& app);
// `diffuse generate -m MODEL -p PROMPT ...` (generate.cpp).
void add_generate_command(CLI::App& app);

// `diffuse random-weights CONFIG_OR_FOLDER OUT [--seed N] [--dtype]` (random_weights.cpp).
void add_random_weights_command(CLI::App& app);

}  // namespace diffuse::cli
