// Where this process sits in a data-parallel run. A single-process run is
// rank 0 of 1; only rank 0 logs, writes metrics and saves checkpoints.
#pragma once

namespace rlhf {

struct DistInfo {
  int rank = 0;
  int world_size = 1;
  bool is_main() const { return rank == 0; }
};

}  // namespace rlhf
