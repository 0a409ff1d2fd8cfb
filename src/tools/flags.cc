#include "flags.h"

#include <CLI/CLI.hpp>
#include <string_view>

namespace chorus::tools {

bool Flags::Parse(int argc, char** argv, std::string* error) {
  // "--name=" is an empty value (e.g. --metrics= turns the listener off). CLI11 would take the
  // next word instead, so those are set here and kept from it.
  std::vector<char*> args = {argv[0]};
  std::map<std::string, std::string> empty;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.size() > 3 && a.substr(0, 2) == "--" && a.back() == '=' &&
        with_value_.count(std::string(a.substr(2, a.size() - 3)))) {
      empty[std::string(a.substr(2, a.size() - 3))] = "";
      continue;
    }
    args.push_back(argv[i]);
  }
  CLI::App app;
  app.set_help_flag();  // each tool owns --help (a switch) and prints its own usage
  std::map<std::string, std::string> values;
  std::map<std::string, CLI::Option*> options;
  for (const std::string& name : with_value_) {
    options[name] = app.add_option("--" + name, values[name])
                        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  for (const std::string& name : switches_) {
    // --name only: "--json=false" is an error, never a silent "on".
    if (with_value_.count(name) == 0) {
      options[name] = app.add_flag("--" + name)->disable_flag_override();
    }
  }
  std::vector<std::string> positional;
  if (allow_positional_) app.add_option("args", positional);
  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return false;
  }
  values_ = std::move(empty);
  for (const auto& [name, option] : options) {
    if (option->count() == 0) continue;
    values_[name] = with_value_.count(name) ? values[name] : "1";
  }
  positional_ = std::move(positional);
  return true;
}

}  // namespace chorus::tools
