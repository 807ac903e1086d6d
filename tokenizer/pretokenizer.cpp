#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/error.h"

namespace rlhf {
namespace {

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

struct PreTokenizer::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_data* match = nullptr;
  bool jit = false;

  explicit Impl(const std::string& pattern) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    const std::string& p = pattern.empty() ? std::string(kGpt2Pattern) : pattern;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.c_str()), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset,
                         nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(err, message, sizeof message);
      fail(ErrorKind::kData, "the pre-tokenizer pattern '", p, "' is not a regular expression PCRE2 accepts (at offset ",
           offset, ": ", reinterpret_cast<const char*>(message), ")");
    }
    jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    match = pcre2_match_data_create_from_pattern(code, nullptr);
    RLHF_CHECK(match != nullptr);
  }
  ~Impl() {
    pcre2_match_data_free(match);
    pcre2_code_free(code);
  }
};

PreTokenizer::PreTokenizer(const std::string& pattern) : impl_(std::make_unique<Impl>(pattern)) {}
PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text,
                         const std::function<void(std::string_view)>& emit) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const PCRE2_SIZE length = text.size();
  PCRE2_SIZE pos = 0;
  while (pos < length) {
    int rc = impl_->jit ? pcre2_jit_match(impl_->code, subject, length, pos, 0, impl_->match, nullptr)
                        : pcre2_match(impl_->code, subject, length, pos, 0, impl_->match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      emit(text.substr(pos));  // trailing invalid bytes
      return;
    }
    RLHF_CHECK(rc >= 0, "PCRE2 match failed with code ", rc);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(impl_->match);
    const PCRE2_SIZE start = ov[0];
    const PCRE2_SIZE end = ov[1];
    if (start > pos) emit(text.substr(pos, start - pos));  // invalid UTF-8 gap
    if (end == start) {  // a pattern that can match nothing: take one character and go on
      size_t step = 1;
      while (start + step < length && (static_cast<unsigned char>(text[start + step]) & 0xC0) == 0x80) ++step;
      emit(text.substr(start, step));
      pos = start + step;
      continue;
    }
    emit(text.substr(start, end - start));
    pos = end;
  }
}

}  // namespace rlhf
