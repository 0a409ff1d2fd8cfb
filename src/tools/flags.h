// Flag parsing for the command-line tools (chorus, chorusd, chorus-run, chorus-mkmodel, the
// benchmarks), on CLI11: --name VALUE or --name=VALUE. Parse errors are one-line messages
// naming the flag; typed getters check ranges and name the flag and the range.
#pragma once

#include <charconv>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chorus::tools {

class Flags {
 public:
  // `with_value`: flags that take a value; `switches`: flags that do not.
  Flags(std::set<std::string> with_value, std::set<std::string> switches)
      : with_value_(std::move(with_value)), switches_(std::move(switches)) {}

  // Parses argv[1..] with CLI11 (flags.cc): --name VALUE or --name=VALUE for `with_value`
  // (the last one given wins), --name for `switches`. On a parse error, *error is CLI11's
  // one-line message naming the flag. Values are checked by the getters below.
  bool Parse(int argc, char** argv, std::string* error);

  // Accept arguments without "--" (collected in order).
  void AllowPositional() { allow_positional_ = true; }
  const std::vector<std::string>& positional() const { return positional_; }

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& def = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }

  // Parses a number in [min, max]; on failure sets *error naming the flag and the range.
  template <typename T>
  bool GetNumber(const std::string& name, T def, T min, T max, T* out, std::string* error) const {
    *out = def;
    if (!Has(name)) return true;
    const std::string s = Get(name);
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !(v >= min && v <= max)) {
      *error = "--" + name + " must be a number in [" + std::to_string(min) + ", " +
               std::to_string(max) + "], got '" + s + "'";
      return false;
    }
    *out = v;
    return true;
  }

 private:
  std::set<std::string> with_value_, switches_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool allow_positional_ = false;
};

}  // namespace chorus::tools
