// observe_min_max_ composed of ATen ops (aminmax is one vectorized pass over
// x), for every device, Meta included. See ../observe.cpp for the semantics.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <sstream>

namespace edgeqat::ops {
namespace {

constexpr const char* kOp = "edgeqat::observe_min_max_";

void check_state(const char* name, const at::Tensor& state, const at::Tensor& x,
                 std::optional<int64_t> axis) {
  TORCH_CHECK(at::isFloatingType(state.scalar_type()), kOp, ": ", name,
              " must be a floating-point tensor, got dtype ", state.scalar_type());
  TORCH_CHECK(state.device() == x.device(), kOp, ": ", name, " is on ", state.device(),
              " but x is on ", x.device());
  if (axis.has_value()) {
    TORCH_CHECK(state.dim() == 1 && state.sym_size(0) == x.sym_size(*axis), kOp, ": ", name,
                " must be 1-D of length x.size(", *axis, ") = ", x.sym_size(*axis),
                ", got shape ", state.sym_sizes());
  } else {
    TORCH_CHECK(state.dim() == 0, kOp, ": ", name, " must be a 0-dim tensor, got shape ",
                state.sym_sizes());
  }
}

void observe_min_max_composite(at::Tensor& running_min, at::Tensor& running_max,
                               const at::Tensor& x_in, std::optional<int64_t> axis_in,
                               double averaging_constant, bool accumulate) {
  TORCH_CHECK(at::isFloatingType(x_in.scalar_type()), kOp,
              ": x must be a floating-point tensor, got dtype ", x_in.scalar_type());
  TORCH_CHECK(averaging_constant > 0.0 && averaging_constant <= 1.0, kOp,
              ": averaging_constant must be in (0, 1], got ", averaging_constant);
  std::optional<int64_t> axis;
  if (axis_in.has_value()) {
    const int64_t ndim = x_in.dim();
    TORCH_CHECK(ndim > 0 && *axis_in >= -ndim && *axis_in < ndim, kOp, ": axis ", *axis_in,
                " is out of range for x with ", ndim, " dimension(s)");
    axis = *axis_in < 0 ? *axis_in + ndim : *axis_in;
  }
  check_state("running_min", running_min, x_in, axis);
  check_state("running_max", running_max, x_in, axis);
  const at::Tensor x = x_in.detach();
  if (x.sym_numel() == 0) {
    return;
  }
  at::Tensor batch_min, batch_max;
  if (axis.has_value()) {
    // [channels, everything else]; reshape (not flatten(1)) also serves 1-D x.
    std::tie(batch_min, batch_max) =
        at::aminmax(x.movedim(*axis, 0).reshape_symint({x.sym_size(*axis), -1}), 1);
  } else {
    std::tie(batch_min, batch_max) = at::aminmax(x);
  }
  if (!x.is_meta()) {
    // One host sync; a non-finite range would otherwise spread silently.
    const auto finite = [](const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); };
    if (!finite(batch_min) || !finite(batch_max)) {
      TORCH_CHECK(false, kOp, ": x contains ", at::isnan(x).sum().item<int64_t>(), " NaN and ",
                  at::isinf(x).sum().item<int64_t>(),
                  " infinite value(s); the observed range would be lost");
    }
    // Each end against its own state's dtype: min and max may be stored in different dtypes.
    const auto min_dtype = running_min.scalar_type();
    const auto max_dtype = running_max.scalar_type();
    if (!finite(batch_min.to(min_dtype)) || !finite(batch_max.to(max_dtype))) {
      std::ostringstream dtypes;
      if (min_dtype == max_dtype) {
        dtypes << "dtype " << min_dtype;
      } else {
        dtypes << "dtypes (running_min " << min_dtype << ", running_max " << max_dtype << ")";
      }
      TORCH_CHECK(false, kOp, ": the batch range [", batch_min.min().item<double>(), ", ",
                  batch_max.max().item<double>(), "] overflows the state ", dtypes.str());
    }
  }
  batch_min = batch_min.to(running_min.scalar_type());
  batch_max = batch_max.to(running_max.scalar_type());
  // Per entry: not observed yet (min > max) -> take the batch range.
  const at::Tensor fresh = running_min > running_max;
  at::Tensor new_min, new_max;
  if (accumulate) {
    new_min = at::minimum(running_min, batch_min);
    new_max = at::maximum(running_max, batch_max);
  } else if (averaging_constant == 1.0) {
    // Last value: exactly the batch range (old + 1.0 * (batch - old) rounds).
    new_min = batch_min;
    new_max = batch_max;
  } else {
    new_min = running_min + (batch_min - running_min) * averaging_constant;
    new_max = running_max + (batch_max - running_max) * averaging_constant;
  }
  running_min.copy_(at::where(fresh, batch_min, new_min));
  running_max.copy_(at::where(fresh, batch_max, new_max));
}

}  // namespace

TORCH_LIBRARY_IMPL(edgeqat, CompositeExplicitAutograd, m) {
  m.impl("observe_min_max_", observe_min_max_composite);
}

}  // namespace edgeqat::ops
