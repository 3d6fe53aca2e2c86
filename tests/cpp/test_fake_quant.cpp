#include <catch2/catch.hpp>
#include <torch/torch.h>
#include "edgeqat/edgeqat.h"
TEST_CASE("smoke") {
  auto x = torch::randn({10});
  auto y = edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(-1.f), torch::tensor(1.f));
  REQUIRE(y.sizes() == x.sizes());
}
