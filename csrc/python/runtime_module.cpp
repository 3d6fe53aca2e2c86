// edgeqat._runtime: the torch-free int8 runtime (csrc/runtime) exposed to Python with numpy
// arrays, for tests against slow Python references and for debugging exported models.
//
// Linked to edgeqat_runtime only: no torch header, no libtorch at import time. Every kernel is
// called through a KernelTable chosen by name (`impl=`), so the same Python call runs the
// reference kernels or a fast implementation. Arrays must already be C-contiguous and of the
// kernel's dtype (nothing is converted or copied silently); a bad argument raises ValueError
// naming it. The runtime's own std::invalid_argument surfaces as ValueError with its message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/kernels.h"
#include "edgeqat/runtime/params.h"
#include "edgeqat/runtime/reference.h"
#include "edgeqat/runtime/requantize.h"
#include "edgeqat/runtime/types.h"
#include "python/runtime_bindings.h"

// The fast kernels (fast.h) are committed separately from these bindings; until they are, this
// file also builds without them (then only "reference" is listed).
#if __has_include("edgeqat/runtime/fast.h")
#include "edgeqat/runtime/fast.h"
#define EDGEQAT_BINDINGS_HAVE_FAST 1
#else
#define EDGEQAT_BINDINGS_HAVE_FAST 0
#endif

namespace py = pybind11;
namespace rt = edgeqat::runtime;

namespace {

// ---- kernel tables ------------------------------------------------------------------------

// Every implementation the bindings can run, selected by KernelTable::name: the reference, the
// fast kernels on the best ISA ("fast", capped by EDGEQAT_RUNTIME_ISA) and the fast kernels on
// each ISA this build and CPU support ("fast/portable", "fast/avx2", ...).
std::vector<const rt::KernelTable*> all_tables() {
  std::vector<const rt::KernelTable*> tables{&rt::reference::kernels()};
#if EDGEQAT_BINDINGS_HAVE_FAST
  try {
    tables.push_back(&rt::fast::kernels());
  } catch (const std::invalid_argument&) {
    // EDGEQAT_RUNTIME_ISA names no ISA: not listed; impl="fast" raises the runtime's message
  }
  for (const std::string& isa : rt::fast::available_isas()) {
    tables.push_back(&rt::fast::kernels_for_isa(isa));
  }
#endif
  return tables;
}

std::vector<std::string> table_names() {
  std::vector<std::string> names;
  for (const rt::KernelTable* table : all_tables()) names.emplace_back(table->name);
  return names;
}

template <class... Parts>
[[noreturn]] void fail(const char* function, const Parts&... parts) {
  std::ostringstream os;
  os.precision(std::numeric_limits<double>::max_digits10);
  os << "edgeqat._runtime." << function << ": ";
  (os << ... << parts);
  throw std::invalid_argument(os.str());  // -> ValueError
}

const rt::KernelTable& table_by_name(const std::string& name) {
#if EDGEQAT_BINDINGS_HAVE_FAST
  if (name == "fast") return rt::fast::kernels();  // throws for a bad EDGEQAT_RUNTIME_ISA
#endif
  const std::vector<const rt::KernelTable*> tables = all_tables();
  for (const rt::KernelTable* table : tables) {
    if (name == table->name) return *table;
  }
  std::string known;
  for (const rt::KernelTable* table : tables) {
    known += (known.empty() ? "'" : ", '") + std::string(table->name) + "'";
  }
  fail("table_by_name", "unknown kernel table impl='", name, "'; known: ", known);
}

// ---- argument conversion ------------------------------------------------------------------

template <class T>
const char* dtype_name();
template <>
const char* dtype_name<int8_t>() {
  return "int8";
}
template <>
const char* dtype_name<int32_t>() {
  return "int32";
}
template <>
const char* dtype_name<float>() {
  return "float32";
}

std::string describe(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) {
    return std::string("an object of type ") + Py_TYPE(obj.ptr())->tp_name;
  }
  const auto a = py::reinterpret_borrow<py::array>(obj);
  std::ostringstream os;
  os << "an array of dtype " << std::string(py::str(a.dtype())) << " and shape (";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    os << (i ? ", " : "") << a.shape(i);
  }
  os << (a.ndim() == 1 ? ",)" : ")");
  if (!(a.flags() & py::array::c_style)) os << " that is not C-contiguous";
  return os.str();
}

template <class T>
using CArray = py::array_t<T, py::array::c_style>;

// `obj` as a C-contiguous array of dtype T with `ndim` dimensions (any if ndim < 0); `layout`
// describes the expected shape for the message.
template <class T>
CArray<T> as_array(py::handle obj, const char* fn, const char* arg, int ndim, const char* layout) {
  bool ok = py::isinstance<CArray<T>>(obj);
  if (ok && ndim >= 0 && py::reinterpret_borrow<py::array>(obj).ndim() != ndim) ok = false;
  if (!ok) {
    fail(fn, arg, " must be a C-contiguous numpy array of dtype ", dtype_name<T>(), layout,
         ", got ", describe(obj));
  }
  return py::reinterpret_borrow<CArray<T>>(obj);
}

int dim_as_int(py::ssize_t v, const char* fn, const char* arg) {
  if (v > std::numeric_limits<int>::max()) fail(fn, arg, " is too large: dimension ", v);
  return static_cast<int>(v);
}

rt::Shape4 shape4(const py::array& a, const char* fn, const char* arg) {
  return {dim_as_int(a.shape(0), fn, arg), dim_as_int(a.shape(1), fn, arg),
          dim_as_int(a.shape(2), fn, arg), dim_as_int(a.shape(3), fn, arg)};
}

// A Python integer (anything with __index__; not float, not str) as int64.
int64_t to_int64(py::handle obj, const char* fn, const std::string& arg) {
  if (!PyIndex_Check(obj.ptr())) fail(fn, arg, " must be an integer, got ", describe(obj));
  const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
  if (!index) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0) {
    fail(fn, arg, " is out of range: ", std::string(py::str(obj)));
  }
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

int32_t to_int32(int64_t v, const char* fn, const std::string& arg) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
    fail(fn, arg, " must fit in int32, got ", v);
  }
  return static_cast<int32_t>(v);
}

int to_int32(py::handle obj, const char* fn, const std::string& arg) {
  return to_int32(to_int64(obj, fn, arg), fn, arg);
}

// An int n (-> n, n) or a sequence of two ints.
std::pair<int, int> pair_arg(py::handle obj, const char* fn, const char* arg) {
  if (PyIndex_Check(obj.ptr())) {
    const int v = to_int32(obj, fn, arg);
    return {v, v};
  }
  if (!py::isinstance<py::sequence>(obj) || py::len(obj) != 2) {
    fail(fn, arg, " must be an int or a pair of ints (h, w), got ", std::string(py::repr(obj)));
  }
  const auto s = py::reinterpret_borrow<py::sequence>(obj);
  return {to_int32(s[0], fn, std::string(arg) + "[0]"),
          to_int32(s[1], fn, std::string(arg) + "[1]")};
}

// An int p (all sides), (h, w) (top = bottom = h, left = right = w) or
// (top, left, bottom, right).
rt::Padding padding_arg(py::handle obj, const char* fn) {
  rt::Padding p;
  if (PyIndex_Check(obj.ptr())) {
    p.top = p.left = p.bottom = p.right = to_int32(obj, fn, "padding");
    return p;
  }
  const py::ssize_t n = py::isinstance<py::sequence>(obj) ? py::len(obj) : -1;
  if (n != 2 && n != 4) {
    fail(fn, "padding must be an int, (h, w) or (top, left, bottom, right) of ints, got ",
         std::string(py::repr(obj)));
  }
  const auto s = py::reinterpret_borrow<py::sequence>(obj);
  std::vector<int> v;
  for (py::ssize_t i = 0; i < n; ++i) {
    v.push_back(to_int32(s[i], fn, "padding[" + std::to_string(i) + "]"));
  }
  if (n == 2) {
    p.top = p.bottom = v[0];
    p.left = p.right = v[1];
  } else {
    p.top = v[0];
    p.left = v[1];
    p.bottom = v[2];
    p.right = v[3];
  }
  return p;
}

rt::QuantizedMultiplier multiplier_pair(py::handle obj, const char* fn, const std::string& arg) {
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::len(obj) != 2) {
    fail(fn, arg, " must be a pair (multiplier, shift) of ints, got ", std::string(py::repr(obj)));
  }
  const auto s = py::reinterpret_borrow<py::sequence>(obj);
  return {to_int32(s[0], fn, arg + ".multiplier"), to_int32(s[1], fn, arg + ".shift")};
}

// Integer numpy array of any integer dtype read as int64 (values are range-checked later).
py::array_t<int64_t, py::array::c_style> int_array(py::handle obj, const char* fn,
                                                   const std::string& arg) {
  const auto a = py::reinterpret_borrow<py::array>(obj);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    fail(fn, arg, " must be an integer array, got ", describe(obj));
  }
  return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(obj);
}

// Per-output-channel multipliers: a sequence of (multiplier, shift) pairs, an integer array of
// shape [channels, 2], or a tuple of two 1-D integer arrays (multipliers, shifts). Ranges are
// checked by the kernel (check_multipliers); the count here.
std::vector<rt::QuantizedMultiplier> multipliers_arg(py::handle obj, int channels, const char* fn) {
  std::vector<rt::QuantizedMultiplier> out;
  if (py::isinstance<py::array>(obj)) {
    const auto a = int_array(obj, fn, "multipliers");
    if (a.ndim() != 2 || a.shape(1) != 2) {
      fail(fn, "multipliers as an array must have shape [channels, 2], got ", describe(obj));
    }
    for (py::ssize_t i = 0; i < a.shape(0); ++i) {
      const std::string name = "multipliers[" + std::to_string(i) + "]";
      out.push_back({to_int32(a.at(i, 0), fn, name + ".multiplier"),
                     to_int32(a.at(i, 1), fn, name + ".shift")});
    }
  } else if (py::isinstance<py::tuple>(obj) && py::len(obj) == 2 &&
             py::isinstance<py::array>(py::reinterpret_borrow<py::tuple>(obj)[0]) &&
             py::isinstance<py::array>(py::reinterpret_borrow<py::tuple>(obj)[1])) {
    const auto t = py::reinterpret_borrow<py::tuple>(obj);
    const auto m = int_array(t[0], fn, "multipliers[0] (the multiplier array)");
    const auto s = int_array(t[1], fn, "multipliers[1] (the shift array)");
    if (m.ndim() != 1 || s.ndim() != 1 || m.shape(0) != s.shape(0)) {
      fail(fn, "multipliers as (multipliers, shifts) must be two 1-D arrays of one length, got ",
           describe(t[0]), " and ", describe(t[1]));
    }
    for (py::ssize_t i = 0; i < m.shape(0); ++i) {
      const std::string name = "multipliers[" + std::to_string(i) + "]";
      out.push_back(
          {to_int32(m.at(i), fn, name + ".multiplier"), to_int32(s.at(i), fn, name + ".shift")});
    }
  } else if (py::isinstance<py::sequence>(obj) && !py::isinstance<py::str>(obj)) {
    const auto seq = py::reinterpret_borrow<py::sequence>(obj);
    for (size_t i = 0; i < seq.size(); ++i) {
      out.push_back(multiplier_pair(seq[i], fn, "multipliers[" + std::to_string(i) + "]"));
    }
  } else {
    fail(fn,
         "multipliers must be a list of (multiplier, shift) pairs, an int array [channels, 2] "
         "or a tuple of two int arrays (multipliers, shifts), got ",
         describe(obj));
  }
  if (out.size() != static_cast<size_t>(channels)) {
    fail(fn, "multipliers must hold one (multiplier, shift) per output channel (", channels,
         "), got ", out.size());
  }
  return out;
}

// None or an int32 array [channels]; the array is kept alive by `holder`.
const int32_t* bias_arg(py::handle obj, int channels, const char* fn, py::object& holder) {
  if (obj.is_none()) return nullptr;
  auto b = as_array<int32_t>(obj, fn, "bias", 1, " with shape [out_channels] (or None)");
  if (b.shape(0) != channels) {
    fail(fn, "bias must have one value per output channel (", channels, "), got shape (",
         b.shape(0), ",)");
  }
  holder = b;
  return b.data();
}

rt::KernelContext context(int64_t num_threads, const char* fn) {
  if (num_threads < 1 || num_threads > std::numeric_limits<int>::max()) {
    fail(fn, "num_threads must be >= 1, got ", num_threads);
  }
  rt::KernelContext ctx;
  ctx.num_threads = static_cast<int>(num_threads);
  // These single-kernel entry points exist to test and time the kernels: split every call over
  // the threads asked for, however small (a model's calls go on one thread below
  // KernelContext::min_parallel_work).
  ctx.min_parallel_work = 0;
  return ctx;
}

py::tuple multiplier_tuple(rt::QuantizedMultiplier m) {
  return py::make_tuple(m.multiplier, m.shift);
}

py::list multiplier_list(const std::vector<rt::QuantizedMultiplier>& ms) {
  py::list out;
  for (const auto& m : ms) out.append(multiplier_tuple(m));
  return out;
}

py::tuple padding_tuple(const rt::Padding& p) {
  return py::make_tuple(p.top, p.left, p.bottom, p.right);
}

rt::Activation activation_from(const std::string& name) {
  if (name == "none") return rt::Activation::kNone;
  if (name == "relu") return rt::Activation::kRelu;
  if (name == "relu6") return rt::Activation::kRelu6;
  fail("activation_range", "activation must be 'none', 'relu' or 'relu6', got '", name, "'");
}

// The output-stage fields a conv / depthwise / fully connected call takes as keywords.
template <class Setup>
py::dict setup_dict(const Setup& s) {
  py::dict d;
  d["input_zero_point"] = s.params.input_zero_point;
  d["output_zero_point"] = s.params.output_zero_point;
  d["act_min"] = s.params.act_min;
  d["act_max"] = s.params.act_max;
  d["multipliers"] = multiplier_list(s.multipliers);
  return d;
}

py::dict pool_dict(const rt::PoolParams& p) {
  py::dict d;
  d["filter_size"] = py::make_tuple(p.filter_h, p.filter_w);
  d["stride"] = py::make_tuple(p.stride_h, p.stride_w);
  d["padding"] = padding_tuple(p.padding);
  d["act_min"] = p.act_min;
  d["act_max"] = p.act_max;
  return d;
}

// ---- kernels ------------------------------------------------------------------------------

template <class Params>
void set_window(Params& p, py::handle stride, py::handle padding, py::handle dilation,
                const char* fn) {
  std::tie(p.stride_h, p.stride_w) = pair_arg(stride, fn, "stride");
  std::tie(p.dilation_h, p.dilation_w) = pair_arg(dilation, fn, "dilation");
  p.padding = padding_arg(padding, fn);
}

template <class Params>
void set_output_stage(Params& p, int64_t input_zero_point, int64_t output_zero_point,
                      int64_t act_min, int64_t act_max, const char* fn) {
  p.input_zero_point = to_int32(input_zero_point, fn, "input_zero_point");
  p.output_zero_point = to_int32(output_zero_point, fn, "output_zero_point");
  p.act_min = to_int32(act_min, fn, "act_min");
  p.act_max = to_int32(act_max, fn, "act_max");
}

py::array_t<int8_t> conv2d(py::object input, py::object filter, py::object bias,
                           py::object multipliers, py::object stride, py::object padding,
                           py::object dilation, int64_t groups, int64_t input_zero_point,
                           int64_t output_zero_point, int64_t act_min, int64_t act_max,
                           const std::string& impl, int64_t num_threads) {
  const char* fn = "conv2d";
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto x = as_array<int8_t>(input, fn, "input", 4, " with shape [n, h, w, c] (NHWC)");
  const auto w = as_array<int8_t>(filter, fn, "filter", 4,
                                  " with shape [out_channels, kernel_h, kernel_w, "
                                  "in_channels / groups] (OHWI)");
  const rt::Shape4 in = shape4(x, fn, "input"), fs = shape4(w, fn, "filter");
  rt::ConvParams p;
  set_window(p, stride, padding, dilation, fn);
  p.groups = to_int32(groups, fn, "groups");
  set_output_stage(p, input_zero_point, output_zero_point, act_min, act_max, fn);
  const int oh = rt::window_output_size(in.h, fs.h, p.stride_h, p.dilation_h, p.padding.top,
                                        p.padding.bottom, fn, "h");
  const int ow = rt::window_output_size(in.w, fs.w, p.stride_w, p.dilation_w, p.padding.left,
                                        p.padding.right, fn, "w");
  const rt::Shape4 out{in.n, oh, ow, fs.n};
  const auto ms = multipliers_arg(multipliers, out.c, fn);
  py::object bias_holder;
  const int32_t* b = bias_arg(bias, out.c, fn, bias_holder);
  py::array_t<int8_t> y({out.n, out.h, out.w, out.c});
  const int8_t* xp = x.data();
  const int8_t* wp = w.data();
  int8_t* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    table.conv2d(&ctx, p, ms.data(), in, xp, fs, wp, b, out, yp);
  }
  return y;
}

py::array_t<int8_t> depthwise_conv2d(py::object input, py::object filter, py::object bias,
                                     py::object multipliers, py::object stride, py::object padding,
                                     py::object dilation, int64_t depth_multiplier,
                                     int64_t input_zero_point, int64_t output_zero_point,
                                     int64_t act_min, int64_t act_max, const std::string& impl,
                                     int64_t num_threads) {
  const char* fn = "depthwise_conv2d";
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto x = as_array<int8_t>(input, fn, "input", 4, " with shape [n, h, w, c] (NHWC)");
  const auto w = as_array<int8_t>(filter, fn, "filter", 4,
                                  " with shape [1, kernel_h, kernel_w, c * depth_multiplier]");
  const rt::Shape4 in = shape4(x, fn, "input"), fs = shape4(w, fn, "filter");
  rt::DepthwiseConvParams p;
  set_window(p, stride, padding, dilation, fn);
  p.depth_multiplier = to_int32(depth_multiplier, fn, "depth_multiplier");
  set_output_stage(p, input_zero_point, output_zero_point, act_min, act_max, fn);
  const int oh = rt::window_output_size(in.h, fs.h, p.stride_h, p.dilation_h, p.padding.top,
                                        p.padding.bottom, fn, "h");
  const int ow = rt::window_output_size(in.w, fs.w, p.stride_w, p.dilation_w, p.padding.left,
                                        p.padding.right, fn, "w");
  const rt::Shape4 out{in.n, oh, ow, fs.c};
  const auto ms = multipliers_arg(multipliers, out.c, fn);
  py::object bias_holder;
  const int32_t* b = bias_arg(bias, out.c, fn, bias_holder);
  py::array_t<int8_t> y({out.n, out.h, out.w, out.c});
  const int8_t* xp = x.data();
  const int8_t* wp = w.data();
  int8_t* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    table.depthwise_conv2d(&ctx, p, ms.data(), in, xp, fs, wp, b, out, yp);
  }
  return y;
}

py::array_t<int8_t> fully_connected(py::object input, py::object filter, py::object bias,
                                    py::object multipliers, int64_t input_zero_point,
                                    int64_t output_zero_point, int64_t act_min, int64_t act_max,
                                    const std::string& impl, int64_t num_threads) {
  const char* fn = "fully_connected";
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto x = as_array<int8_t>(input, fn, "input", 2, " with shape [batch, in_features]");
  const auto w =
      as_array<int8_t>(filter, fn, "filter", 2, " with shape [out_features, in_features]");
  rt::FullyConnectedShape s;
  s.batch = dim_as_int(x.shape(0), fn, "input");
  s.in_features = dim_as_int(x.shape(1), fn, "input");
  s.out_features = dim_as_int(w.shape(0), fn, "filter");
  if (w.shape(1) != x.shape(1)) {
    fail(fn,
         "filter must have shape [out_features, in_features] with in_features = ", s.in_features,
         " (from input), got ", describe(filter));
  }
  rt::FullyConnectedParams p;
  set_output_stage(p, input_zero_point, output_zero_point, act_min, act_max, fn);
  const auto ms = multipliers_arg(multipliers, s.out_features, fn);
  py::object bias_holder;
  const int32_t* b = bias_arg(bias, s.out_features, fn, bias_holder);
  py::array_t<int8_t> y({s.batch, s.out_features});
  const int8_t* xp = x.data();
  const int8_t* wp = w.data();
  int8_t* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    table.fully_connected(&ctx, p, ms.data(), s, xp, wp, b, yp);
  }
  return y;
}

py::array_t<int8_t> add(py::object input1, py::object input2, int64_t input1_zero_point,
                        int64_t input2_zero_point, py::object input1_multiplier,
                        py::object input2_multiplier, py::object output_multiplier,
                        int64_t output_zero_point, int64_t left_shift, int64_t act_min,
                        int64_t act_max, const std::string& impl, int64_t num_threads) {
  const char* fn = "add";
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto a = as_array<int8_t>(input1, fn, "input1", -1, "");
  const auto b = as_array<int8_t>(input2, fn, "input2", -1, "");
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
  if (!same) {
    fail(fn, "input1 and input2 must have the same shape (no broadcasting), got ", describe(input1),
         " and ", describe(input2));
  }
  rt::AddParams p;
  p.input1_zero_point = to_int32(input1_zero_point, fn, "input1_zero_point");
  p.input2_zero_point = to_int32(input2_zero_point, fn, "input2_zero_point");
  p.output_zero_point = to_int32(output_zero_point, fn, "output_zero_point");
  p.left_shift = to_int32(left_shift, fn, "left_shift");
  p.input1_multiplier = multiplier_pair(input1_multiplier, fn, "input1_multiplier");
  p.input2_multiplier = multiplier_pair(input2_multiplier, fn, "input2_multiplier");
  p.output_multiplier = multiplier_pair(output_multiplier, fn, "output_multiplier");
  p.act_min = to_int32(act_min, fn, "act_min");
  p.act_max = to_int32(act_max, fn, "act_max");
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  py::array_t<int8_t> y(shape);
  const auto count = static_cast<size_t>(a.size());
  const int8_t* ap = a.data();
  const int8_t* bp = b.data();
  int8_t* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    table.add(&ctx, p, count, ap, bp, yp);
  }
  return y;
}

using Pool2dMember = rt::Pool2dKernel rt::KernelTable::*;

py::array_t<int8_t> pool2d(Pool2dMember kernel, const char* fn, py::object input,
                           py::object filter_size, py::object stride, py::object padding,
                           int64_t act_min, int64_t act_max, const std::string& impl,
                           int64_t num_threads) {
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto x = as_array<int8_t>(input, fn, "input", 4, " with shape [n, h, w, c] (NHWC)");
  const rt::Shape4 in = shape4(x, fn, "input");
  rt::PoolParams p;
  std::tie(p.filter_h, p.filter_w) = pair_arg(filter_size, fn, "filter_size");
  std::tie(p.stride_h, p.stride_w) = pair_arg(stride, fn, "stride");
  p.padding = padding_arg(padding, fn);
  p.act_min = to_int32(act_min, fn, "act_min");
  p.act_max = to_int32(act_max, fn, "act_max");
  const int oh = rt::window_output_size(in.h, p.filter_h, p.stride_h, 1, p.padding.top,
                                        p.padding.bottom, fn, "h");
  const int ow = rt::window_output_size(in.w, p.filter_w, p.stride_w, 1, p.padding.left,
                                        p.padding.right, fn, "w");
  const rt::Shape4 out{in.n, oh, ow, in.c};
  py::array_t<int8_t> y({out.n, out.h, out.w, out.c});
  const int8_t* xp = x.data();
  int8_t* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    (table.*kernel)(&ctx, p, in, xp, out, yp);
  }
  return y;
}

rt::QuantizeParams quantize_params(double scale, int64_t zero_point, const char* fn) {
  rt::QuantizeParams p;
  p.scale = static_cast<float>(scale);  // the kernel checks it (finite, > 0) as a float32
  p.zero_point = to_int32(zero_point, fn, "zero_point");
  return p;
}

py::array_t<int8_t> quantize(py::object input, double scale, int64_t zero_point,
                             const std::string& impl, int64_t num_threads) {
  const char* fn = "quantize";
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto x = as_array<float>(input, fn, "input", -1, "");
  const rt::QuantizeParams p = quantize_params(scale, zero_point, fn);
  py::array_t<int8_t> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const auto count = static_cast<size_t>(x.size());
  const float* xp = x.data();
  int8_t* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    table.quantize(&ctx, p, count, xp, yp);
  }
  return y;
}

py::array_t<float> dequantize(py::object input, double scale, int64_t zero_point,
                              const std::string& impl, int64_t num_threads) {
  const char* fn = "dequantize";
  const rt::KernelTable& table = table_by_name(impl);
  rt::KernelContext ctx = context(num_threads, fn);
  const auto x = as_array<int8_t>(input, fn, "input", -1, "");
  const rt::QuantizeParams p = quantize_params(scale, zero_point, fn);
  py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const auto count = static_cast<size_t>(x.size());
  const int8_t* xp = x.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    table.dequantize(&ctx, p, count, xp, yp);
  }
  return y;
}

// ---- requantization -------------------------------------------------------------------------

rt::QuantizedMultiplier checked_multiplier(int64_t multiplier, int64_t shift, const char* fn) {
  const rt::QuantizedMultiplier m{to_int32(multiplier, fn, "multiplier"),
                                  to_int32(shift, fn, "shift")};
  rt::check_quantized_multiplier(m, "multiplier");
  return m;
}

py::array_t<int32_t> multiply_by_quantized_multiplier(py::object x, int64_t multiplier,
                                                      int64_t shift) {
  const char* fn = "multiply_by_quantized_multiplier";
  const auto a = as_array<int32_t>(x, fn, "x", -1, "");
  const rt::QuantizedMultiplier m = checked_multiplier(multiplier, shift, fn);
  py::array_t<int32_t> y(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  const int32_t* ap = a.data();
  int32_t* yp = y.mutable_data();
  const auto n = static_cast<size_t>(a.size());
  {
    py::gil_scoped_release release;
    for (size_t i = 0; i < n; ++i) yp[i] = rt::multiply_by_quantized_multiplier(ap[i], m);
  }
  return y;
}

py::array_t<int8_t> requantize_output(py::object acc, int64_t multiplier, int64_t shift,
                                      int64_t output_zero_point, int64_t act_min, int64_t act_max) {
  const char* fn = "requantize_output";
  const auto a = as_array<int32_t>(acc, fn, "acc", -1, "");
  const rt::QuantizedMultiplier m = checked_multiplier(multiplier, shift, fn);
  const int32_t zp = to_int32(output_zero_point, fn, "output_zero_point");
  const int32_t lo = to_int32(act_min, fn, "act_min");
  const int32_t hi = to_int32(act_max, fn, "act_max");
  rt::check_zero_point(zp, fn, "output_zero_point");
  rt::check_activation_range(lo, hi, fn);
  py::array_t<int8_t> y(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  const int32_t* ap = a.data();
  int8_t* yp = y.mutable_data();
  const auto n = static_cast<size_t>(a.size());
  {
    py::gil_scoped_release release;
    for (size_t i = 0; i < n; ++i) yp[i] = rt::requantize_output(ap[i], m, zp, lo, hi);
  }
  return y;
}

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() =
      "edgeqat's torch-free int8 runtime (libedgeqat_runtime) on numpy arrays.\n\n"
      "Kernels take C-contiguous arrays of their exact dtype (NHWC activations, OHWI / 1HWO "
      "filters, int32 bias) and the geometry as keywords, and return a new output array. "
      "`impl` selects the kernel table (see kernel_tables()). Bad arguments raise ValueError "
      "naming the argument and its value. docs/runtime-numerics.md defines the arithmetic.\n\n"
      "Example::\n\n"
      "    from edgeqat import _runtime as rt\n"
      "    act = rt.activation_range('relu6', 0.05, -128)\n"
      "    conv = rt.make_conv_params(0.02, 3, [0.01] * 8, 0.05, -128, **act)\n"
      "    y = rt.conv2d(x, w, bias, stride=2, padding=(0, 0, 1, 1), **conv)\n";

  m.attr("MIN_SHIFT") = rt::kMinShift;
  m.attr("MAX_SHIFT") = rt::kMaxShift;
  m.attr("MAX_ACCUMULATION_DEPTH") = rt::kMaxAccumulationDepth;
  m.attr("MAX_POOL_WINDOW") = rt::kMaxPoolWindow;

  m.def("kernel_tables", &table_names,
        "Names of the kernel tables `impl=` accepts: 'reference', 'fast' (the best ISA, capped by "
        "EDGEQAT_RUNTIME_ISA) and 'fast/<isa>' for each ISA this build and CPU support.");
#if EDGEQAT_BINDINGS_HAVE_FAST
  m.def("fast_isas", &rt::fast::available_isas,
        "The ISAs of the fast kernels this build and CPU support, slowest first.");
  m.def("fast_active_isa", &rt::fast::active_isa,
        "The ISA the 'fast' table runs on now (the best one, capped by EDGEQAT_RUNTIME_ISA).");
#endif

  // ---- requantization
  m.def(
      "quantize_multiplier",
      [](double real) { return multiplier_tuple(rt::quantize_multiplier(real)); },
      py::arg("real_multiplier"),
      "(multiplier, shift) with real ~= multiplier * 2**(shift - 31) (TFLite's "
      "QuantizeMultiplier); (0, 0) below 2**-32. ValueError unless 0 < real < 2**30.");
  m.def(
      "quantized_multiplier_value",
      [](int64_t multiplier, int64_t shift) {
        return rt::quantized_multiplier_value(
            {to_int32(multiplier, "quantized_multiplier_value", "multiplier"),
             to_int32(shift, "quantized_multiplier_value", "shift")});
      },
      py::arg("multiplier"), py::arg("shift"), "multiplier * 2**(shift - 31) as a float.");
  m.def(
      "check_quantized_multiplier",
      [](int64_t multiplier, int64_t shift) {
        checked_multiplier(multiplier, shift, "check_quantized_multiplier");
      },
      py::arg("multiplier"), py::arg("shift"),
      "ValueError unless multiplier >= 0 and MIN_SHIFT <= shift <= MAX_SHIFT.");
  m.def("multiply_by_quantized_multiplier", &multiply_by_quantized_multiplier, py::arg("x"),
        py::arg("multiplier"), py::arg("shift"),
        "x * multiplier * 2**(shift - 31) rounded to nearest, ties toward +inf, saturated to "
        "int32, for an int32 array x of any shape (single rounding).");
  m.def("requantize_output", &requantize_output, py::arg("acc"), py::arg("multiplier"),
        py::arg("shift"), py::kw_only(), py::arg("output_zero_point"), py::arg("act_min") = -128,
        py::arg("act_max") = 127,
        "The conv / fully connected output stage on an int32 accumulator array: "
        "clamp(multiply_by_quantized_multiplier(acc) + output_zero_point, act_min, act_max) "
        "as int8.");
  m.def(
      "window_output_size",
      [](int input, int kernel, int stride, int dilation, int pad_before, int pad_after) {
        return rt::window_output_size(input, kernel, stride, dilation, pad_before, pad_after,
                                      "window_output_size", "axis");
      },
      py::arg("input"), py::arg("kernel"), py::arg("stride") = 1, py::arg("dilation") = 1,
      py::arg("pad_before") = 0, py::arg("pad_after") = 0,
      "(input + pad_before + pad_after - ((kernel - 1) * dilation + 1)) // stride + 1.");

  // ---- load-time parameter helpers
  m.def(
      "activation_range",
      [](const std::string& activation, double output_scale, int64_t output_zero_point) {
        const rt::ActivationRange r = rt::activation_range(
            activation_from(activation), output_scale,
            to_int32(output_zero_point, "activation_range", "output_zero_point"));
        py::dict d;
        d["act_min"] = r.min;
        d["act_max"] = r.max;
        return d;
      },
      py::arg("activation"), py::arg("output_scale"), py::arg("output_zero_point"),
      "{'act_min', 'act_max'}: the output clamp of a fused 'none', 'relu' or 'relu6' "
      "(TFLite's CalculateActivationRangeQuantized); spread it into a kernel call.");
  m.def(
      "make_channel_multipliers",
      [](double input_scale, const std::vector<double>& weight_scales, double output_scale) {
        return multiplier_list(
            rt::make_channel_multipliers(input_scale, weight_scales, output_scale));
      },
      py::arg("input_scale"), py::arg("weight_scales"), py::arg("output_scale"),
      "[(multiplier, shift)] per output channel for input_scale * weight_scales[c] / "
      "output_scale.");
  const char* setup_doc =
      "{'input_zero_point', 'output_zero_point', 'act_min', 'act_max', 'multipliers'}: the "
      "keywords of the matching kernel call.";
  // The three weighted kernels' helpers share their arguments: one binding for each.
  auto bind_setup = [&m, setup_doc](const char* fn, auto make) {
    m.def(
        fn,
        [fn, make](double input_scale, int64_t input_zero_point,
                   const std::vector<double>& weight_scales, double output_scale,
                   int64_t output_zero_point, int64_t act_min, int64_t act_max) {
          return setup_dict(make(input_scale, to_int32(input_zero_point, fn, "input_zero_point"),
                                 weight_scales, output_scale,
                                 to_int32(output_zero_point, fn, "output_zero_point"),
                                 rt::ActivationRange{to_int32(act_min, fn, "act_min"),
                                                     to_int32(act_max, fn, "act_max")}));
        },
        py::arg("input_scale"), py::arg("input_zero_point"), py::arg("weight_scales"),
        py::arg("output_scale"), py::arg("output_zero_point"), py::arg("act_min") = -128,
        py::arg("act_max") = 127, setup_doc);
  };
  bind_setup("make_conv_params", &rt::make_conv_params);
  bind_setup("make_depthwise_conv_params", &rt::make_depthwise_conv_params);
  bind_setup("make_fully_connected_params", &rt::make_fully_connected_params);
  m.def(
      "make_add_params",
      [](double input1_scale, int64_t input1_zero_point, double input2_scale,
         int64_t input2_zero_point, double output_scale, int64_t output_zero_point, int64_t act_min,
         int64_t act_max) {
        const char* fn = "make_add_params";
        const rt::AddParams p =
            rt::make_add_params(input1_scale, to_int32(input1_zero_point, fn, "input1_zero_point"),
                                input2_scale, to_int32(input2_zero_point, fn, "input2_zero_point"),
                                output_scale, to_int32(output_zero_point, fn, "output_zero_point"),
                                to_int32(act_min, fn, "act_min"), to_int32(act_max, fn, "act_max"));
        py::dict d;
        d["input1_zero_point"] = p.input1_zero_point;
        d["input2_zero_point"] = p.input2_zero_point;
        d["left_shift"] = p.left_shift;
        d["input1_multiplier"] = multiplier_tuple(p.input1_multiplier);
        d["input2_multiplier"] = multiplier_tuple(p.input2_multiplier);
        d["output_multiplier"] = multiplier_tuple(p.output_multiplier);
        d["output_zero_point"] = p.output_zero_point;
        d["act_min"] = p.act_min;
        d["act_max"] = p.act_max;
        return d;
      },
      py::arg("input1_scale"), py::arg("input1_zero_point"), py::arg("input2_scale"),
      py::arg("input2_zero_point"), py::arg("output_scale"), py::arg("output_zero_point"),
      py::arg("act_min") = -128, py::arg("act_max") = 127,
      "The AddParams fields as a dict (multipliers as (multiplier, shift)): the keywords of "
      "add(). TFLite's scheme: left_shift 20, input multipliers s_i / (2 max(s1, s2)), output "
      "multiplier 2 max(s1, s2) / (2**20 s_out).");
  m.def(
      "make_pool_params",
      [](py::object filter_size, py::object stride, py::object padding, int64_t act_min,
         int64_t act_max) {
        const char* fn = "make_pool_params";
        const auto [fh, fw] = pair_arg(filter_size, fn, "filter_size");
        const auto [sh, sw] = pair_arg(stride, fn, "stride");
        return pool_dict(rt::make_pool_params(fh, fw, sh, sw, padding_arg(padding, fn),
                                              to_int32(act_min, fn, "act_min"),
                                              to_int32(act_max, fn, "act_max")));
      },
      py::arg("filter_size"), py::arg("stride") = py::make_tuple(1, 1),
      py::arg("padding") = py::make_tuple(0, 0, 0, 0), py::arg("act_min") = -128,
      py::arg("act_max") = 127,
      "{'filter_size', 'stride', 'padding', 'act_min', 'act_max'}: the keywords of "
      "average_pool2d / max_pool2d.");
  m.def(
      "make_global_pool_params",
      [](py::object input_shape, int64_t act_min, int64_t act_max) {
        const char* fn = "make_global_pool_params";
        if (!py::isinstance<py::sequence>(input_shape) || py::len(input_shape) != 4) {
          fail(fn, "input_shape must be (n, h, w, c), got ", std::string(py::repr(input_shape)));
        }
        const auto s = py::reinterpret_borrow<py::sequence>(input_shape);
        const rt::Shape4 shape{
            to_int32(s[0], fn, "input_shape[0]"), to_int32(s[1], fn, "input_shape[1]"),
            to_int32(s[2], fn, "input_shape[2]"), to_int32(s[3], fn, "input_shape[3]")};
        return pool_dict(rt::make_global_pool_params(shape, to_int32(act_min, fn, "act_min"),
                                                     to_int32(act_max, fn, "act_max")));
      },
      py::arg("input_shape"), py::arg("act_min") = -128, py::arg("act_max") = 127,
      "make_pool_params for one window covering an NHWC image (output 1x1).");
  m.def(
      "make_quantize_params",
      [](double scale, int64_t zero_point) {
        const rt::QuantizeParams p = rt::make_quantize_params(
            scale, to_int32(zero_point, "make_quantize_params", "zero_point"));
        py::dict d;
        d["scale"] = static_cast<double>(p.scale);
        d["zero_point"] = p.zero_point;
        return d;
      },
      py::arg("scale"), py::arg("zero_point"),
      "{'scale' (rounded to float32), 'zero_point'}: the keywords of quantize / dequantize.");

  // ---- kernels
  const auto impl = py::arg("impl") = "reference";
  const auto threads = py::arg("num_threads") = 1;
  m.def("conv2d", &conv2d, py::arg("input"), py::arg("filter"), py::arg("bias"),
        py::arg("multipliers"), py::kw_only(), py::arg("stride") = py::make_tuple(1, 1),
        py::arg("padding") = py::make_tuple(0, 0, 0, 0), py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("groups") = 1, py::arg("input_zero_point"), py::arg("output_zero_point"),
        py::arg("act_min") = -128, py::arg("act_max") = 127, impl, threads,
        "int8 conv2d: input int8 [n, h, w, c] (NHWC), filter int8 [out, kh, kw, c / groups] "
        "(OHWI), bias int32 [out] or None, multipliers one (multiplier, shift) per output "
        "channel (a list of pairs, an int array [out, 2] or a tuple (multipliers, shifts) of "
        "two int arrays). stride / dilation: int or (h, w); padding: int, (h, w) or (top, "
        "left, bottom, right). Returns int8 [n, oh, ow, out].");
  m.def("depthwise_conv2d", &depthwise_conv2d, py::arg("input"), py::arg("filter"), py::arg("bias"),
        py::arg("multipliers"), py::kw_only(), py::arg("stride") = py::make_tuple(1, 1),
        py::arg("padding") = py::make_tuple(0, 0, 0, 0), py::arg("dilation") = py::make_tuple(1, 1),
        py::arg("depth_multiplier") = 1, py::arg("input_zero_point"), py::arg("output_zero_point"),
        py::arg("act_min") = -128, py::arg("act_max") = 127, impl, threads,
        "int8 depthwise conv2d: input int8 [n, h, w, c], filter int8 [1, kh, kw, c * "
        "depth_multiplier] (output channel oc reads input channel oc // depth_multiplier); "
        "other arguments as conv2d. Returns int8 [n, oh, ow, c * depth_multiplier].");
  m.def("fully_connected", &fully_connected, py::arg("input"), py::arg("filter"), py::arg("bias"),
        py::arg("multipliers"), py::kw_only(), py::arg("input_zero_point"),
        py::arg("output_zero_point"), py::arg("act_min") = -128, py::arg("act_max") = 127, impl,
        threads,
        "int8 fully connected: input int8 [batch, in], filter int8 [out, in], bias int32 "
        "[out] or None. Returns int8 [batch, out].");
  m.def("add", &add, py::arg("input1"), py::arg("input2"), py::kw_only(),
        py::arg("input1_zero_point"), py::arg("input2_zero_point"), py::arg("input1_multiplier"),
        py::arg("input2_multiplier"), py::arg("output_multiplier"), py::arg("output_zero_point"),
        py::arg("left_shift") = 20, py::arg("act_min") = -128, py::arg("act_max") = 127, impl,
        threads,
        "int8 elementwise add of two arrays of one shape (TFLite's scheme; the keywords are "
        "what make_add_params returns). Returns int8 of that shape.");
  const std::string pool_doc =
      " pooling over NHWC: input int8 [n, h, w, c]; filter_size / stride int or (h, w); "
      "padding int, (h, w) or (top, left, bottom, right); taps in the padding are skipped. "
      "Returns int8 [n, oh, ow, c] (same scale and zero point as the input).";
  m.def(
      "average_pool2d",
      [](py::object input, py::object filter_size, py::object stride, py::object padding,
         int64_t act_min, int64_t act_max, const std::string& impl_name, int64_t num_threads) {
        return pool2d(&rt::KernelTable::average_pool2d, "average_pool2d", input, filter_size,
                      stride, padding, act_min, act_max, impl_name, num_threads);
      },
      py::arg("input"), py::kw_only(), py::arg("filter_size"),
      py::arg("stride") = py::make_tuple(1, 1), py::arg("padding") = py::make_tuple(0, 0, 0, 0),
      py::arg("act_min") = -128, py::arg("act_max") = 127, impl, threads,
      ("int8 average" + pool_doc).c_str());
  m.def(
      "max_pool2d",
      [](py::object input, py::object filter_size, py::object stride, py::object padding,
         int64_t act_min, int64_t act_max, const std::string& impl_name, int64_t num_threads) {
        return pool2d(&rt::KernelTable::max_pool2d, "max_pool2d", input, filter_size, stride,
                      padding, act_min, act_max, impl_name, num_threads);
      },
      py::arg("input"), py::kw_only(), py::arg("filter_size"),
      py::arg("stride") = py::make_tuple(1, 1), py::arg("padding") = py::make_tuple(0, 0, 0, 0),
      py::arg("act_min") = -128, py::arg("act_max") = 127, impl, threads,
      ("int8 max" + pool_doc).c_str());
  m.def("quantize", &quantize, py::arg("input"), py::kw_only(), py::arg("scale"),
        py::arg("zero_point"), impl, threads,
        "float32 array -> int8: clamp(round_half_to_even(x / scale) + zero_point, -128, 127) "
        "in float32 (scale rounded to float32); NaN -> zero_point, +-inf saturate.");
  m.def("dequantize", &dequantize, py::arg("input"), py::kw_only(), py::arg("scale"),
        py::arg("zero_point"), impl, threads,
        "int8 array -> float32: float32(q - zero_point) * scale.");
  bind_graph_builder(m);
  bind_model(m);
}
