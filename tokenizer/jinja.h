// A Jinja subset: enough of the language to render the chat templates that
// Hugging Face checkpoints ship in tokenizer_config.json ("chat_template"),
// byte for byte as transformers' apply_chat_template renders them (jinja2
// with trim_blocks and lstrip_blocks, raise_exception, tojson, strftime_now,
// and the {% generation %} tag).
//
// Covered: text, {{ }}, {% %}, {# #} with whitespace control; if/elif/else,
// for (with loop.*, `if` filters, else, tuple unpacking, break/continue), set
// (also namespace attributes and {% set x %}...{% endset %}), macro and
// calls, generation; Python-like expressions (literals, lists, dicts,
// arithmetic, comparisons, `in`, `is` tests, `~`, slices, `x if c else y`),
// the string/dict methods templates call and the common filters.
// Anything else is an error naming the construct and the line.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"

namespace rlhf::jinja {

struct Node;

struct Rendered {
  std::string text;
  // Byte ranges of the output produced inside {% generation %} blocks.
  std::vector<std::pair<size_t, size_t>> generation;
};

class Template {
 public:
  // Parses `source`; `origin` (e.g. a file name) prefixes error messages.
  // Syntax errors and unsupported constructs fail here, with the line.
  Template(const std::string& source, std::string origin);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `context` (a JSON object) as the template's variables.
  // raise_exception() in the template fails with its message.
  Rendered render(const Json& context) const;

  bool has_generation_tags() const { return has_generation_; }

 private:
  std::string origin_;
  std::unique_ptr<Node> root_;
  bool has_generation_ = false;
};

// Python's json.dumps(value, ensure_ascii=False, indent=indent) (indent < 0:
// none), which the tojson filter of transformers produces.
std::string python_json(const Json& value, int indent = -1);

}  // namespace rlhf::jinja
