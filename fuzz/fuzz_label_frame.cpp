// The label service's request handling: any bytes as one frame body, on a
// connection that has (first byte odd) or has not said hello, against a
// small store in memory. The service must answer every input with a frame
// that decodes, and never fail in a way it did not write itself.
#include <cstdio>
#include <cstdlib>

#include "labels/token.h"
#include "common/log.h"
#include "labels/service.h"
#include "labels/wire.h"

using namespace rlhf;
using namespace rlhf::labels;

namespace {

struct World {
  LabelStore store{":memory:"};
  RatingDesk desk{store, DeskConfig{}};
  Rater rater;
  World() {
    set_log_enabled(false);
    for (int i = 0; i < 4; ++i) {
      const int64_t p = store.add_prompt(Json::array({{{"role", "user"}, {"content", "order " + std::to_string(i)}}}),
                                         nullptr);
      std::vector<int64_t> c;
      for (int k = 0; k < (i == 3 ? 3 : 2); ++k)
        c.push_back(store.add_candidate(p, "reply " + std::to_string(k), true, "fuzz", nullptr));
      store.add_comparison(p, c, 2, i == 2, i == 2 ? Json{{"choice", "a"}} : Json());
    }
    store.add_rater("fuzz", labels::sha256_hex("fuzz-token"), "human");
    rater = *store.rater_by_name("fuzz");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;
  if (size == 0) return 0;
  std::optional<Rater> rater;
  if (data[0] & 1) rater = world.rater;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  const FrameAnswer a = answer_frame(world.desk, rater, body, 1 << 20);
  if (a.rejected.rfind("internal error", 0) == 0) {
    std::fprintf(stderr, "%s\n", a.rejected.c_str());
    std::abort();
  }
  if (a.frame.size() < 4 || decode_frame_length(reinterpret_cast<const uint8_t*>(a.frame.data())) != a.frame.size() - 4)
    std::abort();
  DecodedMessage back(a.frame.substr(4), 64 << 20);  // throws (and so fails) if the answer does not decode
  return 0;
}
