// The `diffuse` command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "diffuse/diffuse.h"

int main(int argc, char** argv) {
  CLI::App app{"diffuse: diffusion models in C++"};
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "Print the version");
  version->callback([] { std::printf("diffuse 0.1.0\n"); });
  diffuse::cli::add_info_command(app);
  diffuse::cli::add_convert_command(app);
  diffuse::cli::add_random_weights_command(app);
  diffuse::cli::add_generate_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const diffuse::Error& e) {
    std::fprintf(stderr, "diffuse: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
