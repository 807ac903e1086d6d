// Typed configuration: one plain struct per stage, loaded from a TOML file
// plus `--key=value` overrides. Unknown keys and wrong types are errors that
// name the key and the source; the resolved config is saved with the run.
//
// A config struct lists its fields once, in visit():
//
//   struct TrainConfig {
//     double lr = 6e-4;   // peak learning rate, e.g. 6e-4
//     ModelConfig model;  // [model] section
//     template <class V> void visit(V& v) {
//       v("lr", lr);
//       v.section("model", model);
//     }
//   };
//
// Field types: bool, int, int64_t, double, float, std::string,
// std::vector<std::string>, std::vector<int>, std::vector<double>.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace rlhf {

using Json = nlohmann::ordered_json;

// Parses a TOML file into JSON (tables -> objects). Syntax errors name the
// file, line and column.
Json toml_file_to_json(const std::string& path);

// JSON from outside (files, the network, the label store) nests at most this
// deep: HF configs and tokenizer.json need 5 or 6, chat messages 4.
inline constexpr int kMaxJsonDepth = 128;
// Json::parse with a depth limit checked while parsing, before the deep value
// is built (a hostile "[[[[..." 200,000 deep would otherwise overflow the
// stack when copied or printed). Bad JSON throws what Json::parse throws (a
// nlohmann::json::exception: parse_error, or out_of_range for a number such
// as 1e400); nesting deeper than kMaxJsonDepth is a data error naming
// `source`.
Json parse_json(std::string_view text, const std::string& source);
// The same into a map-backed JSON value: key order is lost, but an object of
// n keys parses in O(n log n) instead of ordered_json's O(n^2) (a 128k-token
// vocabulary: 0.5 s instead of 11 s).
nlohmann::json parse_json_unordered(std::string_view text, const std::string& source);
Json toml_string_to_json(const std::string& text, const std::string& source);
// Renders a JSON object of sections and scalars as TOML.
std::string json_to_toml(const Json& value);

// Applies `--a.b=value` strings to `tree`, parsing each value as the type the
// key already has in `tree`. Unknown keys are errors.
void apply_overrides(Json& tree, const std::vector<std::string>& overrides);

// Closest key among `known` (for "did you mean" hints); empty if none close.
std::string closest_key(const std::string& key, const std::vector<std::string>& known);

namespace config_detail {

template <class T> struct Kind;
template <> struct Kind<bool> { static constexpr const char* name = "a boolean"; };
template <> struct Kind<int> { static constexpr const char* name = "an integer"; };
template <> struct Kind<int64_t> { static constexpr const char* name = "an integer"; };
template <> struct Kind<double> { static constexpr const char* name = "a number"; };
template <> struct Kind<float> { static constexpr const char* name = "a number"; };
template <> struct Kind<std::string> { static constexpr const char* name = "a string"; };

template <class T>
bool read_scalar(const Json& j, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) return false;
    out = j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!j.is_number_integer()) return false;
    const int64_t v = j.get<int64_t>();
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
      return false;
    }
    out = static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!j.is_number()) return false;
    out = j.get<T>();
  } else {
    if (!j.is_string()) return false;
    out = j.get<std::string>();
  }
  return true;
}

}  // namespace config_detail

// A numeric field's allowed values, checked when a config is read, before
// any stage runs or writes: v("batch_size", batch_size, Range::at_least(1)).
struct Range {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  static Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity()}; }
  static Range between(double lo, double hi) { return {lo, hi}; }
  bool contains(double v) const { return v >= min && v <= max; }
  std::string describe() const;  // "at least 1", "between 0 and 1"
};

// Writes a config struct into JSON (the order of visit()).
class ConfigWriter {
 public:
  template <class T>
  void operator()(const char* key, const T& field) {
    out_[key] = field;
  }
  template <class T>
  void operator()(const char* key, const T& field, Range) {
    out_[key] = field;
  }
  template <class S>
  void section(const char* key, const S& sub) {
    ConfigWriter w;
    const_cast<S&>(sub).visit(w);
    out_[key] = w.out_;
  }
  Json out_ = Json::object();
};

// Reads a config struct from JSON, rejecting unknown keys and wrong types.
class ConfigReader {
 public:
  ConfigReader(const Json& in, std::string source, std::string prefix = "")
      : in_(in), source_(std::move(source)), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, T& field) {
    known_.push_back(key);
    auto it = in_.find(key);
    if (it == in_.end()) return;
    if (!read_value(*it, field)) {
      fail(ErrorKind::kConfig, "config key '", prefix_, key, "' in ", source_,
           " must be ", kind_name(field), ", not ", it->dump(),
           ". Fix the value or remove the key to use the default.");
    }
  }

  template <class T>
  void operator()(const char* key, T& field, Range range) {
    (*this)(key, field);
    check_range(key, field, range);
  }

  template <class S>
  void section(const char* key, S& sub) {
    known_.push_back(key);
    auto it = in_.find(key);
    if (it == in_.end()) return;
    if (!it->is_object()) {
      fail(ErrorKind::kConfig, "config key '", prefix_, key, "' in ", source_,
           " must be a table ([", prefix_, key, "]), not ", it->dump());
    }
    ConfigReader r(*it, source_, str_cat(prefix_, key, "."));
    sub.visit(r);
    r.finish();
  }

  // Call after visit(): any key the struct does not have is an error.
  void finish() const {
    for (auto it = in_.begin(); it != in_.end(); ++it) {
      if (std::find(known_.begin(), known_.end(), it.key()) != known_.end()) continue;
      const std::string hint = closest_key(it.key(), known_);
      fail(ErrorKind::kConfig, "unknown config key '", prefix_, it.key(), "' in ",
           source_, hint.empty() ? "" : str_cat(" (did you mean '", prefix_, hint, "'?)"),
           ". Remove it or check the spelling against `rlhf config <stage>`.");
    }
  }

 private:
  template <class T>
  static bool read_value(const Json& j, T& out) {
    return config_detail::read_scalar(j, out);
  }
  template <class T>
  static bool read_value(const Json& j, std::vector<T>& out) {
    if (!j.is_array()) return false;
    std::vector<T> values(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      if (!config_detail::read_scalar(j[i], values[i])) return false;
    }
    out = std::move(values);
    return true;
  }
  template <class T>
  void check_range(const char* key, const T& value, Range range) const {
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      if (!range.contains(static_cast<double>(value))) {
        fail(ErrorKind::kConfig, "config key '", prefix_, key, "' in ", source_, " must be ", range.describe(),
             ", not ", value, ". Fix the value or remove the key to use the default.");
      }
    }
  }
  template <class T>
  void check_range(const char* key, const std::vector<T>& values, Range range) const {
    for (const T& v : values) check_range(key, v, range);
  }

  template <class T>
  static std::string kind_name(const T&) { return config_detail::Kind<T>::name; }
  template <class T>
  static std::string kind_name(const std::vector<T>&) {
    return str_cat("a list of ", config_detail::Kind<T>::name, "s");
  }

  const Json& in_;
  std::string source_;
  std::string prefix_;
  std::vector<std::string> known_;
};

template <class Cfg>
Json config_to_json(const Cfg& cfg) {
  ConfigWriter w;
  const_cast<Cfg&>(cfg).visit(w);
  return w.out_;
}

// Fills `cfg` from `tree` (strict). `source` names where the tree came from.
template <class Cfg>
void config_from_json(const Json& tree, const std::string& source, Cfg& cfg) {
  if (!tree.is_object()) fail(ErrorKind::kConfig, source, ": the config must be a table");
  ConfigReader r(tree, source);
  cfg.visit(r);
  r.finish();
}

// Defaults, then the TOML file (if `path` is not empty), then overrides.
template <class Cfg>
Cfg load_config(const std::string& path, const std::vector<std::string>& overrides,
                Cfg cfg = Cfg()) {
  if (!path.empty()) config_from_json(toml_file_to_json(path), path, cfg);
  if (!overrides.empty()) {
    Json tree = config_to_json(cfg);
    apply_overrides(tree, overrides);
    config_from_json(tree, "the command line", cfg);
  }
  return cfg;
}

}  // namespace rlhf
