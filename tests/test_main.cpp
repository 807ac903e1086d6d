// GoogleTest main shared by every suite: the same BLAS set-up as `rlhf`.
#include <gtest/gtest.h>

#include "common/runtime.h"

int main(int argc, char** argv) {
  rlhf::ensure_process_environment(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
