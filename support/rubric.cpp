#include "support/rubric.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <set>
#include <unordered_set>
#include <sstream>

#include "support/catalog.h"
#include "support/generator.h"

namespace rlhf::support {
namespace {

// Points (docs/rubric.md).
constexpr double kIntent = 4, kOrder = 2, kInventedOrder = -2, kName = 1, kWrongName = -1, kInventedPolicy = -3,
                 kPolite = 1, kRude = -3, kClosing = 1, kGoodLength = 1, kClipped = -2, kRambling = -2,
                 kRepetitive = -2, kEnded = 1, kCutOff = -2, kWrongProduct = -3, kGarbled = -4,
                 kWrongAction = -3;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool contains(const std::string& haystack_lower, const std::string& needle) {
  return haystack_lower.find(lower(needle)) != std::string::npos;
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '\'' || c == '-' || c == '#') {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      out.push_back(w);
      w.clear();
    }
  }
  if (!w.empty()) out.push_back(w);
  return out;
}

// "5-7 business days", "2 more business days", "48 hours", "10%", "1-year"
// -> a normal form like "5-7 business days".
std::vector<std::string> figures(const std::string& text_lower) {
  static const std::regex re(
      R"((\d+(?:\.\d+)?(?:\s*-\s*\d+)?)\s*(?:more\s+)?(business days?|days?|hours?|minutes?|weeks?|months?|%|percent|-?\s*years?))");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text_lower.begin(), text_lower.end(), re); it != std::sregex_iterator(); ++it) {
    std::string number = (*it)[1].str();
    number.erase(std::remove(number.begin(), number.end(), ' '), number.end());
    std::string unit = (*it)[2].str();
    unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
    if (!unit.empty() && unit[0] == '-') unit = unit.substr(1);
    if (unit == "percent") unit = "%";
    if (unit.size() > 1 && unit.back() == 's' && unit != "%") unit.pop_back();  // days -> day
    out.push_back(number + " " + unit);
  }
  return out;
}

std::set<std::string> allowed_figures(const CaseFacts& f) {
  std::set<std::string> out;
  auto add_from = [&](const std::string& text) {
    for (const auto& fig : figures(lower(text))) out.insert(fig);
  };
  if (!f.intent.empty()) {
    for (const auto& a : intent(f.intent).allowed_figures) add_from(a);
  }
  if (const Product* p = find_product(f.product)) add_from(p->answer);
  return out;
}

bool repeats(const std::vector<std::string>& w) {
  std::map<std::string, int> grams;
  for (size_t i = 0; i + 4 < w.size(); ++i) {
    std::string g = w[i] + " " + w[i + 1] + " " + w[i + 2] + " " + w[i + 3] + " " + w[i + 4];
    if (++grams[g] >= 2) return true;
  }
  std::map<std::string, int> tri;
  for (size_t i = 0; i + 2 < w.size(); ++i) {
    if (++tri[w[i] + " " + w[i + 1] + " " + w[i + 2]] >= 3) return true;
  }
  return false;
}

bool addresses_intent(const CaseFacts& f, const std::string& text_lower) {
  if (f.intent == "product_question") {
    const Product* p = find_product(f.product);
    if (p == nullptr) return false;
    return std::all_of(p->fact_words.begin(), p->fact_words.end(),
                       [&](const std::string& w) { return contains(text_lower, w); });
  }
  const Intent& in = intent(f.intent);
  return std::all_of(in.keyword_groups.begin(), in.keyword_groups.end(), [&](const std::vector<std::string>& group) {
    return std::any_of(group.begin(), group.end(), [&](const std::string& k) { return contains(text_lower, k); });
  });
}

// The same 3-word fragment twice within a few words of one sentence ("I'm
// sorry the Tariq, I'm sorry the trouble."): a stutter no person writes.
bool stutters(const std::string& reply) {
  constexpr size_t kWindow = 8;
  size_t begin = 0;
  while (begin < reply.size()) {
    size_t end = reply.find_first_of(".!?", begin);
    if (end == std::string::npos) end = reply.size();
    const std::vector<std::string> w = words_of(reply.substr(begin, end - begin));
    for (size_t i = 0; i + 2 < w.size(); ++i) {
      for (size_t j = i + 1; j <= i + kWindow && j + 2 < w.size(); ++j) {
        if (w[i] == w[j] && w[i + 1] == w[j + 1] && w[i + 2] == w[j + 2]) return true;
      }
    }
    begin = end + 1;
  }
  return false;
}

bool has_digit(const std::string& word) {
  return std::any_of(word.begin(), word.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

// Every word the support generator writes, in any split, with every product
// and name: what a coherent Larkspur reply is made of.
const std::unordered_set<std::string>& lexicon() {
  static const std::unordered_set<std::string> kWords = [] {
    std::unordered_set<std::string> out;
    auto add = [&](const std::string& text) {
      for (const std::string& word : words_of(text)) out.insert(word);
    };
    const SupportData data = generate_support_data(GeneratorConfig());
    for (const auto* split : {&data.train, &data.val, &data.heldout, &data.rl}) {
      for (const Json& row : *split) {
        for (const Json& m : row.contains("messages") ? row["messages"] : row["prompt"]) add(m.value("content", ""));
      }
    }
    for (const Product& p : products()) add(p.name + " " + p.question + " " + p.answer);
    for (bool heldout : {false, true}) {
      for (const auto& n : first_names(heldout)) add(n);
      for (const auto& n : last_names(heldout)) add(n);
    }
    for (const Intent& in : intents()) {
      for (const auto& t : good_reply_templates(in.id)) add(t);
    }
    return out;
  }();
  return kWords;
}

bool named_at_word_boundary(const std::string& text_lower, const std::string& name_lower) {
  for (size_t p = text_lower.find(name_lower); p != std::string::npos; p = text_lower.find(name_lower, p + 1)) {
    const size_t end = p + name_lower.size();
    const bool left = p == 0 || !std::isalnum(static_cast<unsigned char>(text_lower[p - 1]));
    const bool right = end == text_lower.size() || !std::isalnum(static_cast<unsigned char>(text_lower[end]));
    if (left && right) return true;
  }
  return false;
}

// Store actions and the phrases that perform them (docs/rubric.md).
struct ActionPhrases {
  std::string action;
  std::vector<std::string> phrases;
};
const std::vector<ActionPhrases>& action_table() {
  static const std::vector<ActionPhrases> kTable = {
      {"cancel", {"cancelled", "canceled", "cancelling", "canceling"}},
      {"replace", {"replacement", "reship", "replace it", "repair or replace"}},
      {"refund", {"refund"}},
      {"return_label", {"return label"}},
      {"exchange", {"exchange label"}},
      {"address", {"delivery address", "shipping address"}},
      {"investigate", {"investigation", "investigate"}},
      {"warranty", {"warranty"}},
      {"escalate", {"escalated", "supervisor"}},
      {"discount", {"% off", "discount", "can't be combined"}},
      {"invoice", {"invoice"}},
      {"password", {"reset link", "forgot password"}},
      {"payment", {"declined"}},
      {"shipped", {"shipped on", "in transit", "tracking link"}},
  };
  return kTable;
}

}  // namespace

std::vector<std::string> products_named(const std::string& text) {
  const std::string t = lower(text);
  std::vector<std::string> out;
  for (const Product& p : products()) {
    const std::string full = lower(p.name);
    const size_t space = full.find(' ');
    const std::string tail = space == std::string::npos ? full : full.substr(space + 1);
    if (named_at_word_boundary(t, full) || named_at_word_boundary(t, tail)) out.push_back(p.name);
  }
  return out;
}

std::vector<std::string> unknown_words(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& word : words_of(text)) {
    if (!has_digit(word) && !lexicon().count(word)) out.push_back(word);
  }
  return out;
}

std::vector<std::string> actions_in(const std::string& reply) {
  const std::string t = lower(reply);
  std::vector<std::string> out;
  for (const ActionPhrases& a : action_table()) {
    if (std::any_of(a.phrases.begin(), a.phrases.end(), [&](const std::string& p) { return contains(t, p); })) {
      out.push_back(a.action);
    }
  }
  return out;
}

const std::vector<std::string>& actions_for_intent(const std::string& intent_id) {
  static const std::map<std::string, std::vector<std::string>> kAllowed = [] {
    std::map<std::string, std::vector<std::string>> out;
    for (const Intent& in : intents()) {
      std::set<std::string> acts;
      for (const std::string& t : good_reply_templates(in.id)) {
        for (const std::string& a : actions_in(t)) acts.insert(a);
      }
      out[in.id] = {acts.begin(), acts.end()};
    }
    return out;
  }();
  const auto it = kAllowed.find(intent_id);
  if (it == kAllowed.end()) intent(intent_id);  // throws, naming the intent
  return it->second;
}

CaseFacts facts_from_metadata(const Json& m) {
  CaseFacts f;
  if (!m.is_object()) return f;
  // In a two-question conversation the reply answers the second question.
  f.intent = m.value("second_intent", m.value("intent", ""));
  f.first_name = m.value("first_name", "");
  f.order = m.value("order", "");
  f.product = m.value("product", "");
  return f;
}

CaseFacts infer_facts(const std::vector<std::string>& customer_turns) {
  CaseFacts f;
  static const std::regex order_re(R"((?:^|[^\d])(\d{5})(?!\d))");
  for (const std::string& turn : customer_turns) {
    for (auto it = std::sregex_iterator(turn.begin(), turn.end(), order_re); it != std::sregex_iterator(); ++it) {
      f.order = (*it)[1].str();
    }
    std::istringstream words(turn);
    std::string w;
    while (words >> w) {
      while (!w.empty() && !std::isalpha(static_cast<unsigned char>(w.back()))) w.pop_back();
      if (f.first_name.empty() && is_known_first_name(w)) f.first_name = w;
    }
    const std::vector<std::string> named = products_named(turn);
    if (!named.empty()) f.product = named.back();
  }
  return f;
}

double gold_max() { return kIntent + kOrder + kName + kPolite + kClosing + kGoodLength + kEnded; }

GoldScore gold_score(const CaseFacts& f, const std::string& reply, bool finished) {
  GoldScore g;
  const std::string text = lower(reply);
  const std::vector<std::string> w = words_of(reply);
  g.words = static_cast<int>(w.size());

  if (!f.intent.empty()) g.on_intent = addresses_intent(f, text);
  if (g.on_intent) g.total += kIntent;

  static const std::regex five(R"((?:^|[^\d])(\d{5})(?!\d))");
  for (auto it = std::sregex_iterator(reply.begin(), reply.end(), five); it != std::sregex_iterator(); ++it) {
    if (!f.order.empty() && (*it)[1].str() == f.order) g.right_order = true;
    else g.invented_order = true;
  }
  if (g.right_order) g.total += kOrder;
  if (g.invented_order) g.total += kInventedOrder;

  for (const std::string& word : w) {
    std::string cap = word;
    if (!cap.empty()) cap[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(cap[0])));
    if (!f.first_name.empty() && cap == f.first_name) g.used_name = true;
    else if (is_known_first_name(cap)) g.wrong_name = true;
  }
  if (g.used_name) g.total += kName;
  if (g.wrong_name) g.total += kWrongName;

  const std::set<std::string> allowed = allowed_figures(f);
  for (const auto& fig : figures(text)) {
    if (!allowed.count(fig)) g.invented_policy = true;
  }
  if (g.invented_policy) g.total += kInventedPolicy;

  g.polite = std::any_of(polite_phrases().begin(), polite_phrases().end(),
                         [&](const std::string& p) { return contains(text, p); });
  g.rude = std::any_of(rude_phrases().begin(), rude_phrases().end(), [&](const std::string& p) { return contains(text, p); });
  if (g.polite) g.total += kPolite;
  if (g.rude) g.total += kRude;
  for (const char* c : {"anything else", "let me know", "have a great day", "happy to help with"}) {
    if (contains(text, c)) g.closing = true;
  }
  if (g.closing) g.total += kClosing;

  g.clipped = g.words < 6;
  g.rambling = g.words > 100;
  if (g.clipped) g.total += kClipped;
  else if (g.rambling) g.total += kRambling;
  else if (g.words >= 12) g.total += kGoodLength;
  g.repetitive = repeats(w);
  if (g.repetitive) g.total += kRepetitive;

  for (const std::string& p : products_named(reply)) {
    if (p != f.product) g.wrong_product = true;
  }
  if (g.wrong_product) g.total += kWrongProduct;
  g.garbled = stutters(reply) || !unknown_words(reply).empty();
  if (g.garbled) g.total += kGarbled;
  if (!f.intent.empty()) {
    const std::vector<std::string>& allowed = actions_for_intent(f.intent);
    for (const std::string& a : actions_in(reply)) {
      if (std::find(allowed.begin(), allowed.end(), a) == allowed.end()) g.wrong_action = true;
    }
  }
  if (g.wrong_action) g.total += kWrongAction;

  size_t end = reply.find_last_not_of(" \n\t");
  g.ended = finished && end != std::string::npos && std::string(".!?").find(reply[end]) != std::string::npos;
  if (g.ended) g.total += kEnded;
  else if (!finished) g.total += kCutOff;
  return g;
}

Json GoldScore::to_json() const {
  return Json{{"total", total},         {"on_intent", on_intent}, {"right_order", right_order},
              {"invented_order", invented_order}, {"used_name", used_name}, {"wrong_name", wrong_name},
              {"invented_policy", invented_policy}, {"polite", polite}, {"rude", rude},
              {"closing", closing}, {"clipped", clipped}, {"rambling", rambling},
              {"repetitive", repetitive}, {"ended", ended}, {"wrong_product", wrong_product},
              {"garbled", garbled}, {"wrong_action", wrong_action}, {"words", words}};
}

}  // namespace rlhf::support
