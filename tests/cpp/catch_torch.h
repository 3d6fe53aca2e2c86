// Catch2 together with LibTorch. c10/util/logging_is_not_google_glog.h (pulled
// in by torch/torch.h) redefines CHECK as a fatal assertion that would abort
// the whole test binary on the first failure; put Catch's CHECK back.
#pragma once

#include <catch2/catch.hpp>
#include <torch/torch.h>

#undef CHECK
#define CHECK(...) \
  INTERNAL_CATCH_TEST("CHECK", Catch::ResultDisposition::ContinueOnFailure, __VA_ARGS__)
