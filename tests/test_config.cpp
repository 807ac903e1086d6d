// Typed configs: TOML + overrides, strict keys and types, round trip.
#include <gtest/gtest.h>

#include "common/config.h"
#include "common/fs.h"
#include "common/jsonl.h"
#include "test_util.h"

namespace rlhf {
namespace {

using test::error_of;

struct Inner {
  double lr = 1e-3;
  std::vector<std::string> names = {"a"};
  template <class V> void visit(V& v) {
    v("lr", lr);
    v("names", names);
  }
};
struct Outer {
  std::string out = "runs/x";
  int steps = 10;
  bool flag = false;
  Inner inner;
  template <class V> void visit(V& v) {
    v("out", out);
    v("steps", steps);
    v("flag", flag);
    v.section("inner", inner);
  }
};

TEST(Config, LoadsTomlThenOverrides) {
  test::TempDir dir("cfg");
  write_file_atomic(dir.file("c.toml"), "steps = 5\n[inner]\nlr = 0.5\nnames = [\"x\", \"y\"]\n");
  Outer c = load_config<Outer>(dir.file("c.toml"), {"--steps=7", "--inner.names=p,q,r", "--flag=true"});
  EXPECT_EQ(c.steps, 7);
  EXPECT_DOUBLE_EQ(c.inner.lr, 0.5);
  EXPECT_EQ(c.inner.names, (std::vector<std::string>{"p", "q", "r"}));
  EXPECT_TRUE(c.flag);
  EXPECT_EQ(c.out, "runs/x");
}

TEST(Config, UnknownKeysAndWrongTypesNameTheKey) {
  test::TempDir dir("cfgbad");
  write_file_atomic(dir.file("a.toml"), "[inner]\nlrr = 0.5\n");
  std::string msg = error_of([&] { load_config<Outer>(dir.file("a.toml"), {}); });
  EXPECT_NE(msg.find("inner.lrr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'inner.lr'"), std::string::npos) << msg;
  write_file_atomic(dir.file("b.toml"), "steps = \"ten\"\n");
  msg = error_of([&] { load_config<Outer>(dir.file("b.toml"), {}); });
  EXPECT_NE(msg.find("'steps'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b.toml"), std::string::npos) << msg;
  msg = error_of([&] { load_config<Outer>("", {"--inner.nope=1"}); });
  EXPECT_NE(msg.find("inner.nope"), std::string::npos) << msg;
  msg = error_of([&] { load_config<Outer>("", {"--steps=1.5"}); });
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
  write_file_atomic(dir.file("c.toml"), "steps = [\n");
  msg = error_of([&] { load_config<Outer>(dir.file("c.toml"), {}); });
  EXPECT_NE(msg.find("c.toml:"), std::string::npos) << msg;
  msg = error_of([&] { load_config<Outer>(dir.file("missing.toml"), {}); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(Config, ResolvedConfigRoundTripsThroughToml) {
  Outer c;
  c.inner.lr = 0.1 + 0.2;  // not exactly representable in short decimal
  c.inner.names = {"quote\"d", "tab\t"};
  c.steps = 42;
  const std::string text = json_to_toml(config_to_json(c));
  Outer back;
  config_from_json(toml_string_to_json(text, "roundtrip"), "roundtrip", back);
  EXPECT_EQ(back.inner.lr, c.inner.lr);
  EXPECT_EQ(back.inner.names, c.inner.names);
  EXPECT_EQ(back.steps, 42);
}

// JSON 200,000 levels deep crashed `labels import` and the safetensors
// reader (issue "Hardening"): nesting is capped while parsing.
TEST(Json, DeepNestingIsAClearErrorNeverACrash) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  const std::string msg = error_of([&] { parse_json(deep, "hostile.json"); });
  EXPECT_NE(msg.find("hostile.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nested more than 128 levels"), std::string::npos) << msg;
  const std::string fine = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_EQ(parse_json(fine, "fine.json").size(), 1u);
  EXPECT_THROW(parse_json("{\"a\": [1, 2", "cut.json"), nlohmann::json::parse_error);

  test::TempDir dir("deepjsonl");
  const std::string path = dir.file("pairs.jsonl");
  write_file_atomic(path, "{\"prompt\": \"hi\"}\n{\"prompt\": " + deep + "}\n");
  const std::string line_msg = error_of([&] { read_jsonl(path, [](const Json&, size_t) {}); });
  EXPECT_NE(line_msg.find("pairs.jsonl:2"), std::string::npos) << line_msg;
}

// toml++ 3.3 reached __builtin_unreachable on "gold_rate = 1\uFE3F" and on
// most non-ASCII characters where it expects whitespace (found by
// fuzz/fuzz_toml_config; the input is in fuzz/corpus). Non-ASCII is kept
// inside strings and comments, and is an error naming the line elsewhere.
TEST(Config, NonAsciiOutsideStringsIsAClearErrorAndInsideIsKept) {
  const std::string where = error_of([] { toml_string_to_json("a = 1\ngold_rate = 1\xef\xb8\xbf\n", "c.toml"); });
  EXPECT_NE(where.find("c.toml:2: a non-ASCII character outside a string"), std::string::npos) << where;
  EXPECT_NE(error_of([] { toml_string_to_json("x = 1\xc3\xa9\n", "c.toml"); }).find("c.toml:1"), std::string::npos);
  EXPECT_NE(error_of([] { toml_string_to_json("x = \"\\\xc3\xa9\"\n", "c.toml"); }).find("backslash"),
            std::string::npos);
  const Json ok = toml_string_to_json(
      "# caf\xc3\xa9 \xef\xb8\xbf\nname = \"caf\xc3\xa9 \xef\xb8\xbf\"\nlit = 'x\xc3\xa9'\n"
      "multi = \"\"\"one \\\n    \xc3\xa9t\xc3\xa9\"\"\"\nplain = \"\"\"a \\\n  b\"\"\"\n",
      "ok.toml");
  EXPECT_EQ(ok["name"], "caf\xc3\xa9 \xef\xb8\xbf");
  EXPECT_EQ(ok["lit"], "x\xc3\xa9");
  EXPECT_EQ(ok["multi"], "one \xc3\xa9t\xc3\xa9") << "a line-ending backslash drops the whitespace after it";
  EXPECT_EQ(ok["plain"], "a b");
  // Found by the 10-minute run: toml++ reads a quoted value after '+' as a number.
  EXPECT_NE(error_of([] { toml_string_to_json("db = +\"x\xc8\x9a\"\n", "c.toml"); }).find("c.toml"),
            std::string::npos);
  EXPECT_NE(error_of([] { toml_string_to_json("x = \"\xff\"\n", "c.toml"); }).find("not UTF-8"), std::string::npos);
  EXPECT_EQ(toml_string_to_json("q = '\xc3\xa9 \"\\ \xf0\x9f\x98\x80'\n", "ok.toml")["q"],
            "\xc3\xa9 \"\\ \xf0\x9f\x98\x80")
      << "a literal string keeps quotes and backslashes when rewritten";
}

}  // namespace
}  // namespace rlhf
