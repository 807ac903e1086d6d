// Precompiled header shared (REUSE_FROM) by every LibTorch translation unit.
#pragma once
#include <torch/torch.h>
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>
