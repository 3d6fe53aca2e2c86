// Tests of the fake-quant ops from C++ (no Python in the process):
//  - a scalar reference written here (plain loops, TensorFlow's
//    FakeQuantWithMinMaxVars as restated in docs/numerics.md, section 1),
//    independent of the library's headers;
//  - forward and the three gradients through the public C++ API and its C++
//    autograd, per tensor and per channel, in several memory layouts;
//  - hand-computed edge cases (nudging, ties, bounds, narrow range, 2 and 16
//    bits, degenerate ranges, non-finite inputs);
//  - argument errors and their messages;
//  - the ATen composite kernels (used on devices without a fused kernel)
//    against the fused CPU kernels, bit for bit;
//  - double backward.
//
// Comparisons of outputs, masks and input gradients are bit-exact. The range
// gradients are sums accumulated in double whose order of summation differs
// between implementations; they are compared with the tolerance
//   |got - want| <= 2 * n * 2^-53 * sum|g| + 1 ulp of the range dtype at want
// (n: number of summed elements; 2 * n * 2^-53 * sum|g| bounds the rounding
// error of any two summation orders in double, the ulp covers the final
// rounding to float32). A single misclassified element changes a sum by |g|.
#include <ATen/core/dispatch/Dispatcher.h>
#include "catch_torch.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "edgeqat/edgeqat.h"
#include "ops/composite/fake_quant_composite.h"

namespace {

using torch::Tensor;

// ---------------------------------------------------------------------------
// Scalar reference.
// ---------------------------------------------------------------------------

template <typename T>
struct RefRange {
  T lo, hi, scale, zero_index;
  bool degenerate;
};

// Nudging, computed in T (float for float32/half/bfloat16 inputs).
template <typename T>
RefRange<T> ref_nudge(T min, T max, int num_bits, bool narrow_range) {
  const T qmin = narrow_range ? T(1) : T(0);
  const T qmax = static_cast<T>((int64_t{1} << num_bits) - 1);
  const T scale = (max - min) / (qmax - qmin);
  if (!(scale > T(0))) {
    // min == max (or a width whose scale underflows): the grid is {0}.
    return {T(0), T(0), T(1), T(0), true};
  }
  const T zp_from_min = qmin - min / scale;
  T zp;
  if (zp_from_min < qmin) {
    zp = qmin;
  } else if (zp_from_min > qmax) {
    zp = qmax;
  } else {
    zp = std::round(zp_from_min);
  }
  return {(qmin - zp) * scale, (qmax - zp) * scale, scale, zp - qmin, false};
}

template <typename T>
T ref_value(T x, const RefRange<T>& r) {
  if (std::isnan(x)) return x;
  if (r.degenerate) return T(0);
  T c = x;
  if (c < r.lo) c = r.lo;
  if (c > r.hi) c = r.hi;
  const T q = std::floor((c - r.lo) / r.scale + T(0.5));
  return (q - r.zero_index) * r.scale;
}

// 0 inside [lo, hi] (both ends included), 1 below, 2 above, 3 NaN.
template <typename T>
uint8_t ref_mask(T x, const RefRange<T>& r) {
  if (std::isnan(x)) return 3;
  if (x < r.lo) return 1;
  if (x > r.hi) return 2;
  return 0;
}

struct Expected {
  Tensor y;      // x's dtype
  Tensor mask;   // uint8
  Tensor dx;     // g's dtype
  Tensor dmin;   // min's dtype, [] or [C]
  Tensor dmax;   // max's dtype
  std::vector<double> abs_below, abs_above;  // sum |g| per range, for tolerances
  std::vector<int64_t> n_below, n_above;
};

int64_t norm_axis(int64_t axis, int64_t ndim) { return axis < 0 ? axis + ndim : axis; }

template <typename T>
Expected reference_typed(const Tensor& x_in, const Tensor& min_in, const Tensor& max_in,
                         std::optional<int64_t> axis, int num_bits, bool narrow_range,
                         const Tensor& g_in) {
  constexpr auto kT = std::is_same_v<T, double> ? torch::kDouble : torch::kFloat;
  // Logical (row-major) order, whatever the layout of the inputs.
  const Tensor x = x_in.detach().to(kT).contiguous();
  const Tensor g = g_in.detach().to(kT).contiguous();
  const Tensor mins = min_in.detach().to(torch::kDouble).contiguous().reshape({-1});
  const Tensor maxs = max_in.detach().to(torch::kDouble).contiguous().reshape({-1});
  const int64_t numel = x.numel();
  int64_t channels = 1, inner = 1;
  if (axis) {
    const int64_t ax = norm_axis(*axis, x.dim());
    channels = x.size(ax);
    for (int64_t d = ax + 1; d < x.dim(); ++d) inner *= x.size(d);
  }
  std::vector<RefRange<T>> ranges;
  for (int64_t c = 0; c < channels; ++c) {
    // The range values are converted to the compute type before nudging.
    ranges.push_back(ref_nudge(static_cast<T>(mins.data_ptr<double>()[c]),
                               static_cast<T>(maxs.data_ptr<double>()[c]), num_bits,
                               narrow_range));
  }
  const T* xp = x.data_ptr<T>();
  const T* gp = g.data_ptr<T>();
  std::vector<T> y(numel), dx(numel);
  std::vector<uint8_t> mask(numel);
  std::vector<double> below(channels, 0.0), above(channels, 0.0);
  Expected e;
  e.abs_below.assign(channels, 0.0);
  e.abs_above.assign(channels, 0.0);
  e.n_below.assign(channels, 0);
  e.n_above.assign(channels, 0);
  for (int64_t i = 0; i < numel; ++i) {
    const int64_t c = axis ? (i / inner) % channels : 0;
    y[i] = ref_value(xp[i], ranges[c]);
    mask[i] = ref_mask(xp[i], ranges[c]);
    dx[i] = mask[i] == 0 ? gp[i] : T(0);
    if (mask[i] == 1) {
      below[c] += static_cast<double>(gp[i]);
      e.abs_below[c] += std::abs(static_cast<double>(gp[i]));
      e.n_below[c]++;
    } else if (mask[i] == 2) {
      above[c] += static_cast<double>(gp[i]);
      e.abs_above[c] += std::abs(static_cast<double>(gp[i]));
      e.n_above[c]++;
    }
  }
  const auto opts = torch::TensorOptions().dtype(kT);
  e.y = torch::from_blob(y.data(), x.sizes(), opts).clone().to(x_in.scalar_type());
  e.dx = torch::from_blob(dx.data(), x.sizes(), opts).clone().to(g_in.scalar_type());
  e.mask = torch::from_blob(mask.data(), x.sizes(), torch::kByte).clone();
  const std::vector<int64_t> rshape = axis ? std::vector<int64_t>{channels} : std::vector<int64_t>{};
  e.dmin = torch::from_blob(below.data(), rshape, torch::kDouble).clone().to(min_in.scalar_type());
  e.dmax = torch::from_blob(above.data(), rshape, torch::kDouble).clone().to(max_in.scalar_type());
  return e;
}

Expected reference(const Tensor& x, const Tensor& min, const Tensor& max,
                   std::optional<int64_t> axis, int num_bits, bool narrow_range, const Tensor& g) {
  if (x.scalar_type() == torch::kDouble) {
    return reference_typed<double>(x, min, max, axis, num_bits, narrow_range, g);
  }
  return reference_typed<float>(x, min, max, axis, num_bits, narrow_range, g);
}

// ---------------------------------------------------------------------------
// Comparisons. Each returns "" on success, else a description of the first
// difference (Catch prints it when CHECK(... == "") fails).
// ---------------------------------------------------------------------------

std::string describe(const Tensor& t) {
  std::ostringstream s;
  s << t.scalar_type() << t.sizes();
  return s.str();
}

// Bit-for-bit (any NaN equals any NaN; +0.0 differs from -0.0).
std::string bitwise_mismatch(const Tensor& got, const Tensor& want) {
  if (!got.defined() || !want.defined()) return "undefined tensor";
  if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes()) {
    return "got " + describe(got) + ", want " + describe(want);
  }
  const Tensor a = got.detach().contiguous();
  const Tensor b = want.detach().contiguous();
  const Tensor ad = a.to(torch::kDouble).reshape({-1});
  const Tensor bd = b.to(torch::kDouble).reshape({-1});
  const auto* pa = static_cast<const char*>(a.data_ptr());
  const auto* pb = static_cast<const char*>(b.data_ptr());
  const size_t es = a.element_size();
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double va = ad.data_ptr<double>()[i];
    const double vb = bd.data_ptr<double>()[i];
    if (std::isnan(va) && std::isnan(vb)) continue;
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0) {
      std::ostringstream s;
      s.precision(17);
      s << "flat index " << i << ": got " << va << ", want " << vb << " (" << describe(a)
        << ")";
      return s.str();
    }
  }
  return "";
}

double ulp_at(double v, torch::ScalarType dtype) {
  if (dtype == torch::kFloat) {
    const float f = static_cast<float>(v);
    return std::nextafter(std::abs(f), std::numeric_limits<float>::infinity()) - std::abs(f);
  }
  return std::nextafter(std::abs(v), std::numeric_limits<double>::infinity()) - std::abs(v);
}

// Range gradients: equal up to the order of the double accumulation.
std::string sum_mismatch(const Tensor& got, const Tensor& want, const std::vector<double>& abs_sum,
                         const std::vector<int64_t>& count) {
  if (!got.defined()) return "undefined range gradient";
  if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes()) {
    return "got " + describe(got) + ", want " + describe(want);
  }
  const Tensor a = got.detach().to(torch::kDouble).contiguous().reshape({-1});
  const Tensor b = want.detach().to(torch::kDouble).contiguous().reshape({-1});
  for (int64_t c = 0; c < a.numel(); ++c) {
    const double va = a.data_ptr<double>()[c];
    const double vb = b.data_ptr<double>()[c];
    const double tol = 2.0 * static_cast<double>(count[c] + 1) * std::ldexp(1.0, -53) * abs_sum[c] +
                       ulp_at(vb, want.scalar_type());
    if (!(std::abs(va - vb) <= tol)) {
      std::ostringstream s;
      s.precision(17);
      s << "range " << c << ": got " << va << ", want " << vb << " (tolerance " << tol << ")";
      return s.str();
    }
  }
  return "";
}

// ---------------------------------------------------------------------------
// Inputs.
// ---------------------------------------------------------------------------

enum class Layout { Contiguous, ChannelsLast, Transposed, Strided };

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "contiguous";
    case Layout::ChannelsLast: return "channels_last";
    case Layout::Transposed: return "transposed";
    case Layout::Strided: return "strided";
  }
  return "?";
}

// A leaf holding x's values in the requested layout, and the view of it
// that is passed to the op (the view is the leaf itself except for Strided).
struct LaidOut {
  Tensor leaf;
  Tensor view;
  Tensor grad_view() const;  // the leaf's gradient seen through the view
  Layout layout;
};

Tensor apply_view(const Tensor& t, Layout layout) {
  if (layout == Layout::Strided) {
    return t.slice(-1, 0, std::nullopt, 2);
  }
  return t;
}

Tensor LaidOut::grad_view() const { return apply_view(leaf.grad(), layout); }

LaidOut lay_out(const Tensor& x, Layout layout, bool requires_grad) {
  Tensor leaf;
  switch (layout) {
    case Layout::Contiguous:
      leaf = x.contiguous();
      break;
    case Layout::ChannelsLast:
      leaf = x.contiguous(torch::MemoryFormat::ChannelsLast);
      break;
    case Layout::Transposed: {
      // Dense, every stride order reversed: same values, reversed memory order.
      std::vector<int64_t> rev;
      for (int64_t d = x.dim() - 1; d >= 0; --d) rev.push_back(d);
      leaf = x.permute(rev).contiguous().permute(rev);
      break;
    }
    case Layout::Strided: {
      // Every other element of a twice-as-long last dimension: not dense.
      auto sizes = x.sizes().vec();
      sizes.back() *= 2;
      leaf = torch::full(sizes, 1234.5, x.options());
      leaf.slice(-1, 0, std::nullopt, 2).copy_(x);
      break;
    }
  }
  leaf = leaf.detach();
  if (requires_grad) leaf.requires_grad_(true);
  return {leaf, apply_view(leaf, layout), layout};
}

struct Case {
  std::vector<int64_t> shape;
  std::optional<int64_t> axis;  // nullopt: per tensor
  Layout layout = Layout::Contiguous;
  torch::ScalarType dtype = torch::kFloat;
  torch::ScalarType range_dtype = torch::kFloat;
  int num_bits = 8;
  bool narrow_range = false;
  bool nonfinite = false;  // also NaN and +-inf inputs
  uint32_t seed = 1;
};

std::string describe(const Case& c) {
  std::ostringstream s;
  s << "shape " << c10::IntArrayRef(c.shape) << " axis "
    << (c.axis ? std::to_string(*c.axis) : std::string("none")) << " layout "
    << layout_name(c.layout) << " dtype " << c.dtype << " range dtype " << c.range_dtype
    << " bits " << c.num_bits << " narrow " << c.narrow_range << " nonfinite " << c.nonfinite
    << " seed " << c.seed;
  return s.str();
}

struct Inputs {
  Tensor x;    // contiguous, c.dtype
  Tensor min;  // c.range_dtype, [] or [C]
  Tensor max;
  Tensor g;    // contiguous, c.dtype
};

// Ranges of many kinds: symmetric, asymmetric, not containing 0 (both
// signs), degenerate, touching 0, [-1, 1].
std::pair<double, double> random_range(int kind, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0.05, 3.0);
  const double a = u(rng), b = u(rng);
  switch (kind % 7) {
    case 0: return {-a, a};
    case 1: return {-a, b};
    case 2: return {a, a + b};
    case 3: return {-a - b, -a};
    case 4: return {a - 1.5, a - 1.5};
    case 5: return {0.0, a};
    default: return {-1.0, 1.0};
  }
}

// Random values around each range, with a good share of special values:
// nudged bounds, their neighbours outside, grid points, grid midpoints
// (ties), zeros, and optionally NaN and infinities.
Inputs make_inputs(const Case& c) {
  std::mt19937 rng(c.seed);
  torch::manual_seed(c.seed);
  const int64_t ndim = static_cast<int64_t>(c.shape.size());
  int64_t channels = 1, inner = 1;
  if (c.axis) {
    const int64_t ax = norm_axis(*c.axis, ndim);
    channels = c.shape[ax];
    for (int64_t d = ax + 1; d < ndim; ++d) inner *= c.shape[d];
  }
  const int kind0 = std::uniform_int_distribution<int>(0, 6)(rng);
  std::vector<double> lo(channels), hi(channels);
  for (int64_t ch = 0; ch < channels; ++ch) {
    std::tie(lo[ch], hi[ch]) = random_range(c.axis ? kind0 + static_cast<int>(ch) : kind0, rng);
  }
  const Tensor min = torch::tensor(lo, torch::kDouble).to(c.range_dtype);
  const Tensor max = torch::tensor(hi, torch::kDouble).to(c.range_dtype);
  const Tensor min_out = c.axis ? min : min.reshape({});
  const Tensor max_out = c.axis ? max : max.reshape({});

  // Special values use the nudged range in the compute type.
  std::vector<RefRange<double>> nudged;
  const bool is_double = c.dtype == torch::kDouble;
  const Tensor lo_c = min.to(torch::kDouble), hi_c = max.to(torch::kDouble);
  for (int64_t ch = 0; ch < channels; ++ch) {
    const double l = lo_c.data_ptr<double>()[ch], h = hi_c.data_ptr<double>()[ch];
    if (is_double) {
      nudged.push_back(ref_nudge<double>(l, h, c.num_bits, c.narrow_range));
    } else {
      const auto r = ref_nudge<float>(static_cast<float>(l), static_cast<float>(h), c.num_bits,
                                      c.narrow_range);
      nudged.push_back({r.lo, r.hi, r.scale, r.zero_index, r.degenerate});
    }
  }
  int64_t numel = 1;
  for (auto s : c.shape) numel *= s;
  const int64_t levels = (int64_t{1} << c.num_bits) - 1 - (c.narrow_range ? 1 : 0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> special(0, c.nonfinite ? 12 : 9);
  std::uniform_int_distribution<int64_t> level(0, levels);
  std::vector<double> xv(numel);
  for (int64_t i = 0; i < numel; ++i) {
    const auto& r = nudged[c.axis ? (i / inner) % channels : 0];
    const double width = r.degenerate ? 1.0 : r.hi - r.lo;
    const double base = r.degenerate ? -0.5 : r.lo;
    double v = base - 0.25 * width + 1.5 * width * unit(rng);
    if (unit(rng) < 0.3) {
      const auto k = static_cast<double>(level(rng));
      // Computed in the compute type so that ties and grid points are the
      // values the kernel sees.
      auto in_t = [&](double a) { return is_double ? a : static_cast<double>(static_cast<float>(a)); };
      const float lof = static_cast<float>(r.lo), hif = static_cast<float>(r.hi),
                  sf = static_cast<float>(r.scale);
      switch (special(rng)) {
        case 0: v = r.lo; break;
        case 1: v = r.hi; break;
        case 2:
          v = is_double ? std::nextafter(r.lo, -INFINITY)
                        : std::nextafter(lof, -INFINITY);
          break;
        case 3:
          v = is_double ? std::nextafter(r.hi, INFINITY) : std::nextafter(hif, INFINITY);
          break;
        case 4:
        case 5:  // a grid midpoint: lo + (k + 0.5) * scale
          v = is_double ? r.lo + (k + 0.5) * r.scale
                        : static_cast<double>(lof + (static_cast<float>(k) + 0.5f) * sf);
          break;
        case 6: v = is_double ? r.lo + k * r.scale : static_cast<double>(lof + static_cast<float>(k) * sf); break;
        case 7: v = 0.0; break;
        case 8: v = -0.0; break;
        case 9: v = in_t(v); break;
        case 10: v = std::numeric_limits<double>::quiet_NaN(); break;
        case 11: v = INFINITY; break;
        default: v = -INFINITY; break;
      }
    }
    xv[i] = v;
  }
  Inputs in;
  in.x = torch::tensor(xv, torch::kDouble).reshape(c.shape).to(c.dtype);
  in.min = min_out;
  in.max = max_out;
  // Gradients of both signs and varied magnitudes.
  in.g = (torch::randn(c.shape, torch::kDouble) *
          torch::exp(torch::randn(c.shape, torch::kDouble)))
             .to(c.dtype);
  return in;
}

// ---------------------------------------------------------------------------
// Running the ops.
// ---------------------------------------------------------------------------

Tensor public_op(const Tensor& x, const Tensor& min, const Tensor& max,
                 std::optional<int64_t> axis, int num_bits, bool narrow_range) {
  if (axis) {
    return edgeqat::fake_quant_with_min_max_vars_per_channel(x, min, max, *axis, num_bits,
                                                             narrow_range);
  }
  return edgeqat::fake_quant_with_min_max_vars(x, min, max, num_bits, narrow_range);
}

struct Got {
  Tensor y, dx, dmin, dmax, view;
};

// Forward and backward through the public API and its C++ autograd.
Got run_autograd(const Case& c, const Inputs& in) {
  const LaidOut x = lay_out(in.x, c.layout, /*requires_grad=*/true);
  const Tensor min = in.min.detach().clone().requires_grad_(true);
  const Tensor max = in.max.detach().clone().requires_grad_(true);
  const Tensor y = public_op(x.view, min, max, c.axis, c.num_bits, c.narrow_range);
  y.backward(in.g);
  return {y.detach(), x.grad_view(), min.grad(), max.grad(), x.view};
}

using CachemaskFn = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                               std::optional<int64_t>, int64_t, bool);
using BackwardFn = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                      std::optional<int64_t>, at::ScalarType,
                                                      at::ScalarType);

// The internal ops through the dispatcher: on CPU tensors, the fused kernels.
std::tuple<Tensor, Tensor> fused_cachemask(const Tensor& x, const Tensor& min, const Tensor& max,
                                           std::optional<int64_t> axis, int64_t num_bits,
                                           bool narrow_range) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_fake_quant_cachemask", "")
                             .typed<CachemaskFn>();
  return op.call(x, min, max, axis, num_bits, narrow_range);
}

std::tuple<Tensor, Tensor, Tensor> fused_backward(const Tensor& grad, const Tensor& mask,
                                                  std::optional<int64_t> axis,
                                                  at::ScalarType min_dtype,
                                                  at::ScalarType max_dtype) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("edgeqat::_fake_quant_backward", "")
                             .typed<BackwardFn>();
  return op.call(grad, mask, axis, min_dtype, max_dtype);
}

// Everything the public ops compute for a case, against the reference.
void check_against_reference(const Case& c) {
  INFO(describe(c));
  const Inputs in = make_inputs(c);
  const Expected want = reference(in.x, in.min, in.max, c.axis, c.num_bits, c.narrow_range, in.g);
  const Got got = run_autograd(c, in);
  CHECK(bitwise_mismatch(got.y, want.y) == "");
  CHECK(bitwise_mismatch(got.dx, want.dx) == "");
  CHECK(sum_mismatch(got.dmin, want.dmin, want.abs_below, want.n_below) == "");
  CHECK(sum_mismatch(got.dmax, want.dmax, want.abs_above, want.n_above) == "");
  // Output and input gradient keep x's dense layout.
  if (c.layout != Layout::Strided && in.x.numel() > 1) {
    CHECK(got.y.strides() == got.view.strides());
  }

  // Without autograd (inference path, no mask): the same output.
  {
    torch::NoGradGuard no_grad;
    const LaidOut x = lay_out(in.x, c.layout, false);
    const Tensor y = public_op(x.view, in.min, in.max, c.axis, c.num_bits, c.narrow_range);
    CHECK(bitwise_mismatch(y, want.y) == "");
  }
  // The internal op: output and mask.
  {
    const LaidOut x = lay_out(in.x, c.layout, false);
    const auto [y, mask] =
        fused_cachemask(x.view, in.min, in.max, c.axis, c.num_bits, c.narrow_range);
    CHECK(bitwise_mismatch(y, want.y) == "");
    CHECK(bitwise_mismatch(mask, want.mask) == "");
  }
}

// Sweeps of shapes and axes that reach every loop of the CPU kernel: "runs"
// (slow-moving channel, several pieces per run for long runs), "positions"
// (fast-moving channel, chunked partial sums) and the parallel split.
std::vector<Case> per_channel_cases() {
  std::vector<Case> cases;
  auto add = [&](std::vector<int64_t> shape, int64_t axis, Layout layout) {
    Case c;
    c.shape = std::move(shape);
    c.axis = axis;
    c.layout = layout;
    cases.push_back(c);
  };
  // axis 0
  add({6, 37}, 0, Layout::Contiguous);
  add({5, 300}, 0, Layout::Contiguous);
  add({3, 20000}, 0, Layout::Contiguous);  // runs longer than one piece
  add({8, 3, 3, 3}, 0, Layout::Contiguous);  // conv weight
  add({8, 3, 3, 3}, 0, Layout::ChannelsLast);
  // last axis
  add({50, 7}, -1, Layout::Contiguous);
  add({2000, 9}, 1, Layout::Contiguous);
  add({40000, 3}, -1, Layout::Contiguous);  // parallel, many chunks
  add({4, 3, 70}, 2, Layout::Contiguous);
  // a middle axis
  add({4, 5, 30}, 1, Layout::Contiguous);
  add({3, 4, 100}, 1, Layout::Contiguous);
  add({2, 3, 5, 7}, -2, Layout::Contiguous);
  // channels-last activations, channel axis 1
  add({2, 8, 5, 6}, 1, Layout::ChannelsLast);
  add({4, 16, 32, 32}, 1, Layout::ChannelsLast);  // parallel, chunked
  add({2, 8, 5, 6}, -1, Layout::ChannelsLast);
  // reversed memory order and non-dense views
  add({11, 7}, 0, Layout::Transposed);
  add({3, 4, 5}, 1, Layout::Transposed);
  add({6, 40}, 0, Layout::Strided);
  add({6, 40}, 1, Layout::Strided);
  add({2, 3, 5, 4}, 3, Layout::Strided);
  // one channel, empty tensors
  add({1, 100}, 0, Layout::Contiguous);
  add({0, 3}, 1, Layout::Contiguous);
  add({3, 0}, 0, Layout::Contiguous);
  return cases;
}

std::vector<Case> per_tensor_cases() {
  std::vector<Case> cases;
  auto add = [&](std::vector<int64_t> shape, Layout layout) {
    Case c;
    c.shape = std::move(shape);
    c.layout = layout;
    cases.push_back(c);
  };
  add({}, Layout::Contiguous);
  add({1}, Layout::Contiguous);
  add({1000}, Layout::Contiguous);
  add({3, 4, 5}, Layout::Contiguous);
  add({300000}, Layout::Contiguous);  // parallel, many pieces
  add({2, 8, 5, 6}, Layout::ChannelsLast);
  add({7, 9, 11}, Layout::Transposed);
  add({13, 40}, Layout::Strided);
  add({0}, Layout::Contiguous);
  add({4, 0, 3}, Layout::Contiguous);
  return cases;
}

// (num_bits, narrow_range) combinations, cycled through the cases.
const std::vector<std::pair<int, bool>> kGrids = {{8, false}, {8, true}, {2, false},
                                                  {16, true}, {4, false}, {16, false},
                                                  {2, true},  {7, false}};

}  // namespace

// ===========================================================================
// The reference itself, on hand-computed values.
// ===========================================================================

TEST_CASE("reference: min=-1, max=1, 8 bits nudges to [-0.9960785, 1.0039216] in float32",
          "[reference]") {
  const auto r = ref_nudge<float>(-1.f, 1.f, 8, false);
  CHECK(r.scale == 2.f / 255.f);
  CHECK(r.zero_index == 127.f);  // 127.5 in exact arithmetic, 127.49999 in float32
  CHECK(r.lo == Approx(-0.9960785f).margin(1e-7));
  CHECK(r.hi == Approx(1.0039216f).margin(1e-7));
  // In double the zero point rounds the other way: float32 matters.
  const auto rd = ref_nudge<double>(-1.0, 1.0, 8, false);
  CHECK(rd.zero_index == 128.0);
}

// ===========================================================================
// Forward: hand-computed values through the public API.
// ===========================================================================

namespace {

Tensor fq(std::vector<float> xs, float min, float max, int bits = 8, bool narrow = false) {
  return edgeqat::fake_quant_with_min_max_vars(torch::tensor(xs), torch::tensor(min),
                                               torch::tensor(max), bits, narrow);
}

std::vector<float> values(const Tensor& t) {
  const Tensor c = t.detach().to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

TEST_CASE("forward: min=-1, max=1, 8 bits: nudged range, x = 0 gives exactly 0", "[forward]") {
  const float scale = 2.f / 255.f;
  const auto y = values(fq({-2.f, -0.9960785f, 0.f, -0.f, 1.0039216f, 2.f, 1e30f}, -1.f, 1.f));
  CHECK(y[0] == -127.f * scale);
  CHECK(y[0] == Approx(-0.9960785f).margin(1e-7));
  CHECK(y[1] == -127.f * scale);
  CHECK(y[2] == 0.f);
  CHECK_FALSE(std::signbit(y[2]));
  CHECK(y[3] == 0.f);
  CHECK(y[4] == 128.f * scale);
  CHECK(y[5] == 128.f * scale);
  CHECK(y[5] == Approx(1.0039216f).margin(1e-7));
  CHECK(y[6] == 128.f * scale);
}

TEST_CASE("forward: x = 0 maps to exactly 0 for every kind of range", "[forward]") {
  std::mt19937 rng(7);
  for (int i = 0; i < 500; ++i) {
    auto [lo, hi] = random_range(i, rng);
    for (const auto& [bits, narrow] : kGrids) {
      INFO("range [" << lo << ", " << hi << "] bits " << bits << " narrow " << narrow);
      const float y = values(fq({0.f}, static_cast<float>(lo), static_cast<float>(hi), bits,
                                narrow))[0];
      CHECK(y == 0.f);
      CHECK_FALSE(std::signbit(y));
    }
  }
}

TEST_CASE("forward: ties at grid midpoints round up (exact scale 1/16)", "[forward]") {
  // min=-8, max=7.9375: scale = 1/16 exactly, zero point 128, nudged range
  // unchanged; every midpoint below is exact in float32.
  const auto y = values(fq({-0.03125f, 0.03125f, 1.53125f, -1.53125f, -7.96875f, 7.90625f,
                            -8.03125f, 7.96875f, 0.03125f - std::ldexp(1.f, -20),
                            -0.03125f - std::ldexp(1.f, -20)},
                           -8.f, 7.9375f));
  CHECK(y[0] == 0.f);  // tie between -0.0625 and 0: up
  CHECK(y[1] == 0.0625f);
  CHECK(y[2] == 1.5625f);
  CHECK(y[3] == -1.5f);
  CHECK(y[4] == -7.9375f);
  CHECK(y[5] == 7.9375f);
  CHECK(y[6] == -8.f);  // below the range: clamped
  CHECK(y[7] == 7.9375f);
  CHECK(y[8] == 0.f);  // just below a midpoint: down
  CHECK(y[9] == -0.0625f);
}

TEST_CASE("forward: a zero point exactly at .5 rounds up (away from zero)", "[forward]") {
  // min = -7.90625, max = 8.03125: scale = 1/16 exactly and zp_from_min =
  // 126.5 exactly, in float32 and in float64. std::round gives 127, so the
  // nudged range is [-7.9375, 8]; ties-to-even would give 126, [-7.875, 8.0625].
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    INFO("dtype " << dtype);
    const Tensor x = torch::tensor({-100.0, 100.0, 0.0, -7.90625}, dtype);
    const Tensor y = edgeqat::fake_quant_with_min_max_vars(
        x, torch::tensor(-7.90625, dtype), torch::tensor(8.03125, dtype));
    const auto v = values(y);
    CHECK(v[0] == -7.9375f);
    CHECK(v[1] == 8.f);
    CHECK(v[2] == 0.f);
    CHECK(v[3] == -7.875f);  // 0.03125 above the nudged min: a tie, rounds up
    // The composite kernel nudges the same way.
    const auto [yc, mc] = edgeqat::ops::composite::fake_quant_cachemask(
        x, torch::tensor(-7.90625, dtype), torch::tensor(8.03125, dtype), std::nullopt, 8, false);
    CHECK(bitwise_mismatch(yc, y) == "");
  }
}

TEST_CASE("forward: 2 bits, min=-1, max=2: grid {-1, 0, 1, 2}", "[forward]") {
  const auto y = values(fq({-3.f, -1.5f, -1.f, -0.5f, -0.49f, 0.49f, 0.5f, 1.5f, 2.f, 2.6f},
                           -1.f, 2.f, 2));
  const std::vector<float> want = {-1.f, -1.f, -1.f, 0.f, 0.f, 0.f, 1.f, 2.f, 2.f, 2.f};
  CHECK(y == want);
}

TEST_CASE("forward: 16 bits, exact scale 1/1024", "[forward]") {
  const float max = 65535.f / 1024.f;  // 63.9990234375, exact
  const float s = 1.f / 1024.f;
  const auto y = values(fq({0.5f * s, 1.5f * s, 0.49f * s, -1.f, 100.f, 12345.5f * s}, 0.f, max, 16));
  CHECK(y[0] == s);
  CHECK(y[1] == 2.f * s);
  CHECK(y[2] == 0.f);
  CHECK(y[3] == 0.f);
  CHECK(y[4] == max);
  CHECK(y[5] == 12346.f * s);
}

namespace {

// Number of distinct outputs over a fine sweep of [lo - 1, hi + 1].
int64_t count_levels(float lo, float hi, int bits, bool narrow, int64_t n) {
  const Tensor x = torch::linspace(lo - 1.f, hi + 1.f, n);
  const Tensor y = edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(lo), torch::tensor(hi),
                                                         bits, narrow);
  const Tensor diffs = y.slice(0, 1).ne(y.slice(0, 0, -1));
  // Monotone output: distinct values = 1 + number of steps.
  CHECK(y.slice(0, 1).ge(y.slice(0, 0, -1)).all().item<bool>());
  return 1 + diffs.sum().item<int64_t>();
}

}  // namespace

TEST_CASE("forward: number of grid levels for 2, 8 and 16 bits, narrow or not", "[forward]") {
  CHECK(count_levels(-1.f, 1.f, 2, false, 10001) == 4);
  CHECK(count_levels(-1.f, 1.f, 2, true, 10001) == 3);
  CHECK(count_levels(-1.f, 1.f, 8, false, 100001) == 256);
  CHECK(count_levels(-1.f, 1.f, 8, true, 100001) == 255);
  CHECK(count_levels(-3.f, 5.f, 16, false, 4000001) == 65536);
  CHECK(count_levels(-3.f, 5.f, 16, true, 4000001) == 65535);
}

TEST_CASE("forward: narrow range 8 bits is symmetric for min=-1, max=1", "[forward]") {
  const float scale = 2.f / 254.f;
  const auto y = values(fq({-5.f, 5.f, -1.f, 1.f, 0.f, 0.3f, -0.3f}, -1.f, 1.f, 8, true));
  CHECK(y[0] == -127.f * scale);
  CHECK(y[1] == 127.f * scale);
  CHECK(y[0] == Approx(-1.f).margin(1e-6));
  CHECK(y[1] == Approx(1.f).margin(1e-6));
  CHECK(y[4] == 0.f);
  CHECK(y[5] == -y[6]);
}

TEST_CASE("forward: ranges not containing 0 are shifted to touch 0", "[forward]") {
  SECTION("0 < min < max gives [0, max - min]") {
    const float scale = 1.5f / 255.f;
    const auto y = values(fq({-1.f, 0.f, 0.25f, 1.5f, 2.f, 3.f}, 0.5f, 2.f));
    CHECK(y[0] == 0.f);
    CHECK(y[1] == 0.f);
    CHECK(y[2] == std::floor(0.25f / scale + 0.5f) * scale);
    CHECK(y[4] == 255.f * scale);
    CHECK(y[4] == Approx(1.5f).margin(1e-6));
    CHECK(y[5] == 255.f * scale);
  }
  SECTION("min < max < 0 gives [min - max, 0]") {
    const float scale = 2.f / 255.f;
    const auto y = values(fq({-5.f, -3.f, -1.5f, -0.5f, 0.f, 1.f}, -3.f, -1.f));
    CHECK(y[0] == -255.f * scale);
    CHECK(y[0] == Approx(-2.f).margin(1e-6));
    CHECK(y[1] == -255.f * scale);
    CHECK(y[3] == (std::floor((-0.5f + 255.f * scale) / scale + 0.5f) - 255.f) * scale);
    CHECK(y[4] == 0.f);
    CHECK(y[5] == 0.f);
  }
}

TEST_CASE("forward: degenerate range min == max gives 0 everywhere", "[forward][degenerate]") {
  for (float v : {0.f, 0.5f, -3.f}) {
    INFO("min = max = " << v);
    const auto y = values(fq({-2.f, -0.f, 0.f, 0.3f, 7.f}, v, v));
    for (float e : y) {
      CHECK(e == 0.f);
    }
  }
  // A width whose float32 scale underflows behaves the same.
  const auto y = values(fq({-2.f, 0.f, 1e-45f, 2.f}, 0.f, 1e-45f));
  for (float e : y) CHECK(e == 0.f);
}

TEST_CASE("forward: float64 inputs nudge in float64", "[forward]") {
  const Tensor y = edgeqat::fake_quant_with_min_max_vars(
      torch::tensor({-2.0, 2.0}, torch::kDouble), torch::tensor(-1.0, torch::kDouble),
      torch::tensor(1.0, torch::kDouble));
  REQUIRE(y.scalar_type() == torch::kDouble);
  // In double, zp_from_min = 127.5 exactly rounds up to 128.
  CHECK(y[0].item<double>() == -128.0 * (2.0 / 255.0));
  CHECK(y[1].item<double>() == 127.0 * (2.0 / 255.0));
}

TEST_CASE("forward: float32 x with float64 min/max nudges in float32", "[forward]") {
  // 0.1 is not a float32: the range is converted to float before nudging.
  const Tensor x = torch::linspace(-2.f, 2.f, 1001);
  const Tensor g = torch::ones_like(x);
  const Tensor mn = torch::tensor(-0.7, torch::kDouble), mx = torch::tensor(0.1, torch::kDouble);
  const Expected want = reference(x, mn, mx, std::nullopt, 8, false, g);
  const Tensor y = edgeqat::fake_quant_with_min_max_vars(x, mn, mx);
  CHECK(y.scalar_type() == torch::kFloat);
  CHECK(bitwise_mismatch(y, want.y) == "");
}

TEST_CASE("forward: non-finite inputs", "[forward]") {
  const float inf = std::numeric_limits<float>::infinity();
  const auto y = values(fq({std::nanf(""), inf, -inf}, -1.f, 1.f));
  CHECK(std::isnan(y[0]));
  CHECK(y[1] == 128.f * (2.f / 255.f));
  CHECK(y[2] == -127.f * (2.f / 255.f));
}

TEST_CASE("forward: half and bfloat16 compute in float32", "[forward]") {
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    Case c;
    c.shape = {3, 50};
    c.dtype = dtype;
    c.seed = 11;
    check_against_reference(c);
    c.axis = 0;
    c.seed = 12;
    check_against_reference(c);
  }
}

// ===========================================================================
// Gradients: hand-computed cases.
// ===========================================================================

TEST_CASE("gradients: mask on the nudged bounds, both ends inclusive", "[backward]") {
  const float lo = -127.f * (2.f / 255.f), hi = 128.f * (2.f / 255.f);
  const Tensor x = torch::tensor({std::nextafter(lo, -10.f), lo, 0.f, hi, std::nextafter(hi, 10.f),
                                  -1.f, 1.f, -5.f, 5.f})
                       .requires_grad_(true);
  const Tensor mn = torch::tensor(-1.f).requires_grad_(true);
  const Tensor mx = torch::tensor(1.f).requires_grad_(true);
  const Tensor g = torch::tensor({1.f, 2.f, 4.f, 8.f, 16.f, 32.f, 64.f, 128.f, 256.f});
  edgeqat::fake_quant_with_min_max_vars(x, mn, mx).backward(g);
  // -1 is below the nudged min -0.99607843; 1 is inside [.., 1.0039216].
  const std::vector<float> want_dx = {0.f, 2.f, 4.f, 8.f, 0.f, 0.f, 64.f, 0.f, 0.f};
  CHECK(values(x.grad()) == want_dx);
  CHECK(mn.grad().item<float>() == 1.f + 32.f + 128.f);
  CHECK(mx.grad().item<float>() == 16.f + 256.f);
  CHECK(mn.grad().dim() == 0);
  CHECK(mx.grad().dim() == 0);
}

TEST_CASE("gradients: per channel sums run over every other axis", "[backward]") {
  // x [2, 3, 2], axis 1: channel c has range [-1 - c, 1 + c] (8 bits).
  const Tensor x = torch::tensor({-9.f, 0.f, 9.f, 0.1f, -0.5f, 3.5f,  //
                                  -1.5f, 1.5f, -2.5f, 2.5f, 0.f, -3.5f})
                       .reshape({2, 3, 2})
                       .requires_grad_(true);
  const Tensor mn = torch::tensor({-1.f, -2.f, -3.f}).requires_grad_(true);
  const Tensor mx = torch::tensor({1.f, 2.f, 3.f}).requires_grad_(true);
  const Tensor g = torch::arange(1, 13, torch::kFloat).reshape({2, 3, 2});
  edgeqat::fake_quant_with_min_max_vars_per_channel(x, mn, mx, 1).backward(g);
  // channel 0: x = -9 (g 1, below), 0 (g 2), -1.5 (g 7, below), 1.5 (g 8, above)
  // channel 1: x = 9 (g 3, above), 0.1 (g 4), -2.5 (g 9, below), 2.5 (g 10, above)
  // channel 2: x = -0.5 (g 5), 3.5 (g 6, above), 0 (g 11), -3.5 (g 12, below)
  CHECK(values(mn.grad()) == std::vector<float>{1.f + 7.f, 9.f, 12.f});
  CHECK(values(mx.grad()) == std::vector<float>{8.f, 3.f + 10.f, 6.f});
  CHECK(values(x.grad()) ==
        std::vector<float>{0.f, 2.f, 0.f, 4.f, 5.f, 0.f, 0.f, 0.f, 0.f, 0.f, 11.f, 0.f});
}

TEST_CASE("gradients: degenerate range masks against [0, 0]", "[backward][degenerate]") {
  const Tensor x = torch::tensor({-1.f, -0.f, 0.f, 2.f, 3.f}).requires_grad_(true);
  const Tensor mn = torch::tensor(0.5f).requires_grad_(true);
  const Tensor mx = torch::tensor(0.5f).requires_grad_(true);
  const Tensor y = edgeqat::fake_quant_with_min_max_vars(x, mn, mx);
  y.backward(torch::tensor({1.f, 2.f, 4.f, 8.f, 16.f}));
  CHECK(values(y) == std::vector<float>(5, 0.f));
  CHECK(values(x.grad()) == std::vector<float>{0.f, 2.f, 4.f, 0.f, 0.f});
  CHECK(mn.grad().item<float>() == 1.f);
  CHECK(mx.grad().item<float>() == 24.f);
  CHECK_FALSE(std::isnan(mn.grad().item<float>()));
}

TEST_CASE("gradients: NaN inputs send no gradient anywhere", "[backward]") {
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = torch::tensor({std::nanf(""), 0.f, inf, -inf}).requires_grad_(true);
  const Tensor mn = torch::tensor(-1.f).requires_grad_(true);
  const Tensor mx = torch::tensor(1.f).requires_grad_(true);
  edgeqat::fake_quant_with_min_max_vars(x, mn, mx).backward(torch::tensor({1.f, 2.f, 4.f, 8.f}));
  CHECK(values(x.grad()) == std::vector<float>{0.f, 2.f, 0.f, 0.f});
  CHECK(mn.grad().item<float>() == 8.f);
  CHECK(mx.grad().item<float>() == 4.f);
}

TEST_CASE("gradients: sum().backward() (expanded incoming gradient)", "[backward]") {
  for (int64_t axis : {-1, 0}) {
    INFO("axis " << axis);
    Case c;
    c.shape = {64, 5};
    c.axis = axis;
    c.seed = 3;
    const Inputs in = make_inputs(c);
    const Tensor x = in.x.clone().requires_grad_(true);
    const Tensor mn = in.min.clone().requires_grad_(true);
    const Tensor mx = in.max.clone().requires_grad_(true);
    edgeqat::fake_quant_with_min_max_vars_per_channel(x, mn, mx, axis).sum().backward();
    const Expected want =
        reference(in.x, in.min, in.max, axis, 8, false, torch::ones_like(in.x));
    CHECK(bitwise_mismatch(x.grad(), want.dx) == "");
    CHECK(sum_mismatch(mn.grad(), want.dmin, want.abs_below, want.n_below) == "");
    CHECK(sum_mismatch(mx.grad(), want.dmax, want.abs_above, want.n_above) == "");
  }
}

TEST_CASE("gradients: range gradients take the dtype of min and max", "[backward]") {
  const Tensor x = (3 * torch::randn({100})).requires_grad_(true);
  const Tensor mn = torch::tensor(-1.0, torch::kDouble).requires_grad_(true);
  const Tensor mx = torch::tensor(1.f).requires_grad_(true);
  edgeqat::fake_quant_with_min_max_vars(x, mn, mx).sum().backward();
  CHECK(x.grad().scalar_type() == torch::kFloat);
  CHECK(mn.grad().scalar_type() == torch::kDouble);
  CHECK(mx.grad().scalar_type() == torch::kFloat);
  CHECK(mn.grad().item<double>() == (x.detach() < -127.f * (2.f / 255.f)).sum().item<double>());
  CHECK(mx.grad().item<double>() == (x.detach() > 128.f * (2.f / 255.f)).sum().item<double>());
}

TEST_CASE("gradients: only x, or only the ranges, require grad", "[backward]") {
  Case c;
  c.shape = {40};
  c.seed = 5;
  const Inputs in = make_inputs(c);
  const Expected want = reference(in.x, in.min, in.max, std::nullopt, 8, false, in.g);
  {
    const Tensor x = in.x.clone().requires_grad_(true);
    edgeqat::fake_quant_with_min_max_vars(x, in.min, in.max).backward(in.g);
    CHECK(bitwise_mismatch(x.grad(), want.dx) == "");
  }
  {
    const Tensor mn = in.min.clone().requires_grad_(true);
    const Tensor mx = in.max.clone().requires_grad_(true);
    edgeqat::fake_quant_with_min_max_vars(in.x, mn, mx).backward(in.g);
    CHECK(sum_mismatch(mn.grad(), want.dmin, want.abs_below, want.n_below) == "");
    CHECK(sum_mismatch(mx.grad(), want.dmax, want.abs_above, want.n_above) == "");
  }
}

// ===========================================================================
// Randomized: forward and all gradients against the reference.
// ===========================================================================

TEST_CASE("reference sweep: per tensor, float32", "[reference][per_tensor]") {
  uint32_t seed = 100;
  for (Case c : per_tensor_cases()) {
    for (size_t k = 0; k < kGrids.size(); k += 3) {
      std::tie(c.num_bits, c.narrow_range) = kGrids[(k + seed) % kGrids.size()];
      c.seed = seed++;
      check_against_reference(c);
    }
  }
}

TEST_CASE("reference sweep: per channel, float32", "[reference][per_channel]") {
  uint32_t seed = 200;
  for (Case c : per_channel_cases()) {
    for (size_t k = 0; k < kGrids.size(); k += 3) {
      std::tie(c.num_bits, c.narrow_range) = kGrids[(k + seed) % kGrids.size()];
      c.seed = seed++;
      check_against_reference(c);
    }
  }
}

TEST_CASE("reference sweep: float64, mixed range dtypes, non-finite inputs", "[reference]") {
  uint32_t seed = 300;
  for (auto [dtype, range_dtype] :
       std::vector<std::pair<torch::ScalarType, torch::ScalarType>>{
           {torch::kDouble, torch::kDouble},
           {torch::kDouble, torch::kFloat},
           {torch::kFloat, torch::kDouble}}) {
    for (Case c : per_channel_cases()) {
      c.dtype = dtype;
      c.range_dtype = range_dtype;
      std::tie(c.num_bits, c.narrow_range) = kGrids[seed % kGrids.size()];
      c.seed = seed++;
      check_against_reference(c);
    }
    for (Case c : per_tensor_cases()) {
      c.dtype = dtype;
      c.range_dtype = range_dtype;
      c.nonfinite = true;
      std::tie(c.num_bits, c.narrow_range) = kGrids[seed % kGrids.size()];
      c.seed = seed++;
      check_against_reference(c);
    }
  }
}

TEST_CASE("reference sweep: per channel with a degenerate channel", "[reference][degenerate]") {
  const Tensor x = (2 * torch::randn({4, 3, 10})).to(torch::kFloat);
  const Tensor mn = torch::tensor({-1.f, 0.5f, 0.f});
  const Tensor mx = torch::tensor({1.f, 0.5f, 0.f});
  const Tensor g = torch::randn({4, 3, 10});
  const Tensor xv = x.clone().requires_grad_(true);
  const Tensor mnv = mn.clone().requires_grad_(true), mxv = mx.clone().requires_grad_(true);
  const Tensor y = edgeqat::fake_quant_with_min_max_vars_per_channel(xv, mnv, mxv, 1);
  y.backward(g);
  const Expected want = reference(x, mn, mx, 1, 8, false, g);
  CHECK(bitwise_mismatch(y, want.y) == "");
  CHECK(y.select(1, 1).eq(0).all().item<bool>());
  CHECK(y.select(1, 2).eq(0).all().item<bool>());
  CHECK(bitwise_mismatch(xv.grad(), want.dx) == "");
  CHECK(sum_mismatch(mnv.grad(), want.dmin, want.abs_below, want.n_below) == "");
  CHECK(sum_mismatch(mxv.grad(), want.dmax, want.abs_above, want.n_above) == "");
}

TEST_CASE("range gradients do not depend on the number of threads", "[backward]") {
  const int threads = at::get_num_threads();
  auto run = [](const Tensor& x, const Tensor& mn, const Tensor& mx, std::optional<int64_t> axis,
                const Tensor& g) {
    const auto [y, mask] = fused_cachemask(x, mn, mx, axis, 8, false);
    return fused_backward(g, mask, axis, torch::kFloat, torch::kFloat);
  };
  torch::manual_seed(0);
  const Tensor x1 = 3 * torch::randn({300000});
  const Tensor g1 = torch::randn({300000});
  const Tensor x2 = (3 * torch::randn({8, 16, 64, 64})).contiguous(torch::MemoryFormat::ChannelsLast);
  const Tensor g2 = torch::randn({8, 16, 64, 64}).contiguous(torch::MemoryFormat::ChannelsLast);
  const Tensor mn2 = -torch::rand({16}) - 0.5, mx2 = torch::rand({16}) + 0.5;
  at::set_num_threads(1);
  const auto a1 = run(x1, torch::tensor(-1.f), torch::tensor(1.f), std::nullopt, g1);
  const auto a2 = run(x2, mn2, mx2, 1, g2);
  at::set_num_threads(std::max(threads, 2));
  const auto b1 = run(x1, torch::tensor(-1.f), torch::tensor(1.f), std::nullopt, g1);
  const auto b2 = run(x2, mn2, mx2, 1, g2);
  at::set_num_threads(threads);
  CHECK(bitwise_mismatch(std::get<1>(a1), std::get<1>(b1)) == "");
  CHECK(bitwise_mismatch(std::get<2>(a1), std::get<2>(b1)) == "");
  CHECK(bitwise_mismatch(std::get<1>(a2), std::get<1>(b2)) == "");
  CHECK(bitwise_mismatch(std::get<2>(a2), std::get<2>(b2)) == "");
}

// ===========================================================================
// Argument errors.
// ===========================================================================

TEST_CASE("errors: num_bits outside [2, 16]", "[errors]") {
  const Tensor x = torch::randn({4});
  const Tensor mn = torch::tensor(-1.f), mx = torch::tensor(1.f);
  REQUIRE_THROWS_AS(edgeqat::fake_quant_with_min_max_vars(x, mn, mx, 1), c10::Error);
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars(x, mn, mx, 1),
                      Catch::Contains("num_bits must be in [2, 16], got 1"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars(x, mn, mx, 17),
                      Catch::Contains("num_bits must be in [2, 16], got 17"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars_per_channel(x, torch::zeros({4}), torch::ones({4}),
                                                        0, 0),
      Catch::Contains("num_bits must be in [2, 16], got 0"));
  // With autograd too.
  const Tensor xg = x.clone().requires_grad_(true);
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(xg, mn, mx, 17),
      Catch::Contains("edgeqat::fake_quant_with_min_max_vars: num_bits must be in [2, 16], got 17"));
  CHECK_NOTHROW(edgeqat::fake_quant_with_min_max_vars(x, mn, mx, 2));
  CHECK_NOTHROW(edgeqat::fake_quant_with_min_max_vars(x, mn, mx, 16));
}

TEST_CASE("errors: non-finite min or max", "[errors]") {
  const Tensor x = torch::randn({4});
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(nan), torch::tensor(1.f)),
      Catch::Contains("edgeqat::fake_quant_with_min_max_vars: min must be finite in Float, got nan"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(-1.f), torch::tensor(inf)),
      Catch::Contains("max must be finite in Float, got inf"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(-inf), torch::tensor(1.f)),
      Catch::Contains("min must be finite in Float, got -inf"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          torch::randn({2, 3}), torch::tensor({-1.f, -1.f, -1.f}),
                          torch::tensor({1.f, 1.f, nan}), 1),
                      Catch::Contains("max[2] must be finite in Float, got nan"));
  // Finite in float64 but not in the compute dtype (float32 for float32 x).
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(-1e39, torch::kDouble),
                                            torch::tensor(1.0, torch::kDouble)),
      Catch::Contains("min must be finite in Float, got -inf"));
  CHECK_NOTHROW(edgeqat::fake_quant_with_min_max_vars(x.to(torch::kDouble),
                                                      torch::tensor(-1e39, torch::kDouble),
                                                      torch::tensor(1.0, torch::kDouble)));
  // With autograd (the internal op reports the public op's name).
  const Tensor xg = x.clone().requires_grad_(true);
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(xg, torch::tensor(nan), torch::tensor(1.f)),
      Catch::Contains("edgeqat::fake_quant_with_min_max_vars: min must be finite"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          torch::randn({2, 3}, torch::requires_grad()),
                          torch::tensor({-1.f, nan, -1.f}), torch::tensor({1.f, 1.f, 1.f}), 1),
                      Catch::Contains("edgeqat::fake_quant_with_min_max_vars_per_channel: "
                                      "min[1] must be finite in Float, got nan"));
}

TEST_CASE("errors: min greater than max", "[errors]") {
  const Tensor x = torch::randn({4});
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(2.f), torch::tensor(1.f)),
      Catch::Contains("min = 2 is greater than max = 1"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          torch::randn({2, 3}), torch::tensor({-1.f, 3.f, -1.f}),
                          torch::tensor({1.f, 1.f, 1.f}), 1),
                      Catch::Contains("min[1] = 3 is greater than max[1] = 1"));
}

TEST_CASE("errors: a range too wide for its arithmetic", "[errors]") {
  const double big = 1e308;
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(torch::randn({4}, torch::kDouble),
                                            torch::tensor(-big, torch::kDouble),
                                            torch::tensor(big, torch::kDouble)),
      Catch::Contains("too wide"));
  // Finite float32 bounds whose width overflows float32 (the nudging runs in
  // float32 for float32 x; the scale would be inf and the nudged min NaN).
  const Tensor x = torch::tensor({-1.f, 0.f, 1e38f});
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(-3e38f), torch::tensor(3e38f)),
      Catch::Contains("too wide: max - min overflows Float"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          x, torch::tensor({-1.f, -3e38f, 0.f}), torch::tensor({1.f, 3e38f, 0.f}),
                          0),
                      Catch::Contains("[1] is too wide"));
  // The same bounds are fine in float64.
  const Tensor y = edgeqat::fake_quant_with_min_max_vars(
      x.to(torch::kDouble), torch::tensor(-3e38, torch::kDouble),
      torch::tensor(3e38, torch::kDouble));
  CHECK(torch::isfinite(y).all().item<bool>());
}

TEST_CASE("errors: shapes of min and max", "[errors]") {
  const Tensor x = torch::randn({2, 3});
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor({-1.f}), torch::tensor(1.f)),
      Catch::Contains("min must be a 0-dim tensor, got shape [1]"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(x, torch::tensor(-1.f), torch::ones({3})),
      Catch::Contains("max must be a 0-dim tensor, got shape [3]"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          x, -torch::ones({4}), torch::ones({3}), 1),
                      Catch::Contains("min must be 1-D of length x.size(1) = 3, got shape [4]"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          x, -torch::ones({2}), torch::ones({2, 1}), 0),
                      Catch::Contains("max must be 1-D of length x.size(0) = 2, got shape [2, 1]"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          x, torch::tensor(-1.f), torch::tensor(1.f), 0),
                      Catch::Contains("min must be 1-D of length x.size(0) = 2, got shape []"));
}

TEST_CASE("errors: axis out of range", "[errors]") {
  const Tensor x = torch::randn({2, 3, 4});
  const Tensor mn = -torch::ones({4}), mx = torch::ones({4});
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(x, mn, mx, 3),
                      Catch::Contains("edgeqat::fake_quant_with_min_max_vars_per_channel: axis 3 "
                                      "is out of range for x with 3 dimension(s)"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(x, mn, mx, -4),
                      Catch::Contains("axis -4 is out of range for x with 3 dimension(s)"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars_per_channel(torch::tensor(1.f), torch::zeros({1}),
                                                        torch::ones({1}), 0),
      Catch::Contains("axis 0 is out of range for x with 0 dimension(s)"));
  CHECK_NOTHROW(edgeqat::fake_quant_with_min_max_vars_per_channel(x, mn, mx, -1));
}

TEST_CASE("errors: integer, complex and bool inputs", "[errors]") {
  const Tensor mn = torch::tensor(-1.f), mx = torch::tensor(1.f);
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(torch::ones({3}, torch::kInt), mn, mx),
      Catch::Contains("x must be a floating-point tensor") && Catch::Contains("got dtype Int"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(torch::ones({3}, torch::kLong), mn, mx),
      Catch::Contains("x must be a floating-point tensor") && Catch::Contains("got dtype Long"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(torch::ones({3}, torch::kComplexFloat), mn, mx),
      Catch::Contains("x must be a floating-point tensor") &&
          Catch::Contains("got dtype ComplexFloat"));
  REQUIRE_THROWS_WITH(
      edgeqat::fake_quant_with_min_max_vars(torch::ones({3}, torch::kBool), mn, mx),
      Catch::Contains("x must be a floating-point tensor"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          torch::ones({3}, torch::kUInt8), -torch::ones({3}), torch::ones({3}), 0),
                      Catch::Contains("x must be a floating-point tensor"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars(
                          torch::ones({3}), torch::tensor(-1, torch::kLong), mx),
                      Catch::Contains("min must be a floating-point tensor, got dtype Long"));
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars(
                          torch::ones({3}), mn, torch::tensor(1, torch::kInt)),
                      Catch::Contains("max must be a floating-point tensor, got dtype Int"));
}

TEST_CASE("errors: the backward op checks its arguments", "[errors]") {
  const Tensor g = torch::randn({2, 3});
  const Tensor mask = torch::zeros({2, 3}, torch::kByte);
  const auto f = torch::kFloat;
  REQUIRE_THROWS_WITH(fused_backward(g, mask.to(torch::kFloat), std::nullopt, f, f),
                      Catch::Contains("mask must be uint8"));
  REQUIRE_THROWS_WITH(fused_backward(g, torch::zeros({3, 2}, torch::kByte), std::nullopt, f, f),
                      Catch::Contains("grad has shape [2, 3] but mask has shape [3, 2]"));
  REQUIRE_THROWS_WITH(fused_backward(g, mask, 2, f, f), Catch::Contains("axis 2 is out of range"));
  REQUIRE_THROWS_WITH(fused_backward(g, mask, std::nullopt, torch::kInt, f),
                      Catch::Contains("min_dtype must be a floating dtype"));
  REQUIRE_THROWS_WITH(fused_backward(g, mask, std::nullopt, f, torch::kLong),
                      Catch::Contains("max_dtype must be a floating dtype"));
  REQUIRE_THROWS_WITH(fused_backward(g.to(torch::kInt), mask, std::nullopt, f, f),
                      Catch::Contains("grad must be floating point"));
}

TEST_CASE("errors: the composite kernel checks like the fused one", "[errors][composite]") {
  namespace comp = edgeqat::ops::composite;
  const Tensor x = torch::randn({2, 3});
  REQUIRE_THROWS_WITH(comp::fake_quant_cachemask(x, torch::tensor(-1.f), torch::tensor(1.f),
                                                 std::nullopt, 17, false),
                      Catch::Contains("num_bits must be in [2, 16], got 17"));
  REQUIRE_THROWS_WITH(comp::fake_quant_cachemask(x, torch::tensor(2.f), torch::tensor(1.f),
                                                 std::nullopt, 8, false),
                      Catch::Contains("min = 2 is greater than max = 1"));
  REQUIRE_THROWS_WITH(comp::fake_quant_cachemask(x, -torch::ones({3}), torch::ones({3}), 2, 8,
                                                 false),
                      Catch::Contains("axis 2 is out of range"));
  REQUIRE_THROWS_WITH(comp::fake_quant_cachemask(x, torch::tensor(std::nanf("")),
                                                 torch::tensor(1.f), std::nullopt, 8, false),
                      Catch::Contains("min must be finite"));
  REQUIRE_THROWS_WITH(comp::fake_quant_backward(x, torch::zeros({2, 3}), std::nullopt,
                                                torch::kFloat, torch::kFloat),
                      Catch::Contains("mask must be uint8"));
}

TEST_CASE("meta tensors: shapes and checks without data", "[meta]") {
  const auto meta = torch::TensorOptions().device(torch::kMeta);
  const Tensor x =
      torch::empty({2, 8, 5, 6}, meta.memory_format(torch::MemoryFormat::ChannelsLast));
  const Tensor y = edgeqat::fake_quant_with_min_max_vars_per_channel(
      x, torch::empty({8}, meta), torch::empty({8}, meta), 1);
  CHECK(y.device().is_meta());
  CHECK(y.sizes() == x.sizes());
  CHECK(y.strides() == x.strides());
  REQUIRE_THROWS_WITH(edgeqat::fake_quant_with_min_max_vars_per_channel(
                          x, torch::empty({7}, meta), torch::empty({8}, meta), 1),
                      Catch::Contains("min must be 1-D of length x.size(1) = 8"));
}

// ===========================================================================
// Composite (ATen) kernels against the fused CPU kernels.
// ===========================================================================

namespace {

void check_composite_matches_fused(const Case& c) {
  namespace comp = edgeqat::ops::composite;
  INFO(describe(c));
  const Inputs in = make_inputs(c);
  const Tensor x = lay_out(in.x, c.layout, false).view;
  const auto [y_fused, mask_fused] =
      fused_cachemask(x, in.min, in.max, c.axis, c.num_bits, c.narrow_range);
  const auto [y_comp, mask_comp] =
      comp::fake_quant_cachemask(x, in.min, in.max, c.axis, c.num_bits, c.narrow_range);
  CHECK(bitwise_mismatch(y_comp, y_fused) == "");
  CHECK(bitwise_mismatch(mask_comp, mask_fused) == "");

  // Backward from the same mask, with a gradient laid out like x.
  const Tensor g = lay_out(in.g, c.layout, false).view;
  const auto min_dtype = in.min.scalar_type(), max_dtype = in.max.scalar_type();
  const auto [dx_f, dmin_f, dmax_f] = fused_backward(g, mask_fused, c.axis, min_dtype, max_dtype);
  const auto [dx_c, dmin_c, dmax_c] =
      comp::fake_quant_backward(g, mask_fused, c.axis, min_dtype, max_dtype);
  CHECK(bitwise_mismatch(dx_c, dx_f) == "");
  // Tolerance from the reference's per-range |g| sums and counts.
  const Expected want = reference(in.x, in.min, in.max, c.axis, c.num_bits, c.narrow_range, in.g);
  CHECK(sum_mismatch(dmin_c, dmin_f, want.abs_below, want.n_below) == "");
  CHECK(sum_mismatch(dmax_c, dmax_f, want.abs_above, want.n_above) == "");
  // And both against the reference.
  CHECK(bitwise_mismatch(mask_fused, want.mask) == "");
  CHECK(sum_mismatch(dmin_f, want.dmin, want.abs_below, want.n_below) == "");
}

}  // namespace

TEST_CASE("composite matches fused bit for bit: per tensor", "[composite][per_tensor]") {
  uint32_t seed = 1000;
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (Case c : per_tensor_cases()) {
      for (int rep = 0; rep < 3; ++rep) {
        c.dtype = dtype;
        c.range_dtype = rep == 2 ? torch::kDouble : dtype;
        c.nonfinite = rep == 1;
        std::tie(c.num_bits, c.narrow_range) = kGrids[seed % kGrids.size()];
        c.seed = seed++;
        check_composite_matches_fused(c);
      }
    }
  }
}

TEST_CASE("composite matches fused bit for bit: per channel", "[composite][per_channel]") {
  uint32_t seed = 2000;
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (Case c : per_channel_cases()) {
      for (int rep = 0; rep < 2; ++rep) {
        c.dtype = dtype;
        c.range_dtype = rep == 1 ? torch::kFloat : dtype;
        c.nonfinite = rep == 1;
        std::tie(c.num_bits, c.narrow_range) = kGrids[seed % kGrids.size()];
        c.seed = seed++;
        check_composite_matches_fused(c);
      }
    }
  }
}

TEST_CASE("composite matches fused: half and bfloat16", "[composite]") {
  uint32_t seed = 3000;
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    for (Case c : per_channel_cases()) {
      c.dtype = dtype;
      std::tie(c.num_bits, c.narrow_range) = kGrids[seed % kGrids.size()];
      c.seed = seed++;
      check_composite_matches_fused(c);
    }
  }
}

TEST_CASE("composite matches fused: dense sweep of ranges and bit widths", "[composite]") {
  // Many ranges on one input: nudging (zero-point rounding near .5, clamping
  // to the grid ends, ranges off 0) must agree for every one of them.
  namespace comp = edgeqat::ops::composite;
  std::mt19937 rng(42);
  const Tensor x = torch::linspace(-4.f, 4.f, 2001);
  for (int i = 0; i < 700; ++i) {
    auto [lo, hi] = random_range(i, rng);
    const auto [bits, narrow] = kGrids[i % kGrids.size()];
    for (auto dtype : {torch::kFloat, torch::kDouble}) {
      INFO("range [" << lo << ", " << hi << "] bits " << bits << " narrow " << narrow
                     << " dtype " << dtype);
      const Tensor xd = x.to(dtype);
      const Tensor mn = torch::tensor(lo, torch::kDouble).to(dtype);
      const Tensor mx = torch::tensor(hi, torch::kDouble).to(dtype);
      const auto [yf, mf] = fused_cachemask(xd, mn, mx, std::nullopt, bits, narrow);
      const auto [yc, mc] = comp::fake_quant_cachemask(xd, mn, mx, std::nullopt, bits, narrow);
      CHECK(bitwise_mismatch(yc, yf) == "");
      CHECK(bitwise_mismatch(mc, mf) == "");
    }
  }
}

// ===========================================================================
// Double backward.
// ===========================================================================

namespace {

// Second order through the backward: L2 = <w, dx> + <a, dmin> + <b, dmax>,
// where (dx, dmin, dmax) are the first-order gradients for the incoming
// gradient v. d L2 / d v = w on the inside, a (of the channel) below, b above.
// Returns "" on success, else what went wrong.
std::string double_backward_mismatch(std::vector<int64_t> shape, std::optional<int64_t> axis,
                                     torch::ScalarType dtype) {
  Case c;
  c.shape = shape;
  c.axis = axis;
  c.dtype = dtype;
  c.range_dtype = dtype;
  c.seed = 77;
  const Inputs in = make_inputs(c);
  const Tensor x = in.x.clone().requires_grad_(true);
  const Tensor mn = in.min.clone().requires_grad_(true);
  const Tensor mx = in.max.clone().requires_grad_(true);
  const Tensor v = in.g.clone().requires_grad_(true);
  const Tensor y = public_op(x, mn, mx, axis, 8, false);
  const auto first = torch::autograd::grad({y}, {x, mn, mx}, {v}, /*retain_graph=*/true,
                                           /*create_graph=*/true);
  if (first.size() != 3) return "first-order grad returned " + std::to_string(first.size());
  for (const auto& t : first) {
    if (!t.defined() || !t.requires_grad()) return "a first-order gradient has no graph";
  }
  const Expected want = reference(in.x, in.min, in.max, axis, 8, false, in.g);
  if (auto m = bitwise_mismatch(first[0].detach(), want.dx); !m.empty()) return "dx: " + m;
  if (auto m = sum_mismatch(first[1].detach(), want.dmin, want.abs_below, want.n_below);
      !m.empty()) {
    return "dmin: " + m;
  }

  const Tensor w = torch::randn(shape, dtype);
  const Tensor a = torch::randn(in.min.sizes(), dtype);
  const Tensor b = torch::randn(in.max.sizes(), dtype);
  const Tensor l2 = (first[0] * w).sum() + (first[1] * a).sum() + (first[2] * b).sum();
  const auto second = torch::autograd::grad({l2}, {v});
  if (second.size() != 1) return "second-order grad returned " + std::to_string(second.size());

  // Expected d L2 / d v, element by element from the reference mask.
  const Tensor mask = want.mask;
  Tensor a_b = a, b_b = b;
  if (axis) {
    std::vector<int64_t> bshape(shape.size(), 1);
    bshape[norm_axis(*axis, static_cast<int64_t>(shape.size()))] = -1;
    a_b = a.reshape(bshape);
    b_b = b.reshape(bshape);
  }
  const Tensor zero = torch::zeros({}, dtype);
  const Tensor expected = torch::where(mask.eq(0), w, zero) + torch::where(mask.eq(1), a_b, zero) +
                          torch::where(mask.eq(2), b_b, zero);
  if (auto m = bitwise_mismatch(second[0], expected); !m.empty()) return "d2/dv: " + m;
  return "";
}

std::string describe_double_backward(const std::vector<int64_t>& shape,
                                     std::optional<int64_t> axis, torch::ScalarType dtype) {
  std::ostringstream s;
  s << "shape " << c10::IntArrayRef(shape) << " axis "
    << (axis ? std::to_string(*axis) : std::string("none")) << " dtype " << dtype;
  return s.str();
}

}  // namespace

TEST_CASE("double backward: per tensor", "[double_backward]") {
  for (auto [shape, dtype] : std::vector<std::pair<std::vector<int64_t>, torch::ScalarType>>{
           {{50}, torch::kFloat}, {{3, 4, 5}, torch::kDouble}}) {
    INFO(describe_double_backward(shape, std::nullopt, dtype));
    CHECK(double_backward_mismatch(shape, std::nullopt, dtype) == "");
  }
}

TEST_CASE("double backward: per channel, non-negative axis", "[double_backward]") {
  for (auto [shape, axis, dtype] :
       std::vector<std::tuple<std::vector<int64_t>, int64_t, torch::ScalarType>>{
           {{6, 20}, 0, torch::kFloat},
           {{6, 20}, 1, torch::kFloat},
           {{3, 4, 5}, 1, torch::kDouble},
           {{3, 4, 5}, 2, torch::kFloat}}) {
    INFO(describe_double_backward(shape, axis, dtype));
    CHECK(double_backward_mismatch(shape, axis, dtype) == "");
  }
}

TEST_CASE("double backward: per channel, negative axis", "[double_backward]") {
  for (auto [shape, axis, dtype] :
       std::vector<std::tuple<std::vector<int64_t>, int64_t, torch::ScalarType>>{
           {{6, 20}, -1, torch::kFloat},
           {{3, 4, 5}, -2, torch::kFloat},
           {{3, 4, 5}, -3, torch::kDouble}}) {
    INFO(describe_double_backward(shape, axis, dtype));
    CHECK(double_backward_mismatch(shape, axis, dtype) == "");
  }
}

TEST_CASE("double backward: the second-order graph feeds an optimizer step", "[double_backward]") {
  // A gradient-norm penalty (as in Hessian-aware or gradient-regularized QAT):
  // d/dtheta |d loss / d x|^2 flows through the fake-quant backward.
  torch::manual_seed(9);
  const Tensor w = torch::randn({4, 8}, torch::requires_grad());
  const Tensor x = (2 * torch::randn({16, 8})).requires_grad_(true);
  const Tensor mn = torch::tensor(-1.f, torch::requires_grad());
  const Tensor mx = torch::tensor(1.f, torch::requires_grad());
  const Tensor xq = edgeqat::fake_quant_with_min_max_vars(x, mn, mx);
  const Tensor loss = xq.matmul(w.t()).pow(2).sum();
  const auto gx = torch::autograd::grad({loss}, {x}, {}, true, true)[0];
  const Tensor penalty = gx.pow(2).sum();
  penalty.backward();
  REQUIRE(w.grad().defined());
  CHECK(torch::isfinite(w.grad()).all().item<bool>());
  CHECK(w.grad().abs().sum().item<float>() > 0.f);
}
