#include "support/catalog.h"

#include <algorithm>

#include "common/error.h"

namespace rlhf::support {

const std::vector<Intent>& intents() {
  static const std::vector<Intent> kIntents = {
      {"order_status", true, {{"shipped", "on its way", "in transit"}, {"3-5 business days", "tracking"}},
       {"3-5 business days"}},
      {"refund_status", true, {{"refund"}, {"5-7 business days", "original payment"}}, {"5-7 business days"}},
      {"return_item", true, {{"return"}, {"label", "30 days"}}, {"30 days"}},
      {"damaged_item", true, {{"replacement"}, {"damaged", "no need"}}, {}},
      {"wrong_item", true, {{"correct"}, {"return label", "label"}}, {}},
      {"shipping_delay", true, {{"delay", "late", "delayed"}, {"2 more business days", "reship"}},
       {"2 more business days", "2 business days"}},
      {"missing_package", true, {{"investigation", "investigate"}, {"48 hours", "replacement"}}, {"48 hours"}},
      {"address_change", true, {{"address"}, {"updated", "changed"}}, {}},
      {"cancel_order", true, {{"cancelled", "canceled"}, {"refund", "5-7 business days", "won't be charged"}},
       {"5-7 business days"}},
      {"password_reset", false, {{"reset"}, {"link", "Forgot password"}}, {"24 hours"}},
      {"payment_failed", true, {{"declined", "didn't go through"}, {"another", "card details", "48 hours"}},
       {"48 hours"}},
      {"warranty_claim", true, {{"warranty"}, {"claim", "repair", "replace"}}, {"1-year", "1 year"}},
      {"product_question", false, {}, {}},  // checked against the product's fact words
      {"complaint", true, {{"sorry", "apologize", "apologise"}, {"escalated", "supervisor"}}, {"24 hours"}},
      {"discount_code", true, {{"code", "discount"}, {"applied", "combined", "expired"}}, {"10%"}},
      {"invoice_request", true, {{"invoice"}, {"emailed", "Orders page", "download"}}, {}},
      {"exchange_item", true, {{"exchange"}, {"label", "30 days", "size", "colour"}}, {"30 days"}},
  };
  return kIntents;
}

const Intent& intent(const std::string& id) {
  for (const auto& i : intents()) {
    if (i.id == id) return i;
  }
  fail(ErrorKind::kData, "unknown support intent '", id, "'");
}

const std::vector<Product>& products() {
  static const std::vector<Product> kProducts = {
      {"Aero Blender", "how big is the jar on the Aero Blender", "the Aero Blender has a 1.5-litre jar and six speeds", {"1.5-litre"}},
      {"Nimbus Desk Lamp", "whether the Nimbus Desk Lamp is dimmable", "the Nimbus Desk Lamp has three dimming levels and a USB port", {"dimming"}},
      {"Tidewater Rain Jacket", "if the Tidewater Rain Jacket is waterproof", "the Tidewater Rain Jacket is fully waterproof with taped seams", {"waterproof"}},
      {"Cedar Bookshelf", "how much weight each shelf of the Cedar Bookshelf holds", "each shelf of the Cedar Bookshelf holds up to 20 kilograms", {"20 kilograms"}},
      {"Orbit Wireless Earbuds", "how long the Orbit Wireless Earbuds battery lasts", "the Orbit Wireless Earbuds last 8 hours per charge", {"8 hours"}},
      {"Harbor Coffee Maker", "how many cups the Harbor Coffee Maker brews", "the Harbor Coffee Maker brews up to 12 cups", {"12 cups"}},
      {"Linen Duvet Cover", "whether the Linen Duvet Cover is machine washable", "the Linen Duvet Cover is machine washable at 40 degrees", {"machine washable"}},
      {"Summit Hiking Backpack", "what capacity the Summit Hiking Backpack has", "the Summit Hiking Backpack holds 35 litres", {"35 litres"}},
      {"Glow Smart Bulb", "whether the Glow Smart Bulb works without a hub", "the Glow Smart Bulb connects over Wi-Fi and needs no hub", {"no hub"}},
      {"Maple Cutting Board", "if the Maple Cutting Board can go in the dishwasher", "the Maple Cutting Board should be washed by hand, not in the dishwasher", {"by hand"}},
      {"Breeze Tower Fan", "how loud the Breeze Tower Fan is", "the Breeze Tower Fan runs at 38 decibels on its quiet setting", {"38 decibels"}},
      {"Quartz Wall Clock", "what battery the Quartz Wall Clock takes", "the Quartz Wall Clock takes one AA battery", {"AA battery"}},
      {"Alpine Wool Socks", "what the Alpine Wool Socks are made of", "the Alpine Wool Socks are 70 percent merino wool", {"merino"}},
      {"Ember Cast Iron Pan", "whether the Ember Cast Iron Pan works on induction", "the Ember Cast Iron Pan works on induction and in the oven", {"induction"}},
      {"Pebble Bluetooth Speaker", "if the Pebble Bluetooth Speaker is water resistant", "the Pebble Bluetooth Speaker is water resistant to IPX7", {"IPX7"}},
      {"Willow Office Chair", "what the weight limit of the Willow Office Chair is", "the Willow Office Chair supports up to 120 kilograms", {"120 kilograms"}},
      {"Drift Memory Pillow", "how firm the Drift Memory Pillow is", "the Drift Memory Pillow is medium firm with a removable cover", {"medium firm"}},
      {"Canyon Water Bottle", "how long the Canyon Water Bottle keeps drinks cold", "the Canyon Water Bottle keeps drinks cold for 24 hours", {"cold for"}},
      {"Meadow Table Runner", "how long the Meadow Table Runner is", "the Meadow Table Runner is 180 centimetres long", {"180 centimetres"}},
      {"Vista Photo Frame", "what photo size the Vista Photo Frame takes", "the Vista Photo Frame takes 5 by 7 inch photos", {"5 by 7"}},
      {"Frost Ice Cream Maker", "how much the Frost Ice Cream Maker makes", "the Frost Ice Cream Maker makes 1 litre per batch", {"1 litre"}},
      {"Pine Storage Bench", "whether the Pine Storage Bench needs assembly", "the Pine Storage Bench arrives assembled except for the legs", {"assembled"}},
      {"Coral Bath Towel Set", "how many towels come in the Coral Bath Towel Set", "the Coral Bath Towel Set has four towels", {"four towels"}},
      {"Atlas Travel Adapter", "which countries the Atlas Travel Adapter works in", "the Atlas Travel Adapter works in over 150 countries", {"150 countries"}},
  };
  return kProducts;
}

const Product* find_product(const std::string& name) {
  for (const auto& p : products()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

const std::vector<std::string>& first_names(bool heldout) {
  static const std::vector<std::string> kTrain = {
      "Maria", "James", "Aisha", "Chen", "Olivia", "Liam", "Sofia", "Noah", "Priya", "Lucas", "Emma", "Mateo",
      "Yuki", "Ethan", "Fatima", "Daniel", "Greta", "Omar", "Hannah", "Leo", "Zara", "Samuel", "Mia", "Ivan",
      "Chloe", "Arjun", "Ella", "Diego", "Nora", "Kenji", "Ruby", "Tariq", "Alice", "Marco", "Leila", "Jonas",
      "Amara", "Felix", "Isla", "Hugo", "Lena", "Rafael", "Maya", "Oscar", "Ines", "Theo", "Sara", "Victor",
      "Nadia", "Simon", "Clara", "Andre", "Julia", "Pavel", "Elena", "Tom", "Rosa", "Kofi", "Anna", "Ben",
      "Layla", "Mila", "Eva", "Ali", "Lucy", "Pedro", "Mei", "Adam", "Iris", "Jack", "Nina", "Sean"};
  static const std::vector<std::string> kHeldout = {
      "Beatrice", "Caspian", "Delphine", "Emeka", "Florian", "Gwen", "Hamid", "Ingrid", "Joaquin", "Keiko",
      "Lorenzo", "Malak", "Niamh", "Orla", "Percy", "Quentin", "Rania", "Soren", "Tamsin", "Ulrich", "Vera",
      "Wren", "Ximena", "Yusuf", "Zeynep", "Agnes", "Bram", "Celine", "Dmitri", "Esme"};
  return heldout ? kHeldout : kTrain;
}

const std::vector<std::string>& last_names(bool heldout) {
  static const std::vector<std::string> kTrain = {
      "Lopez", "Smith", "Khan", "Wang", "Brown", "Garcia", "Patel", "Kim", "Nguyen", "Silva", "Muller", "Rossi",
      "Johnson", "Tanaka", "Ahmed", "Novak", "Cohen", "Martin", "Okafor", "Larsen", "Dubois", "Kowalski",
      "Haddad", "Moreno", "Singh", "Walker", "Ivanova", "Costa", "Fischer", "Reyes"};
  static const std::vector<std::string> kHeldout = {"Abernathy", "Bjornsson", "Castellano", "Drummond", "Eriksen",
                                                    "Fontaine", "Gallagher", "Hollis", "Iwasaki", "Jablonski",
                                                    "Kaminski", "Lindqvist", "Marchetti", "Nakamura", "Ostrowski"};
  return heldout ? kHeldout : kTrain;
}

bool is_known_first_name(const std::string& word) {
  for (bool h : {false, true}) {
    const auto& names = first_names(h);
    if (std::find(names.begin(), names.end(), word) != names.end()) return true;
  }
  return false;
}

const std::vector<std::string>& rude_phrases() {
  static const std::vector<std::string> kRude = {
      "not our problem", "read the policy", "should have checked", "calm down", "obviously",
      "we can't help you", "figure it out", "stop emailing", "as I already said", "whatever"};
  return kRude;
}

const std::vector<std::string>& polite_phrases() {
  static const std::vector<std::string> kPolite = {"thank", "sorry", "happy to help", "glad to help", "please",
                                                   "apologize", "apologise", "my pleasure"};
  return kPolite;
}

}  // namespace rlhf::support
