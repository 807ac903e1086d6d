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
// fuzz/fuzz_toml_config, e.g. "gold_rate = 1\uFE3F" or a '+' before a
// quoted non-ASCII string). So toml++ is given ASCII only: a string holding
// non-ASCII text is rewritten as a basic string with \u escapes (the same
// value), non-ASCII in comments becomes '?', and non-ASCII anywhere else
// (never valid TOML) or bytes that are not UTF-8 are an error naming the line.
std::string ascii_toml(const std::string& text, const std::string& source) {
  size_t line = 1;
  auto bad = [&](const char* what) {
    fail(ErrorKind::kConfig, source, ":", line, ": ", what,
         " (TOML allows non-ASCII characters only inside quoted strings and comments)");
  };
  // The code point of the UTF-8 sequence at text[i], advancing i.
  auto code_point = [&](size_t& i) {
    const auto byte = [&](size_t k) { return k < text.size() ? static_cast<unsigned char>(text[k]) : 0u; };
    const unsigned b0 = byte(i);
    const size_t n = b0 >= 0xF0 && b0 < 0xF5 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC2 && b0 < 0xE0 ? 2 : 0;
    if (n == 0) bad("bytes that are not UTF-8");
    uint32_t cp = b0 & (0xFFu >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
      if ((byte(i + k) & 0xC0) != 0x80) bad("bytes that are not UTF-8");
      cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000) || cp < (n == 3 ? 0x800u : n == 4 ? 0x10000u : 0x80u))
      bad("bytes that are not UTF-8");
    i += n;
    return cp;
  };
  auto starts = [&](size_t i, const std::string& s) { return text.compare(i, s.size(), s) == 0; };
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '#') {  // a comment, to the end of its line
      while (i < text.size() && text[i] != '\n') {
        if (static_cast<unsigned char>(text[i]) < 0x80) out.push_back(text[i++]);
        else code_point(i), out.push_back('?');
      }
      continue;
    }
    if (c != '"' && c != '\'') {
      if (static_cast<unsigned char>(c) >= 0x80) bad("a non-ASCII character outside a string");
      line += c == '\n';
      out.push_back(c);
      ++i;
      continue;
    }
    const bool basic = c == '"';
    const std::string quote(starts(i, std::string(3, c)) ? 3 : 1, c);
    size_t end = i + quote.size();
    bool ascii = true;
    while (end < text.size() && !starts(end, quote) && (quote.size() == 3 || text[end] != '\n')) {
      const bool escape = basic && text[end] == '\\' && end + 1 < text.size();
      ascii &= static_cast<unsigned char>(text[end]) < 0x80 &&
               (!escape || static_cast<unsigned char>(text[end + 1]) < 0x80);
      end += escape ? 2 : 1;
    }
    if (ascii) {  // as written
      const size_t stop = std::min(text.size(), end + (starts(end, quote) ? quote.size() : 0));
      for (size_t k = i; k < stop; ++k) line += text[k] == '\n';
      out.append(text, i, stop - i);
      i = stop;
      continue;
    }
    if (!starts(end, quote)) bad("a string that never ends");
    const std::string as_basic(quote.size(), '"');
    out += as_basic;
    for (size_t k = i + quote.size(); k < end;) {
      const unsigned char ch = static_cast<unsigned char>(text[k]);
      if (ch >= 0x80) {
        const uint32_t cp = code_point(k);
        char esc[12];
        std::snprintf(esc, sizeof esc, cp > 0xFFFF ? "\\U%08X" : "\\u%04X", static_cast<unsigned>(cp));
        out += esc;
        continue;
      }
      line += ch == '\n';
      if (basic && ch == '\\') {  // an escape: kept as written, its next character included
        if (k + 1 < end && static_cast<unsigned char>(text[k + 1]) >= 0x80)
          bad("a backslash before a non-ASCII character");
        out.append(text, k, 2);
        line += text[k + 1] == '\n';
        k += 2;
        continue;
      }
      if (!basic && (ch == '\\' || ch == '"')) out.push_back('\\');  // literal text inside a basic string
      out.push_back(static_cast<char>(ch));
      ++k;
    }
    out += as_basic;
    i = end + quote.size();
  }
  return out;
}

}  // namespace

Json toml_string_to_json(const std::string& text, const std::string& source) {
  const std::string guarded = ascii_toml(text, source);
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
