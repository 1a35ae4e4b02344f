// The `diffuse` command line.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "diffuse/diffuse.h"

int main(int argc, char** argv) {
  CLI::App app{"diffuse: diffusion models in C++"};
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "Print the version");
  version->callback([] { std::printf("diffuse 0.1.0\n"); });
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
