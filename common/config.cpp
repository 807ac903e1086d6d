#include "common/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <toml++/toml.h>

#include "common/fs.h"

namespace rlhf {
namespace {

Json node_to_json(const toml::node& node) {
  if (auto* t = node.as_table()) {
    Json out = Json::object();
    for (auto&& [k, v] : *t) out[std::string(k.str())] = node_to_json(v);
    return out;
  }
  if (auto* a = node.as_array()) {
    Json out = Json::array();
    for (auto&& v : *a) out.push_back(node_to_json(v));
    return out;
  }
  if (auto* v = node.as_string()) return v->get();
  if (auto* v = node.as_integer()) return v->get();
  if (auto* v = node.as_floating_point()) return v->get();
  if (auto* v = node.as_boolean()) return v->get();
  std::ostringstream s;  // dates and times: keep their text
  if (auto* v = node.as_date()) s << *v;
  else if (auto* v = node.as_time()) s << *v;
  else if (auto* v = node.as_date_time()) s << *v;
  return s.str();
}

// Shortest decimal form that reads back as the same double.
std::string format_double(double v) {
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string out = buf;
  if (out.find_first_of(".eEn") == std::string::npos) out += ".0";  // stays a float in TOML
  return out;
}

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string toml_value(const Json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return format_double(v.get<double>());
  if (v.is_string()) return toml_string(v.get<std::string>());
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + toml_value(v[i]);
    return out + "]";
  }
  return toml_string(v.dump());
}

// Writes scalars of `table`, then its sub-tables as [prefix.key] sections,
// in the table's own order.
void emit_table(const Json& table, const std::string& prefix, std::string& out) {
  for (auto it = table.begin(); it != table.end(); ++it) {
    if (!it.value().is_object()) out += it.key() + " = " + toml_value(it.value()) + "\n";
  }
  for (auto it = table.begin(); it != table.end(); ++it) {
    if (!it.value().is_object()) continue;
    const std::string name = prefix.empty() ? it.key() : prefix + "." + it.key();
    out += "\n[" + name + "]\n";
    emit_table(it.value(), name, out);
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cur = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
      prev = cur;
    }
  }
  return row[b.size()];
}

bool parse_bool(const std::string& s, bool& out) {
  if (s == "true" || s == "1" || s == "yes" || s == "on") { out = true; return true; }
  if (s == "false" || s == "0" || s == "no" || s == "off") { out = false; return true; }
  return false;
}

// Parses `text` as the same JSON type as `like`; false if it does not fit.
bool parse_like(const Json& like, const std::string& text, Json& out) {
  try {
    if (like.is_boolean()) {
      bool b;
      if (!parse_bool(text, b)) return false;
      out = b;
    } else if (like.is_number_integer()) {
      size_t used = 0;
      long long v = std::stoll(text, &used);
      if (used != text.size()) return false;
      out = static_cast<int64_t>(v);
    } else if (like.is_number()) {
      size_t used = 0;
      double v = std::stod(text, &used);
      if (used != text.size()) return false;
      out = v;
    } else if (like.is_string()) {
      out = text;
    } else if (like.is_array()) {
      const Json elem = like.empty() ? Json("") : like[0];
      out = Json::array();
      if (text.empty()) return true;
      std::stringstream ss(text);
      std::string part;
      while (std::getline(ss, part, ',')) {
        Json v;
        if (!parse_like(elem, part, v)) return false;
        out.push_back(v);
      }
    } else {
      return false;
    }
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

// toml++ 3.3 (Debian 12) has undefined behaviour when it asks whether a
// non-ASCII character is whitespace (is_non_ascii_horizontal_whitespace
// reaches __builtin_unreachable for most code points; found by
// fuzz/fuzz_toml_config). It asks only outside strings and comments, where
// TOML allows no non-ASCII at all, and after a multi-line string's
// line-ending backslash. So: non-ASCII outside strings and comments is an
// error here, naming the line (TOML allows none there), and a line-ending
// backslash followed by non-ASCII text is applied here (as the spec means
// it: the backslash and the whitespace after it are dropped), so toml++
// never meets either case.
std::string guard_toml_text(const std::string& text, const std::string& source) {
  std::string out;
  out.reserve(text.size());
  size_t line = 1;
  auto bad = [&](const char* what) {
    fail(ErrorKind::kConfig, source, ":", line, ": ", what,
         " (TOML allows non-ASCII characters only inside quoted strings and comments)");
  };
  auto starts = [&](size_t i, const char* s) { return text.compare(i, std::strlen(s), s) == 0; };
  auto is_space = [](char ch) { return ch == ' ' || ch == '\t'; };
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '#') {  // a comment, to the end of its line
      const size_t end = std::min(text.find('\n', i), text.size());
      out.append(text, i, end - i);
      i = end;
      continue;
    }
    if (c != '"' && c != '\'') {
      if (static_cast<unsigned char>(c) >= 0x80) bad("a non-ASCII character outside a string");
      line += c == '\n';
      out.push_back(c);
      ++i;
      continue;
    }
    const bool multi = starts(i, "\"\"\"") || starts(i, "'''");
    const bool basic = c == '"';
    const std::string close(multi ? 3 : 1, c);
    out.append(close);
    i += close.size();
    while (i < text.size() && !starts(i, close.c_str()) && (multi || text[i] != '\n')) {
      if (basic && text[i] == '\\' && i + 1 < text.size()) {
        size_t j = i + 1;
        while (j < text.size() && is_space(text[j])) ++j;
        if (multi && j < text.size() && (text[j] == '\n' || starts(j, "\r\n"))) {
          // A line-ending backslash. toml++ skips the whitespace after it
          // asking of each character whether it is whitespace: when the
          // first one left is non-ASCII, the backslash and the whitespace
          // are dropped here instead (only then, so toml++'s line numbers
          // stay right otherwise).
          size_t k = j, lines = 0;
          while (k < text.size() && (is_space(text[k]) || text[k] == '\n' || text[k] == '\r')) lines += text[k++] == '\n';
          if (k < text.size() && static_cast<unsigned char>(text[k]) >= 0x80) {
            line += lines;
            i = k;
            continue;
          }
        }
        if (static_cast<unsigned char>(text[i + 1]) >= 0x80) bad("a backslash before a non-ASCII character");
        out.append(text, i, 2);  // an escape: its second character is never a closing quote
        i += 2;
        continue;
      }
      line += text[i] == '\n';
      out.push_back(text[i++]);
    }
    if (i < text.size() && starts(i, close.c_str())) {
      out.append(close);
      i += close.size();
    }
  }
  return out;
}

}  // namespace

Json toml_string_to_json(const std::string& text, const std::string& source) {
  const std::string guarded = guard_toml_text(text, source);
  try {
    toml::table table = toml::parse(guarded, source);
    return node_to_json(table);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    fail(ErrorKind::kConfig, source, ":", where.line, ":", where.column,
         ": TOML syntax error: ", e.description());
  }
}

std::string Range::describe() const {
  const bool lo = std::isfinite(min), hi = std::isfinite(max);
  if (lo && hi) return str_cat("between ", min, " and ", max);
  if (lo) return str_cat("at least ", min);
  if (hi) return str_cat("at most ", max);
  return "a number";
}

namespace {

template <class J>
J parse_json_as(std::string_view text, const std::string& source) {
  const typename J::parser_callback_t limit = [&source](int depth, typename J::parse_event_t, J&) {
    if (depth > kMaxJsonDepth) {
      fail(ErrorKind::kData, source, ": JSON nested more than ", kMaxJsonDepth, " levels deep; no file this program ",
           "reads needs that many. Check that it is the file you meant.");
    }
    return true;
  };
  return J::parse(text.begin(), text.end(), limit);
}

}  // namespace

Json parse_json(std::string_view text, const std::string& source) { return parse_json_as<Json>(text, source); }

nlohmann::json parse_json_unordered(std::string_view text, const std::string& source) {
  return parse_json_as<nlohmann::json>(text, source);
}

Json toml_file_to_json(const std::string& path) {
  if (!path_exists(path)) {
    fail(ErrorKind::kConfig, "config file '", path, "' does not exist. ",
         "Pass an existing TOML file (see configs/) or leave --config out for the defaults.");
  }
  return toml_string_to_json(read_file(path), path);
}

std::string json_to_toml(const Json& value) {
  std::string out;
  emit_table(value, "", out);
  return out;
}

void apply_overrides(Json& tree, const std::vector<std::string>& overrides) {
  for (const std::string& raw : overrides) {
    std::string arg = raw;
    if (arg.rfind("--", 0) == 0) arg = arg.substr(2);
    const size_t eq = arg.find('=');
    if (eq == std::string::npos || eq == 0) {
      fail(ErrorKind::kUsage, "cannot read the override '", raw,
           "': write it as --section.key=value, e.g. --train.lr=3e-4");
    }
    const std::string key = arg.substr(0, eq);
    const std::string text = arg.substr(eq + 1);
    Json* node = &tree;
    std::string walked;
    std::stringstream parts(key);
    std::string part;
    while (std::getline(parts, part, '.')) {
      if (!node->is_object() || !node->contains(part)) {
        std::vector<std::string> known;
        if (node->is_object()) {
          for (auto it = node->begin(); it != node->end(); ++it) known.push_back(it.key());
        }
        const std::string hint = closest_key(part, known);
        fail(ErrorKind::kConfig, "unknown config key '", key, "' (from ", raw, ")",
             hint.empty() ? "" : str_cat("; did you mean '", walked, hint, "'?"),
             ". Run `rlhf config <stage>` to list the keys.");
      }
      node = &(*node)[part];
      walked += part + ".";
    }
    if (node->is_object()) {
      fail(ErrorKind::kConfig, "'", key, "' is a section, not a key; override one of its keys, e.g. --",
           key, ".", node->begin().key(), "=...");
    }
    Json parsed;
    if (!parse_like(*node, text, parsed)) {
      fail(ErrorKind::kConfig, "config key '", key, "' (from ", raw, ") must be ",
           node->is_boolean() ? "true or false"
           : node->is_number_integer() ? "an integer"
           : node->is_number() ? "a number"
           : node->is_array() ? "a comma-separated list" : "a string",
           ", not '", text, "'");
    }
    *node = parsed;
  }
}

std::string closest_key(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = std::max<size_t>(2, key.size() / 3) + 1;
  for (const auto& k : known) {
    const size_t d = edit_distance(key, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best;
}

}  // namespace rlhf
