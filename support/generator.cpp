#include "support/generator.h"

#include <map>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "support/catalog.h"

namespace rlhf::support {
namespace {

using Strings = std::vector<std::string>;

// What customers write, per intent. {oref}: an order reference as customers
// write it ("order #48213", "order number 48213"); {product}; {date}.
struct CustomerTemplates {
  Strings with_order;     // training phrasings that give the order number
  Strings without_order;  // training phrasings without it (the agent asks)
  Strings heldout;        // phrasings reserved for held-out prompts
};

const std::map<std::string, CustomerTemplates>& customer_templates() {
  static const std::map<std::string, CustomerTemplates> kT = {
      {"order_status",
       {{"Where is {oref}? I ordered a {product} on {date}.", "Can you tell me the status of {oref}?",
         "I placed {oref} on {date} and it still hasn't arrived. Has it shipped?",
         "Any update on my {product}? It's {oref}.", "When will {oref} get here?"},
        {"Where is my {product}? I ordered it on {date}.", "Has my order shipped yet?"},
        {"I'm wondering what's going on with {oref}, has it shipped yet?",
         "Could you check where my {product} is? That's {oref}, and nothing has arrived."}}},
      {"refund_status",
       {{"I returned my {product} from {oref}. When do I get my refund?", "Has the refund for {oref} been processed?",
         "I'm still waiting for my money back for {oref}.", "Where is my refund? It's for {oref}, the {product}."},
        {"I sent back my {product} last week. Where is my refund?", "When will I get my money back?"},
        {"The refund for {oref} hasn't come back to my card yet. What's happening?",
         "Is my refund on {oref} on its way? I returned the {product}."}}},
      {"return_item",
       {{"I'd like to return the {product} from {oref}.", "How do I send back the {product}? It's {oref}.",
         "The {product} from {oref} isn't what I wanted. Can I return it?", "Can I return {oref}? I bought it on {date}."},
        {"I want to return my {product}. How does that work?", "Can I send something back?"},
        {"I changed my mind about the {product} in {oref} and would like to return it.",
         "What's the process for returning {oref}?"}}},
      {"damaged_item",
       {{"My {product} from {oref} arrived broken.", "The {product} in {oref} came damaged. What can you do?",
         "{oref} arrived today and the {product} is cracked.", "The box for {oref} was crushed and the {product} is damaged."},
        {"My {product} arrived damaged.", "The item I received is broken."},
        {"Unfortunately the {product} from {oref} was damaged when I opened the box.",
         "I just unpacked {oref} and the {product} is broken."}}},
      {"wrong_item",
       {{"I ordered a {product} but {oref} had something else in it.", "You sent me the wrong item for {oref}.",
         "{oref} should have been a {product}, but I got a different product.", "The item in {oref} isn't the {product} I ordered."},
        {"I received the wrong item.", "This isn't the {product} I ordered."},
        {"Instead of the {product}, {oref} contained the wrong item.",
         "Somebody packed the wrong item in {oref}; I was expecting a {product}."}}},
      {"shipping_delay",
       {{"{oref} was supposed to arrive by {date} and it's late.", "Why is {oref} taking so long?",
         "My {product} is delayed. It's {oref}.", "{oref} still hasn't come and the delivery date was {date}."},
        {"My delivery is late.", "Why is my {product} taking so long to arrive?"},
        {"The delivery estimate for {oref} was {date} and it's still late. Why the delay?",
         "I've been waiting ages for {oref}, it's late and way past {date}."}}},
      {"missing_package",
       {{"Tracking says {oref} was delivered but I never got it.", "{oref} shows as delivered on {date}, but there's no package.",
         "My {product} from {oref} is marked delivered but it isn't here.", "I can't find {oref} anywhere, but it says delivered."},
        {"My package says delivered but it isn't here.", "I never received my {product} even though it says delivered."},
        {"The app claims {oref} was delivered on {date}, but nothing is at my door.",
         "{oref} is marked delivered, yet I have no {product}."}}},
      {"address_change",
       {{"Can I change the delivery address on {oref}?", "I moved. Please update the shipping address for {oref}.",
         "I typed the wrong address on {oref}. Can you fix it?", "Please send {oref} to my new address."},
        {"I need to change my delivery address.", "Can you update the address on my order?"},
        {"Is it still possible to change the address on {oref}?",
         "I'd like {oref} to go to my office address instead."}}},
      {"cancel_order",
       {{"Please cancel {oref}.", "I want to cancel {oref}, I ordered it by mistake.",
         "Can I still cancel {oref}? I placed it on {date}.", "Cancel my {product}, please. It's {oref}."},
        {"I need to cancel my order.", "Please cancel the {product} I just ordered."},
        {"I no longer need the {product}; could you cancel {oref}?", "Please cancel {oref}, I found it elsewhere."}}},
      {"password_reset",
       {{"I forgot my password.", "How do I reset my password?", "I can't log in to my account.",
         "My password isn't working anymore."},
        {},
        {"I'm locked out of my Larkspur account and don't remember the password.",
         "Signing in keeps failing; I think I need to reset my password."}}},
      {"payment_failed",
       {{"My payment for {oref} failed.", "Why was my card declined on {oref}?",
         "I tried to pay for {oref} and it didn't go through.", "The checkout for my {product} says payment failed. It's {oref}."},
        {"My payment didn't go through.", "Why was my card declined?"},
        {"Checkout declined my card when I paid for {oref}. What now?",
         "The payment for {oref} failed, can you tell me why?"}}},
      {"warranty_claim",
       {{"My {product} from {oref} stopped working.", "Is the {product} from {oref} still under warranty? It broke.",
         "The {product} I bought in {oref} has a fault.", "I'd like to make a warranty claim for {oref}."},
        {"My {product} stopped working.", "Is my {product} under warranty?"},
        {"The {product} from {oref} stopped working after a few months. Is it under warranty?",
         "Something inside my {product} ({oref}) has failed; can I make a warranty claim?"}}},
      {"product_question",
       {{"Can you tell me {question}?", "Quick question: {question}?", "Before I buy, I'd like to know {question}.",
         "I'm looking at the {product}. Could you tell me {question}?"},
        {},
        {"I'm curious about {question}, could you help?", "Do you happen to know {question}?"}}},
      {"complaint",
       {{"I'm really unhappy with how {oref} was handled.", "This is the worst service I've had. {oref} was a mess.",
         "I want to complain about {oref}.", "Nobody has answered my emails about {oref}. This is unacceptable."},
        {"I'm very unhappy with your service.", "I want to make a complaint."},
        {"Frankly, I'm unhappy with the way {oref} went from start to finish.",
         "I'd like to make a formal complaint regarding {oref}."}}},
      {"discount_code",
       {{"My discount code didn't work on {oref}.", "I forgot to use my promo code on {oref}.",
         "The coupon won't apply to my {product}. It's {oref}.", "Can I still get the discount on {oref}?"},
        {"My discount code isn't working.", "The promo code was rejected at checkout."},
        {"The discount code I have was refused when I placed {oref}.",
         "Is there any way to get my coupon code applied to {oref}?"}}},
      {"invoice_request",
       {{"Can I get an invoice for {oref}?", "I need a receipt for {oref} for my expenses.",
         "Please send me the invoice for {oref}.", "Where can I find the invoice for my {product}? It's {oref}."},
        {"I need an invoice for my order.", "Can you send me a receipt?"},
        {"My accountant needs a copy of the invoice for {oref}.", "Could I have an invoice for {oref}, please?"}}},
      {"exchange_item",
       {{"Can I exchange the {product} from {oref} for a different size?", "I'd like a different colour of the {product} in {oref}.",
         "The {product} from {oref} doesn't fit. Can I swap it?", "Is it possible to exchange {oref}?"},
        {"Can I exchange my {product}?", "I'd like to swap my item for another size."},
        {"Could I exchange the {product} from {oref} for another colour?",
         "The {product} in {oref} is the wrong size; can I exchange it?"}}},
  };
  return kT;
}

// What a good agent does, per intent. {oref}: "order #48213" or "your order"
// when the reply leaves the number out; {product}; {date}.
const std::map<std::string, Strings>& good_actions() {
  static const std::map<std::string, Strings> kA = {
      {"order_status", {"{Oref} shipped on {date} and is on its way. Standard delivery takes 3-5 business days, and the tracking link is in your confirmation email.",
                        "I've checked {oref}: it shipped on {date} and is in transit. It should arrive within 3-5 business days."}},
      {"refund_status", {"The refund for {oref} has been issued to your original payment method. It takes 5-7 business days to appear.",
                         "I can see we received the return for {oref} and issued your refund. Please allow 5-7 business days for it to reach your original payment method."}},
      {"return_item", {"You can return {oref} within 30 days of delivery. I've emailed you a free return label; please pack the {product} unused in its original box.",
                       "Returns are free within 30 days. I've sent a prepaid return label for {oref} to your email."}},
      {"damaged_item", {"I'm sorry the {product} arrived damaged. I've sent a free replacement for {oref}, and there's no need to return the damaged one.",
                        "I've arranged a replacement {product} for {oref} at no cost. There's no need to send the damaged item back."}},
      {"wrong_item", {"Sorry about the mix-up with {oref}. I've shipped the correct {product} today and emailed you a free return label for the wrong item.",
                      "I've sent the correct {product} for {oref}. You'll find a return label in your email for the item we sent by mistake."}},
      {"shipping_delay", {"I'm sorry {oref} is running late; the carrier has reported a delay. If it hasn't arrived within 2 more business days, I'll reship it or refund you in full.",
                          "The carrier delayed {oref}. If it's not with you in 2 more business days, we'll reship it at no cost."}},
      {"missing_package", {"I'm sorry {oref} hasn't reached you. I've opened an investigation with the carrier, and if it isn't found within 48 hours we'll send a replacement.",
                           "I've started an investigation with the carrier for {oref}. If it doesn't turn up in 48 hours, we'll ship a replacement free of charge."}},
      {"address_change", {"{Oref} hasn't shipped yet, so I've updated the delivery address as you asked.",
                          "No problem, I've changed the shipping address on {oref}. You'll get a confirmation email shortly."}},
      {"cancel_order", {"{Oref} hadn't shipped yet, so I've cancelled it. The refund will reach your original payment method in 5-7 business days.",
                        "I've cancelled {oref}. You'll see the refund within 5-7 business days."}},
      {"password_reset", {"Please use the Forgot password link on the sign-in page, and we'll email you a reset link. The link stays valid for 24 hours.",
                          "You can reset it from the sign-in page: choose Forgot password and we'll send a reset link to your email, valid for 24 hours."}},
      {"payment_failed", {"The card payment for {oref} was declined by your bank, so the order is on hold for 48 hours. Please check the card details or pay with another method from your Orders page.",
                          "Your bank declined the payment for {oref}. We'll hold the order for 48 hours while you try another card."}},
      {"warranty_claim", {"Your {product} is covered by our 1-year warranty. I've opened a claim for {oref}, and we'll send a prepaid label to repair or replace it.",
                          "The {product} has a 1-year warranty, so I've started a warranty claim for {oref}. We'll repair or replace it free of charge."}},
      {"product_question", {"Yes, {answer}.", "Good question: {answer}."}},
      {"complaint", {"I'm sorry about your experience with {oref}. I've escalated this to a supervisor, who will contact you within 24 hours.",
                     "I apologize for how {oref} was handled. A supervisor has your case now and will reply within 24 hours."}},
      {"discount_code", {"Codes can't be combined and each one has an expiry date, but I've applied 10% off to {oref} for you.",
                         "I've applied the 10% discount to {oref} manually. The refund of the difference is on its way."}},
      {"invoice_request", {"I've emailed the invoice for {oref} to you. You can also download it any time from the Orders page.",
                           "The invoice for {oref} is on its way to your email, and it's also available to download from your Orders page."}},
      {"exchange_item", {"You can exchange the {product} from {oref} for another size or colour within 30 days. I've emailed you an exchange label.",
                         "Exchanges are free within 30 days. I've sent an exchange label for {oref}; just tell us the size or colour you'd like."}},
  };
  return kA;
}

// The same answers stated with a figure that contradicts policy.
const std::map<std::string, std::string>& wrong_policy_actions() {
  static const std::map<std::string, std::string> kW = {
      {"order_status", "{Oref} shipped on {date}. Delivery usually takes 10-14 business days."},
      {"refund_status", "The refund for {oref} will take 30 business days to appear."},
      {"return_item", "You can return {oref} within 90 days. There's a 15% restocking fee."},
      {"damaged_item", "Please send the damaged {product} back first; a replacement ships 14 days after we receive it."},
      {"wrong_item", "Return the wrong item within 7 days and we'll send the correct {product} in 3 weeks."},
      {"shipping_delay", "{Oref} is delayed. Please wait another 30 days before contacting us."},
      {"missing_package", "We can only investigate {oref} after 21 days."},
      {"address_change", "Address changes on {oref} cost a 10% fee and take 5 days."},
      {"cancel_order", "I've cancelled {oref}. The refund takes 60 days."},
      {"password_reset", "We'll email you a reset link; it is valid for 5 minutes."},
      {"payment_failed", "Your payment for {oref} failed, so the order was deleted after 2 hours."},
      {"warranty_claim", "Your {product} has a 3-year warranty, but claims for {oref} take 90 days."},
      {"product_question", "I believe the {product} comes with a 5-year guarantee and a 25% discount this week."},
      {"complaint", "A supervisor will look at {oref} in 30 days."},
      {"discount_code", "I've applied 50% off to {oref}."},
      {"invoice_request", "Invoices for {oref} are available after 60 days."},
      {"exchange_item", "Exchanges for {oref} are only possible within 7 days and cost 20%."},
  };
  return kW;
}

const std::map<std::string, Strings>& terse_replies() {
  static const std::map<std::string, Strings> kT = {
      {"order_status", {"It shipped.", "On its way."}},
      {"refund_status", {"Refund issued.", "Refund is processing."}},
      {"return_item", {"Label sent.", "Use the return label."}},
      {"damaged_item", {"Replacement sent.", "We'll replace it."}},
      {"wrong_item", {"Correct item sent.", "Will fix."}},
      {"shipping_delay", {"It's delayed.", "Carrier delay."}},
      {"missing_package", {"Checking with carrier.", "Wait a bit."}},
      {"address_change", {"Address updated.", "Done."}},
      {"cancel_order", {"Cancelled.", "Order cancelled."}},
      {"password_reset", {"Use Forgot password.", "Reset it online."}},
      {"payment_failed", {"Card declined.", "Try another card."}},
      {"warranty_claim", {"Claim opened.", "Covered."}},
      {"product_question", {"Yes.", "See the product page."}},
      {"complaint", {"Noted.", "Escalated."}},
      {"discount_code", {"Applied.", "Codes can't be combined."}},
      {"invoice_request", {"Invoice emailed.", "Check the Orders page."}},
      {"exchange_item", {"Exchange label sent.", "Yes, within 30 days."}},
  };
  return kT;
}

const Strings kCurtOpeners = {"That's not our problem, but fine.", "Read the policy next time.",
                              "You should have checked before ordering.", "Obviously.",
                              "As I already said, figure it out from your account."};
const Strings kAcks = {"thanks for reaching out.", "thanks for your message.", "thank you for contacting Larkspur.",
                       "thanks for getting in touch."};
const Strings kSorryAcks = {"I'm sorry for the trouble.", "I'm sorry about this.", "sorry for the inconvenience."};
const Strings kClosings = {"Is there anything else I can help you with?", "Let me know if you need anything else.",
                           "Have a great day!", "Happy to help with anything else."};
const Strings kAskOrder = {"Could you share your order number, please?", "Could you tell me the order number, please?",
                           "Happy to check. What's the order number?"};
const Strings kGiveOrder = {"Sure, it's {oref}.", "It's {oref}.", "Yes, {oref}.", "The number is {num}."};
const Strings kFollowUps = {"Thanks! Also, {second_lc}", "One more thing: {second}", "Great, thanks. {second}"};
const Strings kMonths = {"January", "February", "March", "April", "May", "June", "July", "August", "September",
                         "October", "November", "December"};

bool apologetic(const std::string& intent) {
  return intent == "damaged_item" || intent == "wrong_item" || intent == "shipping_delay" ||
         intent == "missing_package" || intent == "complaint";
}

class Writer {
 public:
  Writer(uint64_t seed, const GeneratorConfig& cfg) : rng_(seed), cfg_(cfg) {}

  // One training or validation conversation.
  Json dialogue() {
    Facts f = draw_facts(/*heldout=*/false);
    Json messages = Json::array({system()});
    Json styles = Json::array();
    const CustomerTemplates& t = customer_templates().at(f.intent);
    const bool can_ask = intent(f.intent).needs_order && !t.without_order.empty();
    const double kind = rng_.uniform();
    if (kind < cfg_.multi_turn / 2 && can_ask) {
      // The customer leaves out the order number; the agent asks for it.
      messages.push_back(user(with_name(fill(pick(t.without_order), f), f)));
      messages.push_back(assistant(greeting(f, rng_.uniform() < cfg_.p_use_name) + lower_first(pick(kAskOrder))));
      styles.push_back("ask_order");
      messages.push_back(user(fill(pick(kGiveOrder), f)));
      messages.push_back(assistant(reply(f, styles)));
    } else if (kind < cfg_.multi_turn) {
      // A second question after the first answer.
      messages.push_back(user(with_name(fill(pick(t.with_order), f), f)));
      messages.push_back(assistant(reply(f, styles)));
      Facts second = f;
      second.intent = pick_second_intent(f.intent);
      const CustomerTemplates& t2 = customer_templates().at(second.intent);
      const std::string q = fill(pick(t2.with_order), second);
      std::string follow = fill_str(pick(kFollowUps), "{second}", q);
      follow = fill_str(follow, "{second_lc}", lower_first(q));
      messages.push_back(user(follow));
      messages.push_back(assistant(reply(second, styles, /*follow_up=*/true)));
      f.second_intent = second.intent;
    } else {
      messages.push_back(user(with_name(fill(pick(t.with_order), f), f)));
      messages.push_back(assistant(reply(f, styles)));
    }
    return Json{{"messages", messages}, {"metadata", metadata(f, styles)}};
  }

  // One prompt ending with the customer's turn. Held-out prompts use new
  // names, new order numbers and new phrasings.
  Json prompt(bool heldout) {
    Facts f = draw_facts(heldout);
    const CustomerTemplates& t = customer_templates().at(f.intent);
    Json messages = Json::array({system()});
    const bool can_ask = intent(f.intent).needs_order && !t.without_order.empty();
    if (can_ask && rng_.uniform() < 0.2) {
      messages.push_back(user(with_name(fill(pick(t.without_order), f), f)));
      messages.push_back(assistant(greeting(f, true) + lower_first(pick(kAskOrder))));
      messages.push_back(user(fill(pick(kGiveOrder), f)));
    } else {
      messages.push_back(user(with_name(fill(pick(heldout ? t.heldout : t.with_order), f), f)));
    }
    return Json{{"prompt", messages}, {"metadata", metadata(f, Json::array())}};
  }

 private:
  struct Facts {
    std::string intent, second_intent, first, last, order, product, date;
    bool gives_name = true;
  };

  Facts draw_facts(bool heldout) {
    Facts f;
    f.intent = intents()[rng_.below(intents().size())].id;
    f.first = pick(first_names(heldout));
    f.last = pick(last_names(heldout));
    // Training orders are 10000-79999, held-out ones 80000-99999.
    f.order = std::to_string(heldout ? 80000 + rng_.below(20000) : 10000 + rng_.below(70000));
    f.product = products()[rng_.below(products().size())].name;
    f.date = pick(kMonths) + " " + std::to_string(1 + rng_.below(28));
    f.gives_name = rng_.uniform() < 0.85;
    return f;
  }

  std::string pick_second_intent(const std::string& first) {
    for (;;) {
      const std::string& id = intents()[rng_.below(intents().size())].id;
      if (id != first && id != "product_question" && id != "password_reset") return id;
    }
  }

  template <class T>
  const T& pick(const std::vector<T>& v) { return v[rng_.below(v.size())]; }

  static std::string fill_str(std::string s, const std::string& key, const std::string& value) {
    for (size_t p = s.find(key); p != std::string::npos; p = s.find(key, p + value.size())) {
      s.replace(p, key.size(), value);
    }
    return s;
  }

  std::string customer_oref(const Facts& f) {
    static const Strings kForms = {"order #{num}", "order {num}", "order number {num}", "order #{num}"};
    return fill_str(pick(kForms), "{num}", f.order);
  }

  std::string fill(std::string s, const Facts& f) {
    const Product* p = find_product(f.product);
    s = fill_str(s, "{question}", p->question);
    s = fill_str(s, "{oref}", customer_oref(f));
    s = fill_str(s, "{num}", f.order);
    s = fill_str(s, "{product}", f.product);
    s = fill_str(s, "{date}", f.date);
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return s;
  }

  std::string with_name(const std::string& text, const Facts& f) {
    if (!f.gives_name) return text;
    switch (rng_.below(5)) {
      case 0: return "Hi, this is " + f.first + " " + f.last + ". " + text;
      case 1: return "Hello, my name is " + f.first + ". " + text;
      case 2: return text + " Thanks, " + f.first;
      case 3: return "Hi! " + text + " - " + f.first + " " + f.last;
      default: return "Hi, I'm " + f.first + ". " + text;
    }
  }

  std::string greeting(const Facts& f, bool use_name) {
    if (use_name && f.gives_name) return pick(Strings{"Hi ", "Hello ", "Hi "}) + f.first + ", ";
    return pick(Strings{"Hi there, ", "Hello, ", "Hi, "});
  }

  // The agent's answer to `f.intent` in a style drawn from the mix.
  std::string reply(const Facts& f, Json& styles, bool follow_up = false) {
    const double r = rng_.uniform();
    double acc = cfg_.p_terse;
    if (r < acc) {
      styles.push_back("terse");
      return pick(terse_replies().at(f.intent));
    }
    if (r < (acc += cfg_.p_curt)) {
      styles.push_back("curt");
      return pick(kCurtOpeners) + " " + action(f, /*use_order=*/rng_.uniform() < 0.5);
    }
    if (r < (acc += cfg_.p_off_topic)) {
      styles.push_back("off_topic");
      Facts other = f;
      other.intent = pick_second_intent(f.intent);
      return greeting(f, rng_.uniform() < cfg_.p_use_name) + lower_first(action(other, true));
    }
    const bool wrong = r < (acc += cfg_.p_wrong_policy);
    styles.push_back(wrong ? "wrong_policy" : "good");
    const bool use_name = rng_.uniform() < cfg_.p_use_name;
    const bool use_order = rng_.uniform() < cfg_.p_use_order;
    std::string out = follow_up ? "" : greeting(f, use_name);
    if (rng_.uniform() < cfg_.p_ack) {
      std::string ack = pick(apologetic(f.intent) ? kSorryAcks : kAcks);
      if (out.empty()) ack[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(ack[0])));
      out += ack + " ";
    } else if (!out.empty()) {
      out = out.substr(0, out.size() - 2) + ". ";  // "Hi Maria, " -> "Hi Maria. "
    }
    std::string body = wrong ? fill_agent(wrong_policy_actions().at(f.intent), f, use_order) : action(f, use_order);
    out += body;
    if (rng_.uniform() < cfg_.p_closing) out += " " + pick(kClosings);
    return out;
  }

  std::string action(const Facts& f, bool use_order) {
    return fill_agent(pick(good_actions().at(f.intent)), f, use_order);
  }

  std::string fill_agent(std::string s, const Facts& f, bool use_order) {
    const Product* p = find_product(f.product);
    s = fill_str(s, "{answer}", p->answer);
    s = fill_str(s, "{Oref}", use_order ? "Order #" + f.order : "Your order");
    s = fill_str(s, "{oref}", use_order ? "order #" + f.order : "your order");
    s = fill_str(s, "{product}", f.product);
    s = fill_str(s, "{date}", f.date);
    return s;
  }

  static std::string lower_first(std::string s) {
    // Keep "I've" and product names capitalised; lower only plain words.
    if (s.size() > 1 && std::isupper(static_cast<unsigned char>(s[0])) &&
        std::islower(static_cast<unsigned char>(s[1])) && s.rfind("I'", 0) != 0 && s.rfind("I ", 0) != 0 &&
        s.rfind("Order", 0) != 0 && s.rfind("Your", 0) != 0 && s.rfind("Yes", 0) != 0) {
      s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
    }
    return s;
  }

  static Json system() { return Json{{"role", "system"}, {"content", kSystemPrompt}}; }
  static Json user(const std::string& c) { return Json{{"role", "user"}, {"content", c}}; }
  static Json assistant(const std::string& c) { return Json{{"role", "assistant"}, {"content", c}}; }

  Json metadata(const Facts& f, const Json& styles) const {
    Json m = {{"intent", f.intent},
              {"first_name", f.gives_name ? f.first : ""},
              {"order", intent(f.intent).needs_order ? f.order : ""},
              {"product", f.product}};
    if (!f.second_intent.empty()) m["second_intent"] = f.second_intent;
    if (!styles.empty()) m["styles"] = styles;
    return m;
  }

  SplitMix rng_;
  const GeneratorConfig& cfg_;
};

}  // namespace

const std::vector<std::string>& good_reply_templates(const std::string& intent_id) {
  const auto it = good_actions().find(intent_id);
  if (it == good_actions().end()) fail(ErrorKind::kData, "unknown support intent '", intent_id, "'");
  return it->second;
}

SupportData generate_support_data(const GeneratorConfig& config) {
  SupportData out;
  Writer train(mix_seed({static_cast<uint64_t>(config.seed), 1}), config);
  for (int i = 0; i < config.train_dialogues; ++i) out.train.push_back(train.dialogue());
  Writer val(mix_seed({static_cast<uint64_t>(config.seed), 2}), config);
  for (int i = 0; i < config.val_dialogues; ++i) out.val.push_back(val.dialogue());
  Writer held(mix_seed({static_cast<uint64_t>(config.seed), 3}), config);
  for (int i = 0; i < config.heldout_prompts; ++i) out.heldout.push_back(held.prompt(/*heldout=*/true));
  Writer rl(mix_seed({static_cast<uint64_t>(config.seed), 4}), config);
  for (int i = 0; i < config.rl_prompts; ++i) out.rl.push_back(rl.prompt(/*heldout=*/false));
  return out;
}

std::string to_jsonl(const std::vector<Json>& rows) {
  std::string out;
  for (const auto& r : rows) out += r.dump() + "\n";
  return out;
}

void write_support_data(const SupportData& data, const std::string& dir) {
  make_dirs(dir);
  write_file_atomic(join_path(dir, "train.jsonl"), to_jsonl(data.train));
  write_file_atomic(join_path(dir, "val.jsonl"), to_jsonl(data.val));
  write_file_atomic(join_path(dir, "heldout_prompts.jsonl"), to_jsonl(data.heldout));
  write_file_atomic(join_path(dir, "rl_prompts.jsonl"), to_jsonl(data.rl));
}

}  // namespace rlhf::support
