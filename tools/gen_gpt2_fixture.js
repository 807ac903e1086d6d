// Produces tests/fixtures/gpt2_parity.json: token ids from the reference
// GPT-2 encoder (npm package gpt-3-encoder, a port of openai/gpt-2's
// encoder.py) for a varied set of texts. Run after scripts/setup.sh:
//   node tools/gen_gpt2_fixture.js > tests/fixtures/gpt2_parity.json
const path = require('path');
const { encode } = require(path.join(__dirname, '..', '.deps', 'gpt-3-encoder'));

const texts = [
  "Hello, world! This is a test of the GPT-2 encoder.",
  "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
  "It's, they're, we've, I'm, you'll, he'd, IT'S, She'S, don't, can't, o'clock",
  "Numbers: 0 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 2024-11-26 10:30pm #1 $19.99 50%",
  "Punctuation!!! ??? ... --- *** ((())) [[]] {{}} <<>> ;;; ::: ''' \"\"\" ``` ~~~ @@@ ### ^^^ &&& ||| \\\\",
  "Whitespace:  two   three    four\ttab\t\ttwo tabs\nnewline\n\nblank line\r\ncrlf   \n  indented\n\n\n",
  "   leading spaces and trailing spaces   ",
  "Accents: café, naïve, résumé, Zürich, São Paulo, Ærøskøbing, Łódź, Dvořák, façade, jalapeño.",
  "Русский текст: Привет, как дела? Ελληνικά: Καλημέρα κόσμε. Українська мова.",
  "中文：你好，世界！这是一个测试。日本語：こんにちは世界、カタカナ。한국어: 안녕하세요 세계.",
  "العربية: مرحبا بالعالم. עברית: שלום עולם. हिन्दी: नमस्ते दुनिया। ไทย: สวัสดีชาวโลก",
  "Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🇯🇵 ❤️ ✨🚀🔥 🤖💬 and text 🙂.",
  "Mixed: abc123def 4ever x86_64 C++17 e=mc² ½ ¾ №5 ① ⅓ ９９ Ⅻ",
  "Code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // done\n  return sum;",
  "URL https://example.com/path?query=1&x=y#frag and email someone@example.org.",
  "Fellow-Citizens of the Senate and House of Representatives: In meeting you again I feel much satisfaction in being able to repeat my congratulations on the favorable prospects which continue to distinguish our public affairs.",
  "<|endoftext|> is only text here, not a special token.",
  "a",
  " ",
  "\n",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "                                                                  many spaces",
  "Hyphen-ated words, em—dash, en–dash, “smart quotes”, ‘single’, «guillemets», …ellipsis",
];

const cases = texts.map(text => ({ text, ids: encode(text) }));
// One case per line keeps diffs readable.
process.stdout.write('{"source": "gpt-3-encoder@1.1.4 (reference GPT-2 encoder)",\n "cases": [\n' +
  cases.map(c => '  ' + JSON.stringify(c)).join(',\n') + '\n]}\n');
