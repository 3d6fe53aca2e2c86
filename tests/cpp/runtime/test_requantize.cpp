// quantize_multiplier and multiply_by_quantized_multiplier against exact references:
//  - quantize_multiplier: hand-computed values, the 2^31 carry, tiny / huge / invalid inputs,
//    and on random reals the stored value within 2^-31 relative (checked in long double);
//  - multiply_by_quantized_multiplier: millions of random (x, M) pairs and an exhaustive grid of
//    extremes (INT32_MIN / MAX, powers of two, every shift) against an exact 128-bit rational
//    rounding, ties toward +infinity checked explicitly, and a long double check of the error
//    against the value the multiplier stands for;
//  - the difference to TFLite's double rounding (gemmlowp), measured, at most 1.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "edgeqat/runtime/requantize.h"
#include "slow_reference.h"

using edgeqat::runtime::check_quantized_multiplier;
using edgeqat::runtime::kMaxShift;
using edgeqat::runtime::kMinShift;
using edgeqat::runtime::multiply_by_quantized_multiplier;
using edgeqat::runtime::quantize_multiplier;
using edgeqat::runtime::quantized_multiplier_value;
using edgeqat::runtime::QuantizedMultiplier;
using rt_test::ref_requant;

namespace {

constexpr int32_t kI32Min = std::numeric_limits<int32_t>::min();
constexpr int32_t kI32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t k2p30 = int64_t{1} << 30;
constexpr int64_t k2p31 = int64_t{1} << 31;

// TFLite's reference-kernel ("double rounding") requantization, from its definition in
// gemmlowp: a saturating rounding doubling high multiply (ties toward +inf) then a rounding
// divide by a power of two (ties away from zero). Only to measure how far apart the modes are.
int32_t double_rounding(int32_t x, QuantizedMultiplier m) {
  const int left = m.shift > 0 ? m.shift : 0, right = m.shift > 0 ? 0 : -m.shift;
  const int64_t shifted = int64_t{x} * (int64_t{1} << left);
  if (shifted > kI32Max || shifted < kI32Min) return shifted > 0 ? kI32Max : kI32Min;
  const int32_t a = static_cast<int32_t>(shifted), b = m.multiplier;
  int32_t high;
  if (a == kI32Min && b == kI32Min) {
    high = kI32Max;
  } else {
    const int64_t ab = int64_t{a} * b;
    const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    const int64_t t = ab + nudge;
    high = static_cast<int32_t>(t / (int64_t{1} << 31));  // truncating division, as gemmlowp
  }
  if (right == 0) return high;
  const int32_t mask = static_cast<int32_t>((int64_t{1} << right) - 1);
  const int32_t remainder = high & mask;
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (remainder > threshold ? 1 : 0);
}

}  // namespace

TEST_CASE("quantize_multiplier: hand-computed values", "[runtime][requantize]") {
  CHECK(quantize_multiplier(1.0) == QuantizedMultiplier{1 << 30, 1});
  CHECK(quantize_multiplier(0.5) == QuantizedMultiplier{1 << 30, 0});
  CHECK(quantize_multiplier(0.75) == QuantizedMultiplier{1610612736, 0});  // 0.75 * 2^31
  CHECK(quantize_multiplier(0.25) == QuantizedMultiplier{1 << 30, -1});
  CHECK(quantize_multiplier(3.0) == QuantizedMultiplier{1610612736, 2});
  // 0.1 = 0.8 * 2^-3; 0.8 * 2^31 = 1717986918.4 -> 1717986918.
  CHECK(quantize_multiplier(0.1) == QuantizedMultiplier{1717986918, -3});
  // q * 2^31 ending in exactly .5 (2^30 + 1.5) rounds away from zero, to 2^30 + 2.
  const double half_case = 0.5 + std::ldexp(1.0, -31) + std::ldexp(1.0, -32);
  CHECK(quantize_multiplier(half_case) == QuantizedMultiplier{(1 << 30) + 2, 0});
  CHECK(quantized_multiplier_value({1 << 30, 1}) == 1.0);
  CHECK(quantized_multiplier_value({1610612736, 0}) == 0.75);
}

TEST_CASE("quantize_multiplier: the 2^31 carry", "[runtime][requantize]") {
  // q = 1 - 2^-33: q * 2^31 = 2^31 - 0.25 rounds to 2^31, which becomes 2^30 with shift + 1.
  const double q = 1.0 - std::ldexp(1.0, -33);
  CHECK(quantize_multiplier(q) == QuantizedMultiplier{1 << 30, 1});
  CHECK(quantize_multiplier(std::ldexp(q, -5)) == QuantizedMultiplier{1 << 30, -4});
  // Just below the carry: 2^31 - 0.5 - tiny rounds down to 2^31 - 1.
  const double below = 1.0 - std::ldexp(1.0, -31);  // q * 2^31 = 2^31 - 1
  CHECK(quantize_multiplier(below) == QuantizedMultiplier{kI32Max, 0});
}

TEST_CASE("quantize_multiplier: tiny values", "[runtime][requantize]") {
  CHECK(quantize_multiplier(std::ldexp(1.0, -32)) == QuantizedMultiplier{1 << 30, -31});
  // frexp exponent -32, but the carry lifts it back to -31.
  CHECK(quantize_multiplier(std::ldexp(1.0 - std::ldexp(1.0, -40), -32)) ==
        QuantizedMultiplier{1 << 30, -31});
  CHECK(quantize_multiplier(std::ldexp(0.75, -32)) == QuantizedMultiplier{0, 0});
  CHECK(quantize_multiplier(std::ldexp(1.0, -33)) == QuantizedMultiplier{0, 0});
  CHECK(quantize_multiplier(1e-300) == QuantizedMultiplier{0, 0});
  CHECK(quantize_multiplier(std::numeric_limits<double>::denorm_min()) ==
        QuantizedMultiplier{0, 0});
  // {0, 0} multiplies everything to 0.
  for (int32_t x : {kI32Min, -1, 0, 1, kI32Max}) {
    CHECK(multiply_by_quantized_multiplier(x, {0, 0}) == 0);
  }
}

TEST_CASE("quantize_multiplier: huge values and invalid input are rejected",
          "[runtime][requantize]") {
  // Largest representable: (1 - 2^-31) * 2^30 -> {2^31 - 1, 30}.
  CHECK(quantize_multiplier(std::ldexp(1.0 - std::ldexp(1.0, -31), 30)) ==
        QuantizedMultiplier{kI32Max, 30});
  using Catch::Matchers::Contains;
  CHECK_THROWS_AS(quantize_multiplier(std::ldexp(1.0, 30)), std::invalid_argument);
  CHECK_THROWS_WITH(quantize_multiplier(std::ldexp(1.0, 30)),
                    Contains("real_multiplier must be < 2^30") && Contains("1073741824"));
  // Rounds up into 2^30 through the carry.
  CHECK_THROWS_AS(quantize_multiplier(std::ldexp(1.0 - std::ldexp(1.0, -40), 30)),
                  std::invalid_argument);
  CHECK_THROWS_WITH(quantize_multiplier(1e300), Contains("real_multiplier must be < 2^30"));
  CHECK_THROWS_WITH(quantize_multiplier(0.0),
                    Contains("real_multiplier must be finite and > 0, got 0"));
  CHECK_THROWS_WITH(quantize_multiplier(-0.5),
                    Contains("real_multiplier must be finite and > 0, got -0.5"));
  CHECK_THROWS_WITH(quantize_multiplier(std::nan("")), Contains("got nan"));
  CHECK_THROWS_WITH(quantize_multiplier(std::numeric_limits<double>::infinity()),
                    Contains("got inf"));
}

TEST_CASE("quantize_multiplier: random reals are stored within 2^-31 relative",
          "[runtime][requantize]") {
  std::mt19937_64 rng(12345);
  std::uniform_real_distribution<double> log2(-32.0, 30.0);
  std::uniform_real_distribution<double> mant(0.5, 1.0);
  for (int i = 0; i < 200000; ++i) {
    // Half log-uniform, half with a random 53-bit mantissa at a random exponent.
    const double real = (i % 2) ? std::exp2(log2(rng))
                                : std::ldexp(mant(rng), static_cast<int>(log2(rng)));
    if (real >= std::ldexp(1.0, 30) || real < std::ldexp(1.0, -32)) continue;
    const QuantizedMultiplier m = quantize_multiplier(real);
    INFO("real = " << real << " -> {" << m.multiplier << ", " << m.shift << "}");
    REQUIRE(m.shift >= kMinShift);
    REQUIRE(m.shift <= kMaxShift);
    REQUIRE(m.multiplier >= k2p30);
    REQUIRE(int64_t{m.multiplier} < k2p31);
    // Exact in long double: M0 has 31 bits, the scaling is a power of two.
    const long double stored = std::ldexp(static_cast<long double>(m.multiplier), m.shift - 31);
    const long double rel = std::fabs(stored - static_cast<long double>(real)) / real;
    REQUIRE(rel <= std::ldexp(1.0L, -31));
    REQUIRE(stored == static_cast<long double>(quantized_multiplier_value(m)));
    check_quantized_multiplier(m, "m");  // never throws for quantize_multiplier's results
  }
}

TEST_CASE("check_quantized_multiplier names the bad field", "[runtime][requantize]") {
  using Catch::Matchers::Contains;
  CHECK_NOTHROW(check_quantized_multiplier({kI32Max, kMaxShift}, "m"));
  CHECK_NOTHROW(check_quantized_multiplier({0, kMinShift}, "m"));
  CHECK_THROWS_WITH(check_quantized_multiplier({-1, 0}, "layer3.m"),
                    Contains("layer3.m.multiplier must be >= 0, got -1"));
  CHECK_THROWS_WITH(check_quantized_multiplier({1 << 30, 31}, "m"),
                    Contains("m.shift must be in [-31, 30], got 31"));
  CHECK_THROWS_AS(check_quantized_multiplier({1 << 30, -32}, "m"), std::invalid_argument);
}

TEST_CASE("multiply_by_quantized_multiplier: ties go toward +infinity", "[runtime][requantize]") {
  const QuantizedMultiplier half{1 << 30, 0};  // exactly 0.5
  CHECK(multiply_by_quantized_multiplier(3, half) == 2);    // 1.5 -> 2
  CHECK(multiply_by_quantized_multiplier(-3, half) == -1);  // -1.5 -> -1
  CHECK(multiply_by_quantized_multiplier(5, half) == 3);    // 2.5 -> 3
  CHECK(multiply_by_quantized_multiplier(-5, half) == -2);  // -2.5 -> -2
  CHECK(multiply_by_quantized_multiplier(4, half) == 2);
  CHECK(multiply_by_quantized_multiplier(-4, half) == -2);
  const QuantizedMultiplier quarter{1 << 30, -1};  // 0.25
  CHECK(multiply_by_quantized_multiplier(6, quarter) == 2);    // 1.5
  CHECK(multiply_by_quantized_multiplier(-6, quarter) == -1);  // -1.5
  CHECK(multiply_by_quantized_multiplier(-7, quarter) == -2);  // -1.75
  CHECK(multiply_by_quantized_multiplier(-5, quarter) == -1);  // -1.25
  // Identity and exact powers of two.
  const QuantizedMultiplier one = quantize_multiplier(1.0);
  for (int32_t x : {kI32Min, kI32Min + 1, -12345, -1, 0, 1, 777, kI32Max}) {
    CHECK(multiply_by_quantized_multiplier(x, one) == x);
  }
  // Saturation when M >= 1.
  CHECK(multiply_by_quantized_multiplier(kI32Max, quantize_multiplier(2.0)) == kI32Max);
  CHECK(multiply_by_quantized_multiplier(kI32Min, quantize_multiplier(2.0)) == kI32Min);
  CHECK(multiply_by_quantized_multiplier(1 << 29, quantize_multiplier(4.0)) == kI32Max);
  CHECK(multiply_by_quantized_multiplier(-(1 << 29), quantize_multiplier(4.0)) == kI32Min);
  CHECK(multiply_by_quantized_multiplier(1 << 29, quantize_multiplier(3.0)) == 3 * (1 << 29));
}

TEST_CASE("multiply_by_quantized_multiplier: exhaustive extremes against the exact rational",
          "[runtime][requantize]") {
  std::vector<int32_t> xs = {kI32Min, kI32Min + 1, kI32Max, kI32Max - 1, 0, 1, -1, 2, -2, 3, -3};
  for (int k = 1; k < 31; ++k) {
    const int32_t p = int32_t{1} << k;
    for (int32_t v : {p, p - 1, p + 1, -p, -p + 1, -p - 1}) xs.push_back(v);
  }
  std::vector<int32_t> ms = {0, 1, 2, 3, 1 << 30, (1 << 30) + 1, kI32Max, kI32Max - 1,
                             1518500250, 1717986918};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10; ++i) {
    ms.push_back(std::uniform_int_distribution<int32_t>(1 << 30, kI32Max)(rng));
  }
  int64_t checked = 0;
  for (int shift = kMinShift; shift <= kMaxShift; ++shift) {
    for (int32_t m0 : ms) {
      for (int32_t x : xs) {
        const QuantizedMultiplier m{m0, shift};
        const int32_t got = multiply_by_quantized_multiplier(x, m);
        const int32_t want = ref_requant(x, m);
        if (got != want) {
          FAIL("x = " << x << ", M = {" << m0 << ", " << shift << "}: got " << got << ", want "
                      << want);
        }
        ++checked;
      }
    }
  }
  CHECK(checked == int64_t{62} * static_cast<int64_t>(ms.size()) * static_cast<int64_t>(xs.size()));
}

TEST_CASE("multiply_by_quantized_multiplier: 4 million random pairs against the exact rational",
          "[runtime][requantize]") {
  std::mt19937_64 rng(2024);
  std::uniform_int_distribution<int32_t> any_x(kI32Min, kI32Max);
  std::uniform_int_distribution<int32_t> any_m(1 << 30, kI32Max);
  std::uniform_int_distribution<int> any_shift(kMinShift, kMaxShift);
  std::uniform_int_distribution<int> bits(0, 31);
  std::uniform_real_distribution<double> log2m(-20.0, 2.0);
  for (int i = 0; i < 4000000; ++i) {
    int32_t x;
    QuantizedMultiplier m;
    switch (i % 4) {
      case 0:  // anything: full int32 range, every shift
        x = any_x(rng);
        m = {any_m(rng), any_shift(rng)};
        break;
      case 1: {  // accumulator-sized x of random magnitude, realistic multipliers
        const int b = bits(rng);
        x = static_cast<int32_t>(any_x(rng) >> (31 - b));
        m = quantize_multiplier(std::exp2(log2m(rng)));
        break;
      }
      case 2:  // small x, where ties are frequent
        x = std::uniform_int_distribution<int32_t>(-4096, 4096)(rng);
        m = {any_m(rng) & ~0xFFFF, std::uniform_int_distribution<int>(-14, 0)(rng)};
        break;
      default:  // unnormalized raw multipliers (valid, e.g. from a file)
        x = any_x(rng);
        m = {std::uniform_int_distribution<int32_t>(0, kI32Max)(rng), any_shift(rng)};
        break;
    }
    const int32_t got = multiply_by_quantized_multiplier(x, m);
    const int32_t want = ref_requant(x, m);
    if (got != want) {
      FAIL("x = " << x << ", M = {" << m.multiplier << ", " << m.shift << "}: got " << got
                  << ", want " << want);
    }
  }
  SUCCEED("4000000 pairs bit-exact");
}

TEST_CASE("multiply_by_quantized_multiplier: error against the value M stands for",
          "[runtime][requantize]") {
  // long double holds x * M0 (< 2^62) exactly, and the power-of-two scaling is exact, so
  // |result - x * M| <= 1/2 with equality only rounding up, unless saturated.
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<int32_t> any_x(kI32Min, kI32Max);
  std::uniform_int_distribution<int32_t> any_m(0, kI32Max);
  std::uniform_int_distribution<int> any_shift(kMinShift, kMaxShift);
  for (int i = 0; i < 1000000; ++i) {
    const int32_t x = (i % 2) ? any_x(rng) : std::uniform_int_distribution<int32_t>(-999, 999)(rng);
    const QuantizedMultiplier m{any_m(rng), any_shift(rng)};
    const long double exact = std::ldexp(static_cast<long double>(x) * m.multiplier, m.shift - 31);
    const int32_t got = multiply_by_quantized_multiplier(x, m);
    if (exact >= static_cast<long double>(kI32Max) + 0.5L) {
      REQUIRE(got == kI32Max);
      continue;
    }
    if (exact < static_cast<long double>(kI32Min) - 0.5L) {
      REQUIRE(got == kI32Min);
      continue;
    }
    const long double err = static_cast<long double>(got) - exact;
    if (!(err <= 0.5L && err > -0.5L)) {
      FAIL("x = " << x << ", M = {" << m.multiplier << ", " << m.shift << "}: got " << got
                  << ", exact " << static_cast<double>(exact));
    }
  }
}

TEST_CASE("single rounding vs TFLite's double rounding: at most 1 apart",
          "[runtime][requantize]") {
  // Realistic conv requantization: accumulators up to 2^20, multipliers 2^-14 .. 1.
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> log2m(-14.0, -0.01);
  std::uniform_int_distribution<int32_t> acc(-(1 << 20), 1 << 20);
  const int n = 1000000;
  int differ = 0;
  for (int i = 0; i < n; ++i) {
    const QuantizedMultiplier m = quantize_multiplier(std::exp2(log2m(rng)));
    const int32_t x = acc(rng);
    const int32_t a = multiply_by_quantized_multiplier(x, m), b = double_rounding(x, m);
    REQUIRE(std::abs(a - b) <= 1);
    differ += a != b;
  }
  // Measured: 36071 of 1000000 (3.6 %) differ, always by exactly 1 (docs/runtime-numerics.md).
  CHECK(differ > 0);
  CHECK(differ < n / 10);
}
