#include "json_util.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <vector>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus::hf {

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view what) {
  // One key set per open object: a repeated key anywhere is an error.
  std::vector<std::set<std::string>> open;
  std::string duplicate;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open.empty()) open.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open.empty() && !open.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(text.begin(), text.end(), callback);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(StrCat(what, ": not valid JSON (", e.what(), ")"));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(StrCat(what, ": duplicate key '", duplicate, "'"));
  }
  return j;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, uint64_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(StrCat(path, ": not found"));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(StrCat(path, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::FailedPreconditionError(
        StrCat(path, ": ", st.st_size, " bytes exceeds the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(static_cast<size_t>(st.st_size), '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(text.size()))) {
    return absl::DataLossError(StrCat(path, ": read failed"));
  }
  return text;
}

absl::StatusOr<Json> ReadJsonFile(const std::string& path, uint64_t max_bytes) {
  CHORUS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, max_bytes));
  return ParseJson(text, path);
}

bool Has(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return false;
  auto it = obj.find(std::string(key));
  return it != obj.end() && !it->is_null();
}

std::string ShortJson(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

namespace {

absl::StatusOr<const Json*> Field(const Json& obj, std::string_view key, std::string_view what) {
  if (!Has(obj, key)) {
    return absl::InvalidArgumentError(StrCat(what, ": missing key '", key, "'"));
  }
  return &*obj.find(std::string(key));
}

absl::Status WrongType(std::string_view what, std::string_view key, const Json& v,
                       std::string_view want) {
  return absl::InvalidArgumentError(
      StrCat(what, ": key '", key, "' is ", v.type_name(), " ", ShortJson(v), ", expected ", want));
}

}  // namespace

absl::StatusOr<int64_t> GetInt(const Json& obj, std::string_view key, int64_t min, int64_t max,
                               std::string_view what) {
  CHORUS_ASSIGN_OR_RETURN(const Json* v, Field(obj, key, what));
  if (!v->is_number_integer()) return WrongType(what, key, *v, "an integer");
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max)) {
    return absl::InvalidArgumentError(
        StrCat(what, ": key '", key, "' = ", ShortJson(*v), " is not in [", min, ", ", max, "]"));
  }
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max) {
    return absl::InvalidArgumentError(
        StrCat(what, ": key '", key, "' = ", x, " is not in [", min, ", ", max, "]"));
  }
  return x;
}

absl::StatusOr<double> GetNumber(const Json& obj, std::string_view key, std::string_view what) {
  CHORUS_ASSIGN_OR_RETURN(const Json* v, Field(obj, key, what));
  if (!v->is_number()) return WrongType(what, key, *v, "a number");
  return v->get<double>();
}

absl::StatusOr<std::string> GetString(const Json& obj, std::string_view key,
                                      std::string_view what) {
  CHORUS_ASSIGN_OR_RETURN(const Json* v, Field(obj, key, what));
  if (!v->is_string()) return WrongType(what, key, *v, "a string");
  return v->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& obj, std::string_view key, std::string_view what) {
  CHORUS_ASSIGN_OR_RETURN(const Json* v, Field(obj, key, what));
  if (!v->is_boolean()) return WrongType(what, key, *v, "true or false");
  return v->get<bool>();
}

}  // namespace chorus::hf
