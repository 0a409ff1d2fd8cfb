#include "flags.h"

#include <CLI/CLI.hpp>

namespace chorus::tools {

bool Flags::Parse(int argc, char** argv, std::string* error) {
  CLI::App app;
  app.set_help_flag();  // each tool owns --help (a switch) and prints its own usage
  std::map<std::string, std::string> values;
  std::map<std::string, CLI::Option*> options;
  for (const std::string& name : with_value_) {
    options[name] = app.add_option("--" + name, values[name])
                        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  for (const std::string& name : switches_) {
    if (with_value_.count(name) == 0) options[name] = app.add_flag("--" + name);
  }
  std::vector<std::string> positional;
  if (allow_positional_) app.add_option("args", positional);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return false;
  }
  for (const auto& [name, option] : options) {
    if (option->count() == 0) continue;
    values_[name] = with_value_.count(name) ? values[name] : "1";
  }
  positional_ = std::move(positional);
  return true;
}

}  // namespace chorus::tools
