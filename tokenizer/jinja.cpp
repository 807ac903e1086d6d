#include "tokenizer/jinja.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <map>

#include "common/error.h"
#include "tokenizer/normalize.h"

namespace rlhf::jinja {
namespace {

// ---------------------------------------------------------------- text helpers

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Lenient: a malformed byte reads as itself.
std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (int k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    out.push_back(cp);
    i += n;
  }
  return out;
}

std::string from_code_points(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) append_utf8(out, cps[i]);
  return out;
}

// Python's str.isspace().
bool py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

// str.strip / lstrip / rstrip, with Python's whitespace or the given chars.
std::string py_strip(const std::string& s, bool left, bool right, const Json* chars) {
  const std::vector<uint32_t> cps = code_points(s);
  std::vector<uint32_t> set;
  if (chars != nullptr && chars->is_string()) set = code_points(chars->get<std::string>());
  auto strip_me = [&](uint32_t c) {
    return chars != nullptr && chars->is_string() ? std::find(set.begin(), set.end(), c) != set.end() : py_space(c);
  };
  size_t b = 0, e = cps.size();
  if (left) while (b < e && strip_me(cps[b])) ++b;
  if (right) while (e > b && strip_me(cps[e - 1])) --e;
  return from_code_points(cps, b, e);
}

std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string s = Json(v).dump();  // shortest round-trip digits, as Python's repr
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string py_repr_string(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(q)) out += std::string("\\") + q;
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

std::string py_repr(const Json& v);

// Python's str(value): what {{ value }} prints.
std::string py_str(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  return py_repr(v);
}

std::string py_repr(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return v.dump();
    case Json::value_t::number_float: return py_float(v.get<double>());
    case Json::value_t::string: return py_repr_string(v.get<std::string>());
    case Json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + py_repr(v[i]);
      return out + "]";
    }
    case Json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        out += (first ? "" : ", ") + py_repr_string(it.key()) + ": " + py_repr(it.value());
        first = false;
      }
      return out + "}";
    }
    default: return v.dump();
  }
}

void python_json_into(std::string& out, const Json& v, int indent, int depth) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  switch (v.type()) {
    case Json::value_t::null: out += "null"; return;
    case Json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case Json::value_t::number_float: {
      const double d = v.get<double>();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : py_float(d);
      return;
    }
    case Json::value_t::string: {
      // ensure_ascii=False: only quotes, backslashes and control characters escape.
      out += Json(v.get<std::string>()).dump(-1, ' ', false, Json::error_handler_t::replace);
      return;
    }
    case Json::value_t::array:
      if (v.empty()) { out += "[]"; return; }
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += item_sep;
        if (indent >= 0) newline(depth + 1);
        python_json_into(out, v[i], indent, depth + 1);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    case Json::value_t::object: {
      if (v.empty()) { out += "{}"; return; }
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(depth + 1);
        python_json_into(out, Json(it.key()), indent, depth + 1);
        out += ": ";
        python_json_into(out, it.value(), indent, depth + 1);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
    }
    default: out += v.dump(); return;
  }
}

// ---------------------------------------------------------------- lexing

// The template split into text and tags, whitespace control applied.
struct Segment {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;  // text, or the inside of the tag
  int line;
};

std::vector<Segment> split_segments(const std::string& src, const std::string& origin) {
  std::vector<Segment> out;
  size_t pos = 0;
  int line = 1;
  bool line_starting = true;  // the previous tag ended a line (or this is the start)
  bool strip_next = false;     // the previous tag ended with '-'
  auto count_lines = [](const std::string& s, size_t b, size_t e) {
    return static_cast<int>(std::count(s.begin() + static_cast<long>(b), s.begin() + static_cast<long>(e), '\n'));
  };
  while (pos <= src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#') {
      open = src.find('{', open + 1);
    }
    if (open != std::string::npos && open + 1 >= src.size()) open = std::string::npos;
    std::string text = src.substr(pos, (open == std::string::npos ? src.size() : open) - pos);
    const int text_line = line;
    line += count_lines(src, pos, pos + text.size());
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
    }
    if (open == std::string::npos) {
      if (!text.empty()) out.push_back({Segment::kText, text, text_line});
      break;
    }
    const char kind = src[open + 1];
    size_t inner = open + 2;
    const bool strip_before = inner < src.size() && src[inner] == '-';
    const bool keep_lstrip = inner < src.size() && src[inner] == '+';
    if (strip_before || keep_lstrip) ++inner;
    if (strip_before) {
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    } else if (kind != '{' && !keep_lstrip) {
      // lstrip_blocks: spaces and tabs from the start of the line to a block tag.
      const size_t nl = text.rfind('\n');
      const size_t from = nl == std::string::npos ? 0 : nl + 1;
      if ((nl != std::string::npos || line_starting) &&
          text.find_first_not_of(" \t", from) == std::string::npos) {
        text.erase(from);
      }
    }
    if (!text.empty()) out.push_back({Segment::kText, text, text_line});
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t end = src.find(close, inner);
    if (kind == '{') {
      // "}}" inside a string literal or a dict literal is not the end of the tag.
      size_t k = inner;
      char quote = 0;
      int depth = 0;
      for (; k + 1 < src.size(); ++k) {
        const char c = src[k];
        if (quote) {
          if (c == '\\') ++k;
          else if (c == quote) quote = 0;
        } else if (c == '\'' || c == '"') {
          quote = c;
        } else if (c == '{' || c == '[' || c == '(') {
          ++depth;
        } else if ((c == ')' || c == ']') && depth > 0) {
          --depth;
        } else if (c == '}' && depth > 0) {
          --depth;
        } else if (c == '}' && src[k + 1] == '}') {
          break;
        }
      }
      end = k + 1 < src.size() ? k : std::string::npos;
    } else if (kind == '%') {
      // Skip "%}" inside string literals.
      size_t k = inner;
      char quote = 0;
      for (; k + 1 < src.size(); ++k) {
        const char c = src[k];
        if (quote) {
          if (c == '\\') ++k;
          else if (c == quote) quote = 0;
        } else if (c == '\'' || c == '"') {
          quote = c;
        } else if (c == '%' && src[k + 1] == '}') {
          break;
        }
      }
      end = k + 1 < src.size() ? k : std::string::npos;
    }
    const int tag_line = line;
    if (end == std::string::npos) {
      fail(ErrorKind::kData, origin, " line ", tag_line, ": the tag opened here is never closed with '", close, "'");
    }
    size_t body_end = end;
    strip_next = body_end > inner && src[body_end - 1] == '-';
    if (strip_next) --body_end;
    const std::string body = src.substr(inner, body_end - inner);
    line += count_lines(src, open, end + 2);
    pos = end + 2;
    line_starting = false;
    if (kind != '{' && !strip_next && pos < src.size()) {
      // trim_blocks: the first newline after a block tag goes.
      if (src[pos] == '\n') {
        ++pos;
        ++line;
        line_starting = true;
      } else if (src[pos] == '\r' && pos + 1 < src.size() && src[pos + 1] == '\n') {
        pos += 2;
        ++line;
        line_starting = true;
      }
    }
    if (kind == '{') out.push_back({Segment::kExpr, body, tag_line});
    else if (kind == '%') out.push_back({Segment::kStmt, body, tag_line});
    if (pos >= src.size()) break;
  }
  return out;
}

struct Token {
  enum Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  Json value;
};

std::vector<Token> lex_expression(const std::string& s, const std::string& where) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::kName, s.substr(i, j - i), {}});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        is_float = true;
        ++j;
        if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      std::string num = s.substr(i, j - i);
      num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
      // Out-of-range literals are the template's error, not a crash (found by fuzz/fuzz_chat_template).
      errno = 0;
      if (is_float) {
        const double v = std::strtod(num.c_str(), nullptr);
        if (errno == ERANGE && std::isinf(v)) fail(ErrorKind::kData, where, ": the number ", num, " is out of range");
        out.push_back({Token::kFloat, num, Json(v)});
      } else {
        const long long v = std::strtoll(num.c_str(), nullptr, 10);
        if (errno == ERANGE) fail(ErrorKind::kData, where, ": the integer ", num, " is out of range");
        out.push_back({Token::kInt, num, Json(static_cast<int64_t>(v))});
      }
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          v += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': v += '\n'; break;
          case 't': v += '\t'; break;
          case 'r': v += '\r'; break;
          case '0': v += '\0'; break;
          case '\\': v += '\\'; break;
          case '\'': v += '\''; break;
          case '"': v += '"'; break;
          case '\n': break;
          case 'x':
          case 'u':
          case 'U': {
            const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (j + n >= s.size()) fail(ErrorKind::kData, where, ": a truncated \\", e, " escape in a string");
            uint32_t code = 0;
            for (size_t k = j + 1; k <= j + n; ++k) {
              const int d = hex_digit(s[k]);
              if (d < 0) fail(ErrorKind::kData, where, ": \\", e, " must be followed by ", n, " hex digits");
              code = code * 16 + static_cast<uint32_t>(d);
            }
            if (code > 0x10FFFF) fail(ErrorKind::kData, where, ": \\", e, " escape beyond Unicode (", code, ")");
            append_utf8(v, code);
            j += n;
            break;
          }
          default: v += '\\'; v += e; break;
        }
      }
      if (j >= s.size()) fail(ErrorKind::kData, where, ": a string literal is never closed");
      out.push_back({Token::kString, v, Json(v)});
      i = j + 1;
    } else {
      static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ".",
                                   ":", "|", "~", "+", "-", "*", "/", "%", "<", ">", "="};
      bool found = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Token::kOp, op, {}});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) fail(ErrorKind::kData, where, ": unexpected character '", std::string(1, c), "'");
    }
  }
  out.push_back({Token::kEnd, "", {}});
  return out;
}

}  // namespace

// ---------------------------------------------------------------- syntax tree

enum class Kind {
  // statements
  kSequence, kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kGeneration, kBreak, kContinue,
  // expressions
  kLiteral, kName, kList, kTuple, kDict, kAttr, kIndex, kSlice, kCall, kFilter, kTest, kUnary, kNot, kBinary,
  kCompare, kAnd, kOr, kCond,
};

// One node type for all; the meaning of text/names/kids per kind:
//   kText: text. kOutput: kids[0]. kIf: kids = cond, body, cond, body, ...
//   (a null cond is the else). kFor: names = targets, kids = iterable, body,
//   filter (or null), else (or null). kSet: names = targets, text = attribute
//   (namespace assignment) or empty, kids[0] = value. kSetBlock: names[0],
//   kids[0] = body. kMacro: text = name, names = parameters, kids[0] = body,
//   kids[1 + i] = default of parameter i (or null). kGeneration: kids[0].
//   kLiteral: value. kName: text. kAttr: kids[0], text = attribute. kIndex:
//   kids[0][kids[1]]. kSlice: kids[0], start, stop, step (each may be null).
//   kCall/kFilter/kTest: text = name (kCall: kids[0] is the callee), the
//   arguments follow in kids with names in `names` ("" for positional);
//   kTest: negated = "is not". kUnary/kBinary/kCompare: text = operator.
//   kCond: kids = then, condition, else (or null).
struct Node {
  Kind kind;
  int line = 0;
  std::string text;
  Json value;
  std::vector<std::string> names;
  std::vector<std::unique_ptr<Node>> kids;
  bool negated = false;
};

namespace {

using NodePtr = std::unique_ptr<Node>;

NodePtr make(Kind kind, int line) {
  auto n = std::make_unique<Node>();
  n->kind = kind;
  n->line = line;
  return n;
}

// ---------------------------------------------------------------- parsing

// Templates come with users' models: nesting (expressions, blocks, macro
// calls) is capped so a hostile one is an error, not a stack overflow
// (found by fuzz/fuzz_chat_template: 1,000 nested '{').
constexpr int kMaxNesting = 100;

// Macro calls nest blocks within blocks, so they get a tighter cap.
constexpr int kMaxMacroDepth = 32;

// Counts one level of nesting while alive; `too_deep` fails past `cap`.
class NestingGuard {
 public:
  template <class TooDeep>
  NestingGuard(int& depth, TooDeep too_deep, int cap = kMaxNesting) : depth_(depth) {
    if (++depth_ > cap) {
      --depth_;
      too_deep();
    }
  }
  ~NestingGuard() { --depth_; }
  NestingGuard(const NestingGuard&) = delete;
  NestingGuard& operator=(const NestingGuard&) = delete;

 private:
  int& depth_;
};

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, std::string where, int line)
      : t_(std::move(tokens)), where_(std::move(where)), line_(line) {}

  [[noreturn]] void error(const std::string& what) const { fail(ErrorKind::kData, where_, ": ", what); }
  [[noreturn]] void too_deep() const { error(str_cat("an expression nested more than ", kMaxNesting, " levels deep")); }

  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool at_op(const char* op) const { return peek().kind == Token::kOp && peek().text == op; }
  bool at_name(const char* n) const { return peek().kind == Token::kName && peek().text == n; }
  bool at_end() const { return peek().kind == Token::kEnd; }
  Token next() { return t_[std::min(i_++, t_.size() - 1)]; }
  void expect_op(const char* op) {
    if (!at_op(op)) error(str_cat("expected '", op, "' but found '", peek().text, "'"));
    ++i_;
  }
  std::string expect_name() {
    if (peek().kind != Token::kName) error(str_cat("expected a name but found '", peek().text, "'"));
    return next().text;
  }
  void expect_end() {
    if (!at_end()) error(str_cat("unexpected '", peek().text, "'"));
  }

  // Each bracket, parenthesis, argument list or chained `not`, sign or
  // `else` is one level of nesting.
  NodePtr expression() {
    const NestingGuard nest(depth_, [this] { too_deep(); });
    return conditional();
  }

  NodePtr conditional() {
    NodePtr v = or_expr();
    while (at_name("if")) {
      next();
      auto n = make(Kind::kCond, line_);
      n->kids.push_back(std::move(v));
      n->kids.push_back(or_expr());
      if (at_name("else")) {
        next();
        const NestingGuard nest(depth_, [this] { too_deep(); });
        n->kids.push_back(conditional());
      } else {
        n->kids.push_back(nullptr);
      }
      v = std::move(n);
    }
    return v;
  }

  // An expression without the trailing `if` of a conditional, for for-loops.
  NodePtr or_expr() {
    NodePtr v = and_expr();
    while (at_name("or")) {
      next();
      v = binary(Kind::kOr, "or", std::move(v), and_expr());
    }
    return v;
  }

 private:
  NodePtr binary(Kind kind, const std::string& op, NodePtr a, NodePtr b) {
    auto n = make(kind, line_);
    n->text = op;
    n->kids.push_back(std::move(a));
    n->kids.push_back(std::move(b));
    return n;
  }

  NodePtr and_expr() {
    NodePtr v = not_expr();
    while (at_name("and")) {
      next();
      v = binary(Kind::kAnd, "and", std::move(v), not_expr());
    }
    return v;
  }

  NodePtr not_expr() {
    if (at_name("not")) {
      next();
      const NestingGuard nest(depth_, [this] { too_deep(); });
      auto n = make(Kind::kNot, line_);
      n->kids.push_back(not_expr());
      return n;
    }
    return compare();
  }

  NodePtr compare() {
    NodePtr v = math1();
    for (;;) {
      std::string op;
      if (peek().kind == Token::kOp &&
          (at_op("==") || at_op("!=") || at_op("<") || at_op(">") || at_op("<=") || at_op(">="))) {
        op = next().text;
      } else if (at_name("in")) {
        next();
        op = "in";
      } else if (at_name("not") && peek(1).kind == Token::kName && peek(1).text == "in") {
        next();
        next();
        op = "not in";
      } else {
        return v;
      }
      v = binary(Kind::kCompare, op, std::move(v), math1());
    }
  }

  // One left-associative level: operands from `operand` joined by any of `ops`.
  template <class Operand>
  NodePtr left_assoc(std::initializer_list<const char*> ops, Operand operand) {
    NodePtr v = operand();
    for (;;) {
      const char* hit = nullptr;
      for (const char* op : ops) hit = hit ? hit : at_op(op) ? op : nullptr;
      if (hit == nullptr) return v;
      next();
      v = binary(Kind::kBinary, hit, std::move(v), operand());
    }
  }

  NodePtr math1() { return left_assoc({"+", "-"}, [this] { return concat(); }); }
  NodePtr concat() { return left_assoc({"~"}, [this] { return math2(); }); }
  NodePtr math2() { return left_assoc({"*", "/", "//", "%"}, [this] { return power(); }); }
  NodePtr power() { return left_assoc({"**"}, [this] { return unary(true); }); }

  NodePtr unary(bool with_filter) {
    NodePtr v;
    if (at_op("-") || at_op("+")) {
      const std::string op = next().text;
      const NestingGuard nest(depth_, [this] { too_deep(); });
      v = make(Kind::kUnary, line_);
      v->text = op;
      v->kids.push_back(unary(false));
    } else {
      v = postfix(primary());
    }
    return with_filter ? filters(std::move(v)) : std::move(v);
  }

  NodePtr primary() {
    const Token tok = next();
    switch (tok.kind) {
      case Token::kString: {
        // Adjacent string literals concatenate.
        std::string s = tok.text;
        while (peek().kind == Token::kString) s += next().text;
        auto n = make(Kind::kLiteral, line_);
        n->value = s;
        return n;
      }
      case Token::kInt:
      case Token::kFloat: {
        auto n = make(Kind::kLiteral, line_);
        n->value = tok.value;
        return n;
      }
      case Token::kName: {
        auto n = make(Kind::kLiteral, line_);
        if (tok.text == "true" || tok.text == "True") n->value = true;
        else if (tok.text == "false" || tok.text == "False") n->value = false;
        else if (tok.text == "none" || tok.text == "None") n->value = nullptr;
        else {
          n->kind = Kind::kName;
          n->text = tok.text;
        }
        return n;
      }
      case Token::kOp:
        if (tok.text == "(") {
          if (at_op(")")) {
            next();
            return make(Kind::kTuple, line_);
          }
          NodePtr first = expression();
          if (!at_op(",")) {
            expect_op(")");
            return first;
          }
          auto n = make(Kind::kTuple, line_);
          n->kids.push_back(std::move(first));
          while (at_op(",")) {
            next();
            if (at_op(")")) break;
            n->kids.push_back(expression());
          }
          expect_op(")");
          return n;
        }
        if (tok.text == "[") {
          auto n = make(Kind::kList, line_);
          while (!at_op("]")) {
            n->kids.push_back(expression());
            if (!at_op(",")) break;
            next();
          }
          expect_op("]");
          return n;
        }
        if (tok.text == "{") {
          auto n = make(Kind::kDict, line_);
          while (!at_op("}")) {
            n->kids.push_back(expression());
            expect_op(":");
            n->kids.push_back(expression());
            if (!at_op(",")) break;
            next();
          }
          expect_op("}");
          return n;
        }
        break;
      default: break;
    }
    error(tok.kind == Token::kEnd ? std::string("the expression ends too early")
                                  : str_cat("unexpected '", tok.text, "'"));
  }

  void call_args(Node& n) {
    expect_op("(");
    while (!at_op(")")) {
      if (peek().kind == Token::kName && peek(1).kind == Token::kOp && peek(1).text == "=") {
        n.names.push_back(next().text);
        next();
      } else {
        n.names.push_back("");
      }
      n.kids.push_back(expression());
      if (!at_op(",")) break;
      next();
    }
    expect_op(")");
  }

  NodePtr postfix(NodePtr v) {
    for (;;) {
      if (at_op(".")) {
        next();
        auto n = make(Kind::kAttr, line_);
        if (peek().kind == Token::kInt) n->text = next().text;
        else n->text = expect_name();
        n->kids.push_back(std::move(v));
        v = std::move(n);
      } else if (at_op("[")) {
        next();
        NodePtr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!at_op(":") && !at_op("]")) parts[k] = expression();
          if (k < 2 && at_op(":")) {
            next();
            is_slice = true;
          } else {
            break;
          }
        }
        expect_op("]");
        auto n = make(is_slice ? Kind::kSlice : Kind::kIndex, line_);
        n->kids.push_back(std::move(v));
        if (!is_slice && !parts[0]) error("an empty subscript []");
        for (int k = 0; k < (is_slice ? 3 : 1); ++k) n->kids.push_back(std::move(parts[k]));
        v = std::move(n);
      } else if (at_op("(")) {
        auto n = make(Kind::kCall, line_);
        n->kids.push_back(std::move(v));
        n->names.push_back("");
        call_args(*n);
        v = std::move(n);
      } else {
        return v;
      }
    }
  }

  NodePtr filters(NodePtr v) {
    for (;;) {
      if (at_op("|")) {
        next();
        auto n = make(Kind::kFilter, line_);
        n->text = expect_name();
        while (at_op(".")) {
          next();
          n->text += "." + expect_name();
        }
        n->kids.push_back(std::move(v));
        n->names.push_back("");
        if (at_op("(")) call_args(*n);
        v = std::move(n);
      } else if (at_name("is")) {
        next();
        auto n = make(Kind::kTest, line_);
        if (at_name("not")) {
          next();
          n->negated = true;
        }
        n->text = expect_name();
        n->kids.push_back(std::move(v));
        n->names.push_back("");
        if (at_op("(")) {
          call_args(*n);
        } else if (peek().kind == Token::kString || peek().kind == Token::kInt || peek().kind == Token::kFloat ||
                   (peek().kind == Token::kName && !at_name("and") && !at_name("or") && !at_name("else") &&
                    !at_name("if") && !at_name("in") && !at_name("not") && !at_name("is"))) {
          n->kids.push_back(postfix(primary()));  // `is divisibleby 3`, `is sameas none`
          n->names.push_back("");
        }
        v = std::move(n);
      } else {
        return v;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  std::string where_;
  int line_;
  int depth_ = 0;
};

class TemplateParser {
 public:
  TemplateParser(std::vector<Segment> segments, const std::string& origin) : s_(std::move(segments)), origin_(origin) {}

  NodePtr parse(bool* has_generation) {
    std::string end;
    NodePtr root = body({}, &end);
    *has_generation = has_generation_;
    return root;
  }

 private:
  std::string where(int line) const { return str_cat(origin_, " line ", line); }

  // Statements until one whose keyword is in `ends` (returned in *end, its
  // parser positioned after the keyword in *rest).
  NodePtr body(const std::vector<std::string>& ends, std::string* end, std::unique_ptr<ExprParser>* rest = nullptr) {
    const int line = i_ < s_.size() ? s_[i_].line : 0;
    const NestingGuard nest(depth_, [&] {
      fail(ErrorKind::kData, where(line), ": blocks nested more than ", kMaxNesting, " levels deep");
    });
    auto seq = make(Kind::kSequence, line);
    while (i_ < s_.size()) {
      const Segment& seg = s_[i_++];
      if (seg.kind == Segment::kText) {
        auto n = make(Kind::kText, seg.line);
        n->text = seg.text;
        seq->kids.push_back(std::move(n));
        continue;
      }
      auto p = std::make_unique<ExprParser>(lex_expression(seg.text, where(seg.line)), where(seg.line), seg.line);
      if (seg.kind == Segment::kExpr) {
        auto n = make(Kind::kOutput, seg.line);
        n->kids.push_back(p->expression());
        p->expect_end();
        seq->kids.push_back(std::move(n));
        continue;
      }
      const std::string kw = p->expect_name();
      if (std::find(ends.begin(), ends.end(), kw) != ends.end()) {
        *end = kw;
        if (rest) *rest = std::move(p);
        else p->expect_end();
        return seq;
      }
      seq->kids.push_back(statement(kw, *p, seg.line));
    }
    if (!ends.empty()) {
      fail(ErrorKind::kData, origin_, ": the template ends inside a block; expected {% ", ends.back(), " %}");
    }
    return seq;
  }

  NodePtr statement(const std::string& kw, ExprParser& p, int line) {
    if (kw == "if") {
      auto n = make(Kind::kIf, line);
      n->kids.push_back(p.expression());
      p.expect_end();
      for (;;) {
        std::string end;
        std::unique_ptr<ExprParser> rest;
        n->kids.push_back(body({"elif", "else", "endif"}, &end, &rest));
        if (end == "endif") {
          rest->expect_end();
          return n;
        }
        if (end == "elif") {
          n->kids.push_back(rest->expression());
        } else {
          n->kids.push_back(nullptr);
        }
        rest->expect_end();
        if (end == "else") {
          std::string end2;
          n->kids.push_back(body({"endif"}, &end2));
          return n;
        }
      }
    }
    if (kw == "for") {
      auto n = make(Kind::kFor, line);
      n->names.push_back(p.expect_name());
      while (p.at_op(",")) {
        p.next();
        n->names.push_back(p.expect_name());
      }
      if (!p.at_name("in")) p.error("expected 'in' in the for statement");
      p.next();
      n->kids.push_back(p.or_expr());
      NodePtr filter;
      if (p.at_name("if")) {
        p.next();
        filter = p.expression();
      }
      if (p.at_name("recursive")) p.error("recursive for-loops are not supported");
      p.expect_end();
      std::string end;
      n->kids.push_back(body({"else", "endfor"}, &end));
      n->kids.push_back(std::move(filter));
      if (end == "else") {
        std::string end2;
        n->kids.push_back(body({"endfor"}, &end2));
      } else {
        n->kids.push_back(nullptr);
      }
      return n;
    }
    if (kw == "set") {
      std::vector<std::string> targets{p.expect_name()};
      std::string attr;
      if (p.at_op(".")) {
        p.next();
        attr = p.expect_name();
      }
      while (p.at_op(",")) {
        p.next();
        targets.push_back(p.expect_name());
      }
      if (p.at_end()) {
        auto n = make(Kind::kSetBlock, line);
        n->names = targets;
        std::string end;
        n->kids.push_back(body({"endset"}, &end));
        return n;
      }
      p.expect_op("=");
      auto n = make(Kind::kSet, line);
      n->names = targets;
      n->text = attr;
      n->kids.push_back(p.expression());
      p.expect_end();
      return n;
    }
    if (kw == "macro") {
      auto n = make(Kind::kMacro, line);
      n->text = p.expect_name();
      std::vector<NodePtr> defaults;
      p.expect_op("(");
      while (!p.at_op(")")) {
        n->names.push_back(p.expect_name());
        if (p.at_op("=")) {
          p.next();
          defaults.push_back(p.expression());
        } else {
          defaults.push_back(nullptr);
        }
        if (!p.at_op(",")) break;
        p.next();
      }
      p.expect_op(")");
      p.expect_end();
      std::string end;
      n->kids.push_back(body({"endmacro"}, &end));
      for (auto& d : defaults) n->kids.push_back(std::move(d));
      return n;
    }
    if (kw == "generation") {
      p.expect_end();
      has_generation_ = true;
      auto n = make(Kind::kGeneration, line);
      std::string end;
      n->kids.push_back(body({"endgeneration"}, &end));
      return n;
    }
    if (kw == "break" || kw == "continue") {
      p.expect_end();
      return make(kw == "break" ? Kind::kBreak : Kind::kContinue, line);
    }
    fail(ErrorKind::kData, where(line), ": the statement {% ", kw,
         " %} is not supported by our Jinja subset (supported: if, for, set, macro, generation, break, "
         "continue); simplify the chat template or pass one with --chat_template");
  }

  std::vector<Segment> s_;
  size_t i_ = 0;
  const std::string& origin_;
  bool has_generation_ = false;
  int depth_ = 0;
};

// ---------------------------------------------------------------- evaluation

struct Val {
  Json j;
  bool undefined = false;
};

Val undefined() { return {Json(), true}; }

bool truthy(const Val& v) {
  if (v.undefined) return false;
  const Json& j = v.j;
  switch (j.type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return j.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return j.get<int64_t>() != 0;
    case Json::value_t::number_float: return j.get<double>() != 0.0;
    case Json::value_t::string:
    case Json::value_t::array:
    case Json::value_t::object: return !j.empty();
    default: return true;
  }
}

const char* type_name(const Val& v) {
  if (v.undefined) return "undefined";
  switch (v.j.type()) {
    case Json::value_t::null: return "none";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "integer";
    case Json::value_t::number_float: return "float";
    case Json::value_t::string: return "string";
    case Json::value_t::array: return "list";
    case Json::value_t::object: return "dict";
    default: return "value";
  }
}

class Renderer {
 public:
  Renderer(const std::string& origin, const Json& context) : origin_(origin) {
    scopes_.emplace_back();
    for (auto it = context.begin(); it != context.end(); ++it) scopes_.back()[it.key()] = it.value();
  }

  void run(const Node& root) { exec(root); }
  Rendered take() { return {std::move(out_), std::move(gen_)}; }

 private:
  [[noreturn]] void error(const Node& n, const std::string& what) const {
    fail(ErrorKind::kData, origin_, " line ", n.line, ": ", what);
  }

  // ------------------------------------------------ statements

  void exec(const Node& n) {
    switch (n.kind) {
      case Kind::kSequence:
        for (const auto& k : n.kids) {
          exec(*k);
          if (loop_control_) return;
        }
        return;
      case Kind::kText: out_ += n.text; return;
      case Kind::kOutput: {
        const Val v = eval(*n.kids[0]);
        if (!v.undefined) out_ += py_str(v.j);
        return;
      }
      case Kind::kIf:
        for (size_t k = 0; k + 1 < n.kids.size(); k += 2) {
          if (!n.kids[k] || truthy(eval(*n.kids[k]))) {
            exec(*n.kids[k + 1]);
            return;
          }
        }
        return;
      case Kind::kFor: exec_for(n); return;
      case Kind::kSet: {
        const Val v = eval(*n.kids[0]);
        if (!n.text.empty()) {
          Json* ns = lookup_mut(n.names[0]);
          if (ns == nullptr || !ns->is_object()) error(n, str_cat("'", n.names[0], "' is not a namespace"));
          (*ns)[n.text] = v.j;
        } else {
          assign(n, n.names, v);
        }
        return;
      }
      case Kind::kSetBlock: {
        std::string saved;
        std::swap(saved, out_);
        exec(*n.kids[0]);
        std::swap(saved, out_);
        scopes_.back()[n.names[0]] = saved;
        return;
      }
      case Kind::kMacro: macros_[n.text] = &n; return;
      case Kind::kGeneration: {
        const size_t start = out_.size();
        exec(*n.kids[0]);
        gen_.emplace_back(start, out_.size());
        return;
      }
      case Kind::kBreak: loop_control_ = 1; return;
      case Kind::kContinue: loop_control_ = 2; return;
      default: error(n, "an expression where a statement was expected");
    }
  }

  void assign(const Node& n, const std::vector<std::string>& names, const Val& v) {
    if (names.size() == 1) {
      if (v.undefined) scopes_.back().erase(names[0]);
      else scopes_.back()[names[0]] = v.j;
      return;
    }
    if (!v.j.is_array() || v.j.size() != names.size()) {
      error(n, str_cat("cannot unpack ", type_name(v), " into ", names.size(), " names"));
    }
    for (size_t k = 0; k < names.size(); ++k) scopes_.back()[names[k]] = v.j[k];
  }

  void exec_for(const Node& n) {
    const Val seq = eval(*n.kids[0]);
    std::vector<Json> items;
    if (seq.j.is_array()) {
      items.assign(seq.j.begin(), seq.j.end());
    } else if (seq.j.is_object()) {
      for (auto it = seq.j.begin(); it != seq.j.end(); ++it) items.emplace_back(it.key());
    } else if (seq.j.is_string()) {
      const auto cps = code_points(seq.j.get<std::string>());
      for (size_t k = 0; k < cps.size(); ++k) items.emplace_back(from_code_points(cps, k, k + 1));
    } else if (!seq.undefined && !seq.j.is_null()) {
      error(n, str_cat("cannot loop over a ", type_name(seq)));
    } else if (seq.j.is_null() && !seq.undefined) {
      error(n, "cannot loop over none");
    }
    if (n.kids[2]) {  // {% for x in xs if cond %}
      std::vector<Json> kept;
      for (const Json& item : items) {
        scopes_.emplace_back();
        assign(n, n.names, {item});
        if (truthy(eval(*n.kids[2]))) kept.push_back(item);
        scopes_.pop_back();
      }
      items.swap(kept);
    }
    if (items.empty()) {
      if (n.kids[3]) exec(*n.kids[3]);
      return;
    }
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      scopes_.emplace_back();
      assign(n, n.names, {items[static_cast<size_t>(k)]});
      Json loop = {{"index", k + 1}, {"index0", k}, {"revindex", len - k}, {"revindex0", len - k - 1},
                   {"first", k == 0}, {"last", k == len - 1}, {"length", len}, {"depth", 1}, {"depth0", 0}};
      if (k > 0) loop["previtem"] = items[static_cast<size_t>(k - 1)];
      if (k + 1 < len) loop["nextitem"] = items[static_cast<size_t>(k + 1)];
      scopes_.back()["loop"] = std::move(loop);
      exec(*n.kids[1]);
      scopes_.pop_back();
      const int control = loop_control_;
      loop_control_ = 0;
      if (control == 1) break;
    }
  }

  Json* lookup_mut(const std::string& name) {
    for (auto s = scopes_.rbegin(); s != scopes_.rend(); ++s) {
      auto it = s->find(name);
      if (it != s->end()) return &it->second;
    }
    return nullptr;
  }

  // ------------------------------------------------ expressions

  Val eval(const Node& n) {
    switch (n.kind) {
      case Kind::kLiteral: return {n.value};
      case Kind::kName: {
        if (const Json* v = lookup_mut(n.text)) return {*v};
        return undefined();
      }
      case Kind::kList:
      case Kind::kTuple: {
        Json a = Json::array();
        for (const auto& k : n.kids) a.push_back(eval(*k).j);
        return {a};
      }
      case Kind::kDict: {
        Json d = Json::object();
        for (size_t k = 0; k + 1 < n.kids.size(); k += 2) {
          const Val key = eval(*n.kids[k]);
          if (!key.j.is_string()) error(n, "dictionary keys must be strings here");
          d[key.j.get<std::string>()] = eval(*n.kids[k + 1]).j;
        }
        return {d};
      }
      case Kind::kAttr: return attribute(n, eval(*n.kids[0]), n.text);
      case Kind::kIndex: return index(n, eval(*n.kids[0]), eval(*n.kids[1]));
      case Kind::kSlice: return slice(n);
      case Kind::kCall: return call(n);
      case Kind::kFilter: return filter(n);
      case Kind::kTest: return {test(n) != n.negated};
      case Kind::kNot: return {!truthy(eval(*n.kids[0]))};
      case Kind::kAnd: {
        Val a = eval(*n.kids[0]);
        return truthy(a) ? eval(*n.kids[1]) : a;
      }
      case Kind::kOr: {
        Val a = eval(*n.kids[0]);
        return truthy(a) ? a : eval(*n.kids[1]);
      }
      case Kind::kCond:
        if (truthy(eval(*n.kids[1]))) return eval(*n.kids[0]);
        return n.kids[2] ? eval(*n.kids[2]) : undefined();
      case Kind::kUnary: {
        const Val v = eval(*n.kids[0]);
        if (!v.j.is_number()) error(n, str_cat("unary ", n.text, " needs a number, not a ", type_name(v)));
        if (n.text == "+") return v;
        if (v.j.is_number_float()) return {Json(-v.j.get<double>())};
        return {Json(-v.j.get<int64_t>())};
      }
      case Kind::kBinary: return binary(n, eval(*n.kids[0]), eval(*n.kids[1]));
      case Kind::kCompare: return {compare(n, eval(*n.kids[0]), eval(*n.kids[1]))};
      default: error(n, "a statement where an expression was expected");
    }
  }

  Val attribute(const Node& n, const Val& obj, const std::string& name) {
    if (obj.undefined) error(n, str_cat("'", name, "' of an undefined value"));
    if (obj.j.is_object()) {
      auto it = obj.j.find(name);
      if (it != obj.j.end()) return {*it};
      return undefined();
    }
    if (obj.j.is_array() && !name.empty() && std::isdigit(static_cast<unsigned char>(name[0]))) {
      errno = 0;
      const long long i = std::strtoll(name.c_str(), nullptr, 10);
      if (errno != ERANGE) return index(n, obj, {Json(static_cast<int64_t>(i))});
    }
    return undefined();
  }

  Val index(const Node& n, const Val& obj, const Val& key) {
    if (obj.undefined) error(n, "subscript of an undefined value");
    if (obj.j.is_object()) {
      if (!key.j.is_string()) return undefined();
      auto it = obj.j.find(key.j.get<std::string>());
      return it == obj.j.end() ? undefined() : Val{*it};
    }
    if (!key.j.is_number_integer()) {
      if (key.j.is_string()) return undefined();
      error(n, str_cat("a ", type_name(obj), " index must be an integer"));
    }
    int64_t k = key.j.get<int64_t>();
    if (obj.j.is_array()) {
      const auto len = static_cast<int64_t>(obj.j.size());
      if (k < 0) k += len;
      if (k < 0 || k >= len) return undefined();
      return {obj.j[static_cast<size_t>(k)]};
    }
    if (obj.j.is_string()) {
      const auto cps = code_points(obj.j.get<std::string>());
      const auto len = static_cast<int64_t>(cps.size());
      if (k < 0) k += len;
      if (k < 0 || k >= len) return undefined();
      return {Json(from_code_points(cps, static_cast<size_t>(k), static_cast<size_t>(k) + 1))};
    }
    error(n, str_cat("cannot index a ", type_name(obj)));
  }

  Val slice(const Node& n) {
    const Val obj = eval(*n.kids[0]);
    auto opt = [&](size_t k, bool* given) -> int64_t {
      *given = false;
      if (!n.kids[k]) return 0;
      const Val v = eval(*n.kids[k]);
      if (v.j.is_null() || v.undefined) return 0;
      if (!v.j.is_number_integer()) error(n, "slice bounds must be integers");
      *given = true;
      return v.j.get<int64_t>();
    };
    bool has_start, has_stop, has_step;
    int64_t start = opt(1, &has_start), stop = opt(2, &has_stop), step = opt(3, &has_step);
    if (!has_step) step = 1;
    if (step == 0) error(n, "slice step cannot be zero");
    std::vector<uint32_t> cps;
    int64_t len;
    if (obj.j.is_array()) len = static_cast<int64_t>(obj.j.size());
    else if (obj.j.is_string()) len = static_cast<int64_t>((cps = code_points(obj.j.get<std::string>())).size());
    else error(n, str_cat("cannot slice a ", type_name(obj)));
    // Python's slice.indices().
    auto clamp = [&](int64_t v, bool given, int64_t dflt) {
      if (!given) return dflt;
      if (v < 0) v += len;
      if (step > 0) return std::clamp<int64_t>(v, 0, len);
      return std::clamp<int64_t>(v, -1, len - 1);
    };
    start = clamp(start, has_start, step > 0 ? 0 : len - 1);
    stop = clamp(stop, has_stop, step > 0 ? len : -1);
    Json list = Json::array();
    std::string str;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      if (obj.j.is_array()) list.push_back(obj.j[static_cast<size_t>(k)]);
      else append_utf8(str, cps[static_cast<size_t>(k)]);
    }
    return obj.j.is_array() ? Val{list} : Val{Json(str)};
  }

  static int64_t as_int(const Json& j) { return j.is_number_float() ? static_cast<int64_t>(j.get<double>()) : j.get<int64_t>(); }

  Val binary(const Node& n, const Val& a, const Val& b) {
    const std::string& op = n.text;
    if (op == "~") return {Json((a.undefined ? "" : py_str(a.j)) + (b.undefined ? "" : py_str(b.j)))};
    if (op == "+") {
      if (a.j.is_string() && b.j.is_string()) return {Json(a.j.get<std::string>() + b.j.get<std::string>())};
      if (a.j.is_array() && b.j.is_array()) {
        Json r = a.j;
        for (const auto& x : b.j) r.push_back(x);
        return {r};
      }
    }
    if (op == "*" && a.j.is_string() && b.j.is_number_integer()) {
      std::string r;
      for (int64_t k = 0; k < b.j.get<int64_t>(); ++k) r += a.j.get<std::string>();
      return {Json(r)};
    }
    if (!a.j.is_number() || !b.j.is_number() || a.undefined || b.undefined) {
      error(n, str_cat("unsupported operand types for ", op, ": ", type_name(a), " and ", type_name(b)));
    }
    const bool ints = a.j.is_number_integer() && b.j.is_number_integer();
    const double x = a.j.get<double>(), y = b.j.get<double>();
    if (op == "/") {
      if (y == 0) error(n, "division by zero");
      return {Json(x / y)};
    }
    if (ints) {
      const int64_t i = a.j.get<int64_t>(), k = b.j.get<int64_t>();
      if (op == "+") return {Json(i + k)};
      if (op == "-") return {Json(i - k)};
      if (op == "*") return {Json(i * k)};
      if (op == "**") return {Json(static_cast<int64_t>(std::llround(std::pow(x, y))))};
      if (k == 0) error(n, "division by zero");
      int64_t q = i / k, r = i % k;
      if (r != 0 && ((r < 0) != (k < 0))) {
        --q;
        r += k;
      }
      return {Json(op == "//" ? q : r)};
    }
    if (op == "+") return {Json(x + y)};
    if (op == "-") return {Json(x - y)};
    if (op == "*") return {Json(x * y)};
    if (op == "**") return {Json(std::pow(x, y))};
    if (y == 0) error(n, "division by zero");
    const double q = std::floor(x / y);
    return {Json(op == "//" ? q : x - q * y)};
  }

  bool compare(const Node& n, const Val& a, const Val& b) {
    const std::string& op = n.text;
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.j.is_string()) {
        if (!a.j.is_string()) error(n, "'in <string>' needs a string on the left");
        found = b.j.get<std::string>().find(a.j.get<std::string>()) != std::string::npos;
      } else if (b.j.is_array()) {
        found = std::find(b.j.begin(), b.j.end(), a.j) != b.j.end();
      } else if (b.j.is_object()) {
        found = a.j.is_string() && b.j.contains(a.j.get<std::string>());
      } else if (!b.undefined) {
        error(n, str_cat("'in' needs a string, list or dict on the right, not a ", type_name(b)));
      }
      return op == "in" ? found : !found;
    }
    if (op == "==") return a.undefined == b.undefined && a.j == b.j;
    if (op == "!=") return !(a.undefined == b.undefined && a.j == b.j);
    const bool both_num = a.j.is_number() && b.j.is_number();
    const bool both_str = a.j.is_string() && b.j.is_string();
    if (!both_num && !both_str) {
      error(n, str_cat("cannot compare a ", type_name(a), " with a ", type_name(b), " using ", op));
    }
    if (op == "<") return a.j < b.j;
    if (op == ">") return b.j < a.j;
    if (op == "<=") return !(b.j < a.j);
    return !(a.j < b.j);
  }

  struct Args {
    std::vector<Val> pos;
    std::map<std::string, Val> kw;
    const Val* get(size_t i, const char* name) const {
      if (i < pos.size()) return &pos[i];
      auto it = kw.find(name);
      return it == kw.end() ? nullptr : &it->second;
    }
  };

  Args args(const Node& n, size_t first) {
    Args a;
    for (size_t k = first; k < n.kids.size(); ++k) {
      if (n.names[k].empty()) a.pos.push_back(eval(*n.kids[k]));
      else a.kw[n.names[k]] = eval(*n.kids[k]);
    }
    return a;
  }

  std::string str_arg(const Node& n, const Args& a, size_t i, const char* name, const std::string& dflt) {
    const Val* v = a.get(i, name);
    if (v == nullptr || v->undefined) return dflt;
    if (!v->j.is_string()) error(n, str_cat("the argument '", name, "' must be a string"));
    return v->j.get<std::string>();
  }

  Val call(const Node& n) {
    const Node& callee = *n.kids[0];
    Args a = args(n, 1);
    if (callee.kind == Kind::kAttr) return method(n, eval(*callee.kids[0]), callee.text, a);
    if (callee.kind != Kind::kName) error(n, "only names and methods can be called");
    const std::string& f = callee.text;
    if (auto it = macros_.find(f); it != macros_.end()) return call_macro(n, *it->second, a);
    if (f == "raise_exception") {
      fail(ErrorKind::kData, origin_, " line ", n.line, ": the chat template refused the conversation: ",
           a.pos.empty() ? std::string() : py_str(a.pos[0].j));
    }
    if (f == "namespace" || f == "dict") {
      Json ns = Json::object();
      for (const auto& [k, v] : a.kw) ns[k] = v.j;
      return {ns};
    }
    if (f == "range") {
      int64_t start = 0, stop = 0, step = 1;
      if (a.pos.size() == 1) stop = as_int(a.pos[0].j);
      else if (a.pos.size() >= 2) {
        start = as_int(a.pos[0].j);
        stop = as_int(a.pos[1].j);
        if (a.pos.size() > 2) step = as_int(a.pos[2].j);
      }
      if (step == 0) error(n, "range() step cannot be zero");
      Json r = Json::array();
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) r.push_back(k);
      return {r};
    }
    if (f == "strftime_now") {
      const std::time_t t = std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char buf[256];
      const size_t len = std::strftime(buf, sizeof buf, str_arg(n, a, 0, "format", "").c_str(), &tm);
      return {Json(std::string(buf, len))};
    }
    error(n, str_cat("the function '", f, "' is not defined (supported: raise_exception, namespace, dict, range, "
                     "strftime_now and the template's macros)"));
  }

  Val call_macro(const Node& n, const Node& macro, const Args& a) {
    const NestingGuard nest(
        macro_depth_,
        [&] {
          error(n, str_cat("macro calls nested more than ", kMaxMacroDepth, " deep (does '", macro.text,
                           "' call itself without end?)"));
        },
        kMaxMacroDepth);
    std::map<std::string, Json> scope;
    for (size_t k = 0; k < macro.names.size(); ++k) {
      const Val* v = a.get(k, macro.names[k].c_str());
      if (v != nullptr) {
        if (!v->undefined) scope[macro.names[k]] = v->j;
      } else if (macro.kids[1 + k]) {
        scope[macro.names[k]] = eval(*macro.kids[1 + k]).j;
      }
    }
    if (a.pos.size() > macro.names.size()) error(n, str_cat("too many arguments for the macro '", macro.text, "'"));
    // A macro sees the template's top-level names and its parameters.
    std::vector<std::map<std::string, Json>> saved_scopes{scopes_.begin() + 1, scopes_.end()};
    scopes_.resize(1);
    scopes_.push_back(std::move(scope));
    std::string saved_out;
    std::swap(saved_out, out_);
    exec(*macro.kids[0]);
    loop_control_ = 0;
    std::swap(saved_out, out_);
    scopes_.resize(1);
    scopes_.insert(scopes_.end(), saved_scopes.begin(), saved_scopes.end());
    return {Json(saved_out)};
  }

  Val method(const Node& n, const Val& obj, const std::string& m, const Args& a) {
    if (obj.j.is_string() && !obj.undefined) {
      const std::string s = obj.j.get<std::string>();
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const Val* chars = a.get(0, "chars");
        return {Json(py_strip(s, m != "rstrip", m != "lstrip", chars ? &chars->j : nullptr))};
      }
      if (m == "startswith" || m == "endswith") {
        const Val* p = a.get(0, "prefix");
        if (p == nullptr) error(n, str_cat(m, "() needs an argument"));
        std::vector<std::string> options;
        if (p->j.is_string()) options.push_back(p->j.get<std::string>());
        else if (p->j.is_array()) for (const auto& x : p->j) options.push_back(x.get<std::string>());
        for (const auto& o : options) {
          if (o.size() > s.size()) continue;
          if (m == "startswith" ? s.compare(0, o.size(), o) == 0 : s.compare(s.size() - o.size(), o.size(), o) == 0) {
            return {Json(true)};
          }
        }
        return {Json(false)};
      }
      if (m == "split" || m == "rsplit") return {split(n, s, a, m == "rsplit")};
      if (m == "upper" || m == "lower") {
        std::string r = s;
        for (char& c : r) c = static_cast<char>(m == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        return {Json(r)};
      }
      if (m == "title" || m == "capitalize") return {Json(titlecase(s, m == "title"))};
      if (m == "replace") {
        const std::string from = str_arg(n, a, 0, "old", ""), to = str_arg(n, a, 1, "new", "");
        return {Json(replace_all(s, from, to))};
      }
      if (m == "find" || m == "count") {
        const std::string sub = str_arg(n, a, 0, "sub", "");
        if (m == "find") {
          const size_t p = s.find(sub);
          return {Json(p == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(s.substr(0, p)).size()))};
        }
        int64_t c = 0;
        for (size_t p = s.find(sub); !sub.empty() && p != std::string::npos; p = s.find(sub, p + sub.size())) ++c;
        return {Json(c)};
      }
      if (m == "join") {
        const Val* items = a.get(0, "iterable");
        std::string r;
        if (items && items->j.is_array()) {
          for (size_t k = 0; k < items->j.size(); ++k) r += (k ? s : "") + py_str(items->j[k]);
        }
        return {Json(r)};
      }
    }
    if (obj.j.is_object() && !obj.undefined) {
      if (m == "items" || m == "keys" || m == "values") {
        Json r = Json::array();
        for (auto it = obj.j.begin(); it != obj.j.end(); ++it) {
          if (m == "items") r.push_back(Json::array({it.key(), it.value()}));
          else if (m == "keys") r.push_back(it.key());
          else r.push_back(it.value());
        }
        return {r};
      }
      if (m == "get") {
        const std::string key = str_arg(n, a, 0, "key", "");
        auto it = obj.j.find(key);
        if (it != obj.j.end()) return {*it};
        const Val* d = a.get(1, "default");
        return d ? *d : Val{Json()};
      }
    }
    error(n, str_cat("the method ", m, "() of a ", type_name(obj), " is not supported by our Jinja subset"));
  }

  Json split(const Node& n, const std::string& s, const Args& a, bool from_right) {
    const Val* sep = a.get(0, "sep");
    const Val* maxv = a.get(1, "maxsplit");
    int64_t maxsplit = maxv && maxv->j.is_number_integer() ? maxv->j.get<int64_t>() : -1;
    Json r = Json::array();
    if (sep == nullptr || sep->j.is_null()) {
      if (from_right && maxsplit >= 0) error(n, "rsplit() with a limit needs a separator");
      // Runs of whitespace separate; no empty strings.
      const auto cps = code_points(s);
      size_t k = 0;
      while (k < cps.size()) {
        while (k < cps.size() && py_space(cps[k])) ++k;
        if (k == cps.size()) break;
        size_t e = k;
        if (maxsplit >= 0 && static_cast<int64_t>(r.size()) == maxsplit) {
          size_t end = cps.size();
          while (end > k && py_space(cps[end - 1])) --end;
          r.push_back(from_code_points(cps, k, end));
          break;
        }
        while (e < cps.size() && !py_space(cps[e])) ++e;
        r.push_back(from_code_points(cps, k, e));
        k = e;
      }
      return r;
    }
    const std::string d = sep->j.get<std::string>();
    if (d.empty()) error(n, "split() with an empty separator");
    std::vector<std::string> parts;
    if (!from_right) {
      size_t start = 0;
      for (size_t p = s.find(d); p != std::string::npos && (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit);
           p = s.find(d, start)) {
        parts.push_back(s.substr(start, p - start));
        start = p + d.size();
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        if (end < d.size()) break;
        const size_t p = s.rfind(d, end - d.size());
        if (p == std::string::npos) break;
        parts.insert(parts.begin(), s.substr(p + d.size(), end - p - d.size()));
        end = p;
      }
      parts.insert(parts.begin(), s.substr(0, end));
    }
    for (auto& p : parts) r.push_back(p);
    return r;
  }

  static std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
    return s;
  }

  static std::string titlecase(const std::string& s, bool every_word) {
    std::string r = s;
    bool start = true;
    for (char& c : r) {
      const auto u = static_cast<unsigned char>(c);
      if (std::isalpha(u)) {
        c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
        start = false;
      } else if (every_word) {
        start = true;
      }
    }
    return r;
  }

  Val filter(const Node& n) {
    const std::string& f = n.text;
    const Val v = eval(*n.kids[0]);
    Args a = args(n, 1);
    if (f == "length" || f == "count") {
      if (v.j.is_string()) return {Json(static_cast<int64_t>(code_points(v.j.get<std::string>()).size()))};
      if (v.j.is_array() || v.j.is_object()) return {Json(static_cast<int64_t>(v.j.size()))};
      error(n, str_cat("the length of a ", type_name(v)));
    }
    if (f == "tojson") {
      const Val* indent = a.get(0, "indent");
      return {Json(python_json(v.j, indent && indent->j.is_number_integer() ? static_cast<int>(indent->j.get<int64_t>()) : -1))};
    }
    if (f == "trim") {
      if (!v.j.is_string()) error(n, str_cat("trim needs a string, not a ", type_name(v)));
      const Val* chars = a.get(0, "chars");
      return {Json(py_strip(v.j.get<std::string>(), true, true, chars ? &chars->j : nullptr))};
    }
    if (f == "string") return {Json(v.undefined ? std::string() : py_str(v.j))};
    if (f == "upper" || f == "lower" || f == "title" || f == "capitalize") {
      return method(n, {Json(v.undefined ? std::string() : py_str(v.j))}, f, a);
    }
    if (f == "replace") return method(n, {Json(py_str(v.j))}, "replace", a);
    if (f == "default" || f == "d") {
      const Val* boolean = a.get(1, "boolean");
      const bool use_default = v.undefined || (boolean && truthy(*boolean) && !truthy(v));
      if (!use_default) return v;
      const Val* d = a.get(0, "default_value");
      return d ? *d : Val{Json("")};
    }
    if (f == "int") {
      if (v.j.is_number()) return {Json(as_int(v.j))};
      if (v.j.is_string()) {
        try {
          return {Json(std::stoll(v.j.get<std::string>()))};
        } catch (const std::exception&) {
        }
      }
      return {Json(int64_t{0})};
    }
    if (f == "float") return {Json(v.j.is_number() ? v.j.get<double>() : 0.0)};
    if (f == "abs") return v.j.is_number_float() ? Val{Json(std::fabs(v.j.get<double>()))} : Val{Json(std::llabs(as_int(v.j)))};
    if (f == "first" || f == "last") {
      if (v.j.is_array()) return v.j.empty() ? undefined() : Val{f == "first" ? v.j.front() : v.j.back()};
      if (v.j.is_string()) {
        const auto cps = code_points(v.j.get<std::string>());
        if (cps.empty()) return undefined();
        return {Json(f == "first" ? from_code_points(cps, 0, 1) : from_code_points(cps, cps.size() - 1, cps.size()))};
      }
      error(n, str_cat("the ", f, " filter needs a list"));
    }
    if (f == "list") {
      if (v.j.is_array()) return v;
      Json r = Json::array();
      if (v.j.is_string()) {
        const auto cps = code_points(v.j.get<std::string>());
        for (size_t k = 0; k < cps.size(); ++k) r.push_back(from_code_points(cps, k, k + 1));
      } else if (v.j.is_object()) {
        for (auto it = v.j.begin(); it != v.j.end(); ++it) r.push_back(it.key());
      }
      return {r};
    }
    if (f == "reverse") {
      if (v.j.is_string()) {
        auto cps = code_points(v.j.get<std::string>());
        std::reverse(cps.begin(), cps.end());
        return {Json(from_code_points(cps, 0, cps.size()))};
      }
      Json r = Json::array();
      for (auto it = v.j.rbegin(); it != v.j.rend(); ++it) r.push_back(*it);
      return {r};
    }
    if (f == "join") {
      const std::string sep = str_arg(n, a, 0, "d", "");
      const std::string attr = str_arg(n, a, 1, "attribute", "");
      std::string r;
      if (!v.j.is_array()) error(n, "join needs a list");
      for (size_t k = 0; k < v.j.size(); ++k) {
        const Json& item = attr.empty() ? v.j[k] : v.j[k].value(attr, Json());
        r += (k ? sep : "") + py_str(item);
      }
      return {Json(r)};
    }
    if (f == "items") return method(n, v, "items", a);
    if (f == "map") {
      const std::string attr = str_arg(n, a, 99, "attribute", "");
      Json r = Json::array();
      if (attr.empty()) {
        if (a.pos.empty()) error(n, "map needs attribute= or a filter name");
        const std::string sub = str_arg(n, a, 0, "filter", "");
        for (const auto& item : v.j) {
          if (sub == "string") r.push_back(py_str(item));
          else if (sub == "trim") r.push_back(py_strip(py_str(item), true, true, nullptr));
          else if (sub == "lower" || sub == "upper") r.push_back(method(n, {Json(py_str(item))}, sub, {}).j);
          else error(n, str_cat("map('", sub, "') is not supported"));
        }
        return {r};
      }
      for (const auto& item : v.j) r.push_back(item.is_object() ? item.value(attr, Json()) : Json());
      return {r};
    }
    if (f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
      const bool by_attr = f == "selectattr" || f == "rejectattr";
      const bool keep_if = f == "selectattr" || f == "select";
      const std::string attr = by_attr ? str_arg(n, a, 0, "attr", "") : "";
      const size_t test_at = by_attr ? 1 : 0;
      const std::string test_name = a.pos.size() > test_at ? a.pos[test_at].j.get<std::string>() : "";
      std::vector<Val> test_args(a.pos.begin() + static_cast<long>(std::min(a.pos.size(), test_at + 1)), a.pos.end());
      Json r = Json::array();
      if (!v.j.is_array()) return {r};
      for (const auto& item : v.j) {
        Val subject = by_attr ? (item.is_object() && item.contains(attr) ? Val{item[attr]} : undefined()) : Val{item};
        const bool pass = test_name.empty() ? truthy(subject) : apply_test(n, test_name, subject, test_args);
        if (pass == keep_if) r.push_back(item);
      }
      return {r};
    }
    if (f == "unique") {
      Json r = Json::array();
      for (const auto& item : v.j) if (std::find(r.begin(), r.end(), item) == r.end()) r.push_back(item);
      return {r};
    }
    if (f == "safe" || f == "e" || f == "escape") {
      if (f == "safe") return v;
      error(n, "the escape filter is not supported (chat templates render without HTML escaping)");
    }
    if (f == "indent") {
      const Val* width = a.get(0, "width");
      const std::string pad(width && width->j.is_number_integer() ? static_cast<size_t>(width->j.get<int64_t>()) : 4, ' ');
      const Val* first = a.get(1, "first");
      std::string s = py_str(v.j), r;
      for (size_t k = 0; k < s.size(); ++k) {
        r += s[k];
        if (s[k] == '\n' && k + 1 < s.size() && s[k + 1] != '\n') r += pad;
      }
      return {Json((first && truthy(*first) ? pad : "") + r)};
    }
    error(n, str_cat("the filter '", f, "' is not supported by our Jinja subset (supported: length, count, tojson, "
                     "trim, string, upper, lower, title, capitalize, replace, default, int, float, abs, first, "
                     "last, list, reverse, join, items, map, select, reject, selectattr, rejectattr, unique, safe, "
                     "indent)"));
  }

  bool test(const Node& n) {
    const Val v = eval(*n.kids[0]);
    std::vector<Val> rest;
    for (size_t k = 1; k < n.kids.size(); ++k) rest.push_back(eval(*n.kids[k]));
    return apply_test(n, n.text, v, rest);
  }

  bool apply_test(const Node& n, const std::string& t, const Val& v, const std::vector<Val>& args) {
    if (t == "defined") return !v.undefined;
    if (t == "undefined") return v.undefined;
    if (v.undefined && t != "none") {
      if (t == "string" || t == "mapping" || t == "iterable" || t == "sequence" || t == "number" ||
          t == "integer" || t == "float" || t == "boolean" || t == "true" || t == "false") {
        return false;
      }
    }
    if (t == "none") return !v.undefined && v.j.is_null();
    if (t == "string") return v.j.is_string();
    if (t == "mapping") return v.j.is_object();
    if (t == "iterable" || t == "sequence") return v.j.is_array() || v.j.is_string() || v.j.is_object();
    if (t == "number") return v.j.is_number();
    if (t == "integer") return v.j.is_number_integer();
    if (t == "float") return v.j.is_number_float();
    if (t == "boolean") return v.j.is_boolean();
    if (t == "true") return v.j.is_boolean() && v.j.get<bool>();
    if (t == "false") return v.j.is_boolean() && !v.j.get<bool>();
    if (t == "odd" || t == "even") {
      if (!v.j.is_number_integer()) error(n, str_cat("'is ", t, "' needs an integer"));
      return (v.j.get<int64_t>() % 2 != 0) == (t == "odd");
    }
    if (t == "divisibleby") {
      if (args.empty() || !args[0].j.is_number_integer() || args[0].j.get<int64_t>() == 0) error(n, "divisibleby needs a non-zero integer");
      return as_int(v.j) % args[0].j.get<int64_t>() == 0;
    }
    if (t == "eq" || t == "equalto" || t == "==" || t == "sameas") return !args.empty() && v.j == args[0].j;
    if (t == "ne" || t == "!=") return !args.empty() && v.j != args[0].j;
    if (t == "in") {
      if (args.empty()) error(n, "'is in' needs a container");
      Node op = {};
      op.kind = Kind::kCompare;
      op.line = n.line;
      op.text = "in";
      return compare(op, v, args[0]);
    }
    if (t == "lower" || t == "upper") {
      if (!v.j.is_string()) return false;
      const std::string s = v.j.get<std::string>();
      return std::none_of(s.begin(), s.end(), [&](char c) {
        return t == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c));
      });
    }
    error(n, str_cat("the test 'is ", t, "' is not supported by our Jinja subset"));
  }

  const std::string& origin_;
  std::vector<std::map<std::string, Json>> scopes_;
  std::map<std::string, const Node*> macros_;
  std::string out_;
  int macro_depth_ = 0;
  std::vector<std::pair<size_t, size_t>> gen_;
  int loop_control_ = 0;  // 1: break, 2: continue
};

}  // namespace

std::string python_json(const Json& value, int indent) {
  std::string out;
  python_json_into(out, value, indent, 0);
  return out;
}

Template::Template(const std::string& source, std::string origin) : origin_(std::move(origin)) {
  // jinja2's keep_trailing_newline=False: one newline at the very end goes.
  // and, as jinja2's lexer does, every "\r\n" or "\r" reads as "\n".
  std::string text;
  text.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] != '\r') {
      text += source[i];
    } else {
      text += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  TemplateParser parser(split_segments(text, origin_), origin_);
  root_ = parser.parse(&has_generation_);
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

Rendered Template::render(const Json& context) const {
  Renderer r(origin_, context);
  r.run(*root_);
  return r.take();
}

}  // namespace rlhf::jinja
