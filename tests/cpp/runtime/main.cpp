// Catch2 main of edgeqat_runtime_tests: the torch-free int8 runtime's tests (no torch linked).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
