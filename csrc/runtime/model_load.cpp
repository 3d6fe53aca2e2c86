// Model loading: every check of docs/int8-format.md on the graph part of the header, then the
// execution plan (kernel params, multipliers, weights in the kernel's layout, prepacking).
//
// Order of the checks: the header's top-level fields, every value (so a node can rely on its
// values being well formed), the graph inputs / outputs lists, then node by node: its common
// fields (op, name, inputs defined before use, output defined once), its attributes (JSON type
// first, then range), its constants (dtype, then shape), the output shape recomputed from the
// input and the attributes, and last the kernel's own validator (checks.h) as a backstop, so the
// kernels never see arguments that were not checked. Every error is a ModelError naming the
// node (index, name, op) or the value, and the attribute or field.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "edgeqat/runtime/checks.h"
#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/model.h"
#include "edgeqat/runtime/reference.h"
#include "edgeqat/runtime/requantize.h"
#include "model_impl.h"

namespace edgeqat::runtime {

ModelError::ModelError(const std::string& source, const std::string& message)
    : std::runtime_error("edgeqat int8 model '" + source + "': " + message), source_(source) {}

namespace detail {
namespace {

using nlohmann::json;

constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kMultiplierMin = int64_t{1} << 30;  // normalized M0 in [2^30, 2^31)
constexpr int64_t kMultiplierMax = (int64_t{1} << 31) - 1;

const char* const kOps[] = {"conv2d",     "fully_connected", "add",   "average_pool2d",
                            "max_pool2d", "flatten",         "concat"};

// A JSON value for an error message, cut short (the header can be 64 MiB).
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  os.precision(std::numeric_limits<float>::max_digits10);
  (os << ... << parts);
  return os.str();
}

// A JSON object being checked: a value, a node or the header itself. Errors read
// "<prefix>, <kind> '<key>': <message>", e.g. "node 3 'conv1' (conv2d), attribute 'stride': ...".
class Obj {
 public:
  // `node`: keys other than op / name / inputs / output are "attribute"s; everything else
  // (values, the header) has "field"s.
  Obj(const json& j, std::string prefix, const std::string& source, bool node = false)
      : j_(j), prefix_(std::move(prefix)), source_(source), node_(node) {}

  void set_prefix(std::string prefix) { prefix_ = std::move(prefix); }
  const std::string& prefix() const { return prefix_; }
  const std::string& source() const { return source_; }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    throw ModelError(source_, prefix_ + ", " + kind(key) + " '" + key + "': " + message);
  }
  [[noreturn]] void fail_here(const std::string& message) const {
    throw ModelError(source_, prefix_ + ": " + message);
  }

  bool has(const char* key) const { return j_.contains(key); }
  const json& get(const char* key) const {
    const auto it = j_.find(key);
    if (it == j_.end()) fail(key, "is missing");
    return *it;
  }

  // Rejects keys outside `allowed` (a misspelled optional attribute must not be ignored).
  void allow_only(const std::vector<std::string>& allowed) const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
        std::string list;
        for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(it.key(), "unknown key (allowed: " + list + ")");
      }
    }
  }

  // Strict types: a JSON integer (not 1.0, not true, not "1") within [lo, hi].
  int64_t integer_of(const json& v, const std::string& key, int64_t lo, int64_t hi,
                     const std::string& what = "") const {
    bool ok = v.is_number_integer();
    int64_t x = 0;
    if (ok && v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      ok = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      x = ok ? static_cast<int64_t>(u) : 0;
    } else if (ok) {
      x = v.get<int64_t>();
    }
    if (!ok || x < lo || x > hi) {
      fail(key, cat(what.empty() ? "" : what + " ", "must be an integer in [", lo, ", ", hi,
                    "], got ", brief(v)));
    }
    return x;
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    return integer_of(get(key), key, lo, hi);
  }

  std::string string_of(const json& v, const std::string& key, const std::string& what = "") const {
    if (!v.is_string())
      fail(key, cat(what.empty() ? "" : what + " ", "must be a string, got ", brief(v)));
    return v.get<std::string>();
  }
  std::string string(const char* key) const { return string_of(get(key), key); }

  const json& array(const char* key) const {
    const json& v = get(key);
    if (!v.is_array()) fail(key, "must be an array, got " + brief(v));
    return v;
  }

  // An array of exactly n integers in [lo, hi].
  std::vector<int> ints(const char* key, size_t n, int64_t lo, int64_t hi) const {
    const json& v = get(key);
    if (!v.is_array() || v.size() != n) {
      fail(key, cat("must be an array of ", n, " integers, got ", brief(v)));
    }
    std::vector<int> out;
    for (size_t i = 0; i < n; ++i) {
      out.push_back(static_cast<int>(integer_of(v[i], key, lo, hi, cat("element ", i))));
    }
    return out;
  }

  // [M0, shift] with M0 in [2^30, 2^31) (or 0 with shift 0) and shift in [-31, 30].
  QuantizedMultiplier multiplier_pair(const json& v, const std::string& key,
                                      const std::string& what = "") const {
    const std::string w = what.empty() ? "" : what + " ";
    if (!v.is_array() || v.size() != 2) {
      fail(key, cat(w, "must be an array [multiplier, shift] of 2 integers, got ", brief(v)));
    }
    const int64_t m0 = integer_of(v[0], key, 0, kMultiplierMax, w + "multiplier");
    const int64_t shift = integer_of(v[1], key, kMinShift, kMaxShift, w + "shift");
    check_multiplier(m0, shift, key, w);
    return {static_cast<int32_t>(m0), static_cast<int>(shift)};
  }

  void check_multiplier(int64_t m0, int64_t shift, const std::string& key,
                        const std::string& w) const {
    if (m0 == 0 && shift != 0) {
      fail(key, cat(w, "a zero multiplier must have shift 0, got shift ", shift));
    }
    if (m0 != 0 && (m0 < kMultiplierMin || m0 > kMultiplierMax)) {
      fail(key, cat(w, "multiplier must be 0 or in [2^30, 2^31), got ", m0));
    }
    if (shift < kMinShift || shift > kMaxShift) {
      fail(key, cat(w, "shift must be in [", kMinShift, ", ", kMaxShift, "], got ", shift));
    }
    try {  // backstop: the kernels' own definition of a valid multiplier
      check_quantized_multiplier({static_cast<int32_t>(m0), static_cast<int>(shift)}, key.c_str());
    } catch (const std::invalid_argument& e) {
      fail(key, e.what());
    }
  }

 private:
  std::string kind(const std::string& key) const {
    const bool field = !node_ || key == "op" || key == "name" || key == "inputs" || key == "output";
    return field ? "field" : "attribute";
  }

  const json& j_;
  std::string prefix_;
  const std::string& source_;
  bool node_ = false;
};

class Loader {
 public:
  explicit Loader(ModelImpl& m) : m_(m), src_(m.source) {}

  void run() {
    const json& header = m_.file.header();
    Obj top(header, "header", src_);
    check_top(top);
    load_values(top);
    load_io(top);
    load_nodes(top);
    finish();
  }

 private:
  // ---- header ----------------------------------------------------------------------------------

  void check_top(const Obj& top) {
    const std::string format = top.string("format");
    if (format != "edgeqat.int8") top.fail("format", "must be \"edgeqat.int8\", got " + format);
    if (top.has("producer")) top.string("producer");
    for (const char* key : {"values", "inputs", "outputs", "nodes"}) top.array(key);
  }

  void load_values(const Obj& top) {
    const json& values = top.array("values");
    for (size_t i = 0; i < values.size(); ++i) {
      const json& v = values[i];
      Obj o(v, cat("value ", i), src_);
      if (!v.is_object())
        top.fail("values", cat("values[", i, "] must be an object, got ", brief(v)));
      ValueInfo info;
      info.name = o.string("name");
      if (info.name.empty()) o.fail("name", "must not be empty");
      o.set_prefix(cat("value '", info.name, "' (values[", i, "])"));
      o.allow_only({"name", "shape", "scale", "zero_point", "qmin", "qmax"});
      if (m_.value_index.count(info.name)) {
        o.fail("name", cat("duplicate value name (also values[", m_.value_index[info.name], "])"));
      }

      const json& shape = o.get("shape");
      if (!shape.is_array() || (shape.size() != 1 && shape.size() != 3)) {
        o.fail("shape", "must be an array [C, H, W] or [F], got " + brief(shape));
      }
      ValueDims d;
      d.rank = static_cast<int>(shape.size());
      int64_t numel = 1;
      for (size_t k = 0; k < shape.size(); ++k) {
        const int64_t dim = o.integer_of(shape[k], "shape", 1, kIntMax, cat("dimension ", k));
        info.shape.push_back(dim);
        numel = dim > kMaxValueElements / numel ? kMaxValueElements + 1 : numel * dim;
      }
      if (numel > kMaxValueElements) {
        o.fail("shape", cat(shape_text(info.shape), " has more than 2^31 - 1 elements per sample"));
      }
      d.numel = numel;
      if (d.rank == 3) {
        d.c = static_cast<int>(info.shape[0]);
        d.h = static_cast<int>(info.shape[1]);
        d.w = static_cast<int>(info.shape[2]);
      } else {
        d.c = static_cast<int>(info.shape[0]);
      }

      const json& scale = o.get("scale");
      if (!scale.is_number()) o.fail("scale", "must be a number, got " + brief(scale));
      const double s = scale.get<double>();
      if (!std::isfinite(s) || !(s > 0.0))
        o.fail("scale", cat("must be finite and > 0, got ", brief(scale)));
      // The file stores float32 scales exactly (docs/int8-format.md); anything else is a
      // corrupted or foreign file, and the kernels' float32 quantize would round it silently.
      const float sf = static_cast<float>(s);
      if (static_cast<double>(sf) != s) {
        o.fail("scale",
               "must be a float32 value (written so that it round-trips), got " + brief(scale));
      }
      info.scale = sf;
      info.zero_point = static_cast<int32_t>(o.integer("zero_point", kInt8Min, kInt8Max));
      info.qmin = static_cast<int32_t>(o.integer("qmin", kInt8Min, kInt8Max));
      info.qmax = static_cast<int32_t>(o.integer("qmax", kInt8Min, kInt8Max));
      if (info.qmin > info.qmax) {
        o.fail("qmin", cat("qmin (", info.qmin, ") must be <= qmax (", info.qmax, ")"));
      }
      m_.value_index[info.name] = static_cast<int>(m_.values.size());
      m_.values.push_back(std::move(info));
      m_.dims.push_back(d);
    }
    m_.def_step.assign(m_.values.size(), kUndefined);
    m_.last_use.assign(m_.values.size(), -1);
  }

  // The graph's "inputs" / "outputs": non-empty lists of distinct value names.
  std::vector<int> name_list(const Obj& top, const char* key) {
    const json& list = top.array(key);
    if (list.empty()) top.fail(key, "must name at least one value");
    std::vector<int> ids;
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string name = top.string_of(list[i], key, cat("element ", i));
      const auto it = m_.value_index.find(name);
      if (it == m_.value_index.end())
        top.fail(key, cat("element ", i, " names no value: '", name, "'"));
      if (std::find(ids.begin(), ids.end(), it->second) != ids.end()) {
        top.fail(key, cat("value '", name, "' is listed twice"));
      }
      ids.push_back(it->second);
    }
    return ids;
  }

  void load_io(const Obj& top) {
    m_.input_ids = name_list(top, "inputs");
    m_.output_ids = name_list(top, "outputs");
    for (int id : m_.input_ids) {
      m_.def_step[id] = -1;
      m_.input_infos.push_back(m_.values[id]);
      try {
        check_quantize_params({m_.values[id].scale, m_.values[id].zero_point}, "quantize");
      } catch (const std::invalid_argument& e) {
        top.fail("inputs", e.what());
      }
    }
    for (int id : m_.output_ids) m_.output_infos.push_back(m_.values[id]);
  }

  // ---- nodes -----------------------------------------------------------------------------------

  static constexpr int kUndefined = -2;  // def_step of a value no node has produced (yet)

  void load_nodes(const Obj& top) {
    const json& nodes = top.array("nodes");
    std::unordered_map<std::string, size_t> node_names;
    for (size_t i = 0; i < nodes.size(); ++i) {
      const json& j = nodes[i];
      if (!j.is_object())
        top.fail("nodes", cat("nodes[", i, "] must be an object, got ", brief(j)));
      Obj n(j, cat("node ", i), src_, /*node=*/true);
      NodeInfo info;
      info.op = n.string("op");
      if (std::find(std::begin(kOps), std::end(kOps), info.op) == std::end(kOps)) {
        n.fail("op", "unknown op '" + info.op +
                         "' (known: conv2d, fully_connected, add, average_pool2d, max_pool2d, "
                         "flatten, concat)");
      }
      info.name = n.string("name");
      if (info.name.empty()) n.fail("name", "must not be empty");
      n.set_prefix(cat("node ", i, " '", info.name, "' (", info.op, ")"));
      const auto [first, inserted] = node_names.emplace(info.name, i);
      if (!inserted) n.fail("name", cat("duplicate node name (also node ", first->second, ")"));

      const int step = static_cast<int>(i);
      const json& ins = n.array("inputs");
      std::vector<int> in_ids;
      for (size_t k = 0; k < ins.size(); ++k) {
        const std::string name = n.string_of(ins[k], "inputs", cat("element ", k));
        info.inputs.push_back(name);
        const auto it = m_.value_index.find(name);
        if (it == m_.value_index.end()) n.fail("inputs", "names no value: '" + name + "'");
        const int id = it->second;
        if (m_.def_step[id] == kUndefined) {
          n.fail("inputs", "value '" + name + "' is used before it is defined");
        }
        m_.last_use[id] = step;
        in_ids.push_back(id);
      }
      info.output = n.string("output");
      const auto out_it = m_.value_index.find(info.output);
      if (out_it == m_.value_index.end()) n.fail("output", "names no value: '" + info.output + "'");
      const int out = out_it->second;
      if (m_.def_step[out] == -1) {
        n.fail("output", "value '" + info.output + "' is a graph input (defined twice)");
      }
      if (m_.def_step[out] != kUndefined) {
        n.fail("output", cat("value '", info.output, "' is already the output of node ",
                             m_.def_step[out], " (defined twice)"));
      }
      m_.def_step[out] = step;

      Step s;
      s.inputs = in_ids;
      s.output = out;
      plan_node(n, info.op, s);
      m_.steps.push_back(std::move(s));
      m_.nodes.push_back(std::move(info));
    }
  }

  void finish() {
    for (size_t v = 0; v < m_.values.size(); ++v) {
      if (m_.def_step[v] == kUndefined) {
        throw ModelError(src_, cat("value '", m_.values[v].name, "' (values[", v,
                                   "]): is neither a graph input nor the output of a node"));
      }
      m_.last_use[v] = std::max(m_.last_use[v], m_.def_step[v]);
    }
    int64_t largest = 1;
    for (const ValueDims& d : m_.dims) largest = std::max(largest, d.numel);
    m_.max_chunk = std::max<int64_t>(1, kMaxValueElements / largest);
  }

  // The number of inputs an op takes, then its plan.
  void plan_node(const Obj& n, const std::string& op, Step& s) {
    const size_t count = s.inputs.size();
    const bool concat = op == "concat";
    const size_t want = op == "add" ? 2 : 1;
    if (concat ? count < 1 : count != want) {
      n.fail("inputs", cat("must name ", concat ? "at least 1" : std::to_string(want), " value",
                           want > 1 ? "s" : "", ", got ", count));
    }
    if (op == "conv2d") {
      plan_conv(n, s);
    } else if (op == "fully_connected") {
      plan_fully_connected(n, s);
    } else if (op == "add") {
      plan_add(n, s);
    } else if (op == "average_pool2d" || op == "max_pool2d") {
      plan_pool(n, s, op == "max_pool2d");
    } else if (op == "flatten") {
      plan_flatten(n, s);
    } else {
      plan_concat(n, s);
    }
  }

  const ValueInfo& val(int id) const { return m_.values[id]; }

  // Inputs of conv / pool / flatten / concat are images.
  void require_image(const Obj& n, int id) const {
    if (m_.dims[id].rank != 3) {
      n.fail("inputs", cat("value '", val(id).name, "' must have shape [C, H, W], got ",
                           shape_text(val(id).shape)));
    }
  }

  void require_output_shape(const Obj& n, int out, const std::vector<int64_t>& expected) const {
    if (val(out).shape != expected) {
      n.fail("output", cat("value '", val(out).name, "' has shape ", shape_text(val(out).shape),
                           ", but the input and the attributes give ", shape_text(expected)));
    }
  }

  void require_same_grid(const Obj& n, int in, int out) const {
    const ValueInfo& a = val(in);
    const ValueInfo& b = val(out);
    if (a.scale != b.scale || a.zero_point != b.zero_point) {
      n.fail("output",
             cat("value '", b.name, "' must keep the input's scale and zero point (", a.scale, ", ",
                 a.zero_point, "), got (", b.scale, ", ", b.zero_point, ")"));
    }
  }

  // A constant named by a string attribute, with its dtype checked.
  const ConstantView& constant(const Obj& n, const char* key, DType dtype) const {
    const std::string name = n.string(key);
    if (!m_.file.has_constant(name)) n.fail(key, "names no constant: '" + name + "'");
    const ConstantView& c = m_.file.constant(name);
    if (c.dtype != dtype) {
      n.fail(key, cat("constant '", name, "' must have dtype ", dtype_name(dtype), ", got ",
                      dtype_name(c.dtype)));
    }
    return c;
  }
  const ConstantView& constant(const Obj& n, const char* key, DType dtype,
                               const std::vector<int64_t>& shape) const {
    const ConstantView& c = constant(n, key, dtype);
    if (c.shape != shape) {
      n.fail(key, cat("constant '", c.name, "' must have shape ", shape_text(shape), ", got ",
                      shape_text(c.shape)));
    }
    return c;
  }

  // act_min / act_max: integers with act_min <= act_max inside the output's [qmin, qmax].
  std::pair<int32_t, int32_t> act_range(const Obj& n, int out) const {
    const int64_t lo = n.integer("act_min", kInt8Min, kInt8Max);
    const int64_t hi = n.integer("act_max", kInt8Min, kInt8Max);
    const ValueInfo& o = val(out);
    if (lo < o.qmin) {
      n.fail("act_min",
             cat("act_min (", lo, ") must be >= qmin (", o.qmin, ") of the output '", o.name, "'"));
    }
    if (hi > o.qmax) {
      n.fail("act_max",
             cat("act_max (", hi, ") must be <= qmax (", o.qmax, ") of the output '", o.name, "'"));
    }
    if (lo > hi) n.fail("act_min", cat("act_min (", lo, ") must be <= act_max (", hi, ")"));
    return {static_cast<int32_t>(lo), static_cast<int32_t>(hi)};
  }

  // multiplier (int32 [O]), shift (int8 [O]) and the optional bias (int32 [O]).
  void per_channel(const Obj& n, Step& s, int64_t out_channels) const {
    const std::vector<int64_t> shape{out_channels};
    const int32_t* m0 = constant(n, "multiplier", DType::kInt32, shape).as<int32_t>();
    const int8_t* sh = constant(n, "shift", DType::kInt8, shape).as<int8_t>();
    s.multipliers.resize(static_cast<size_t>(out_channels));
    for (int64_t c = 0; c < out_channels; ++c) {
      if (m0[c] != 0 && m0[c] < kMultiplierMin) {
        n.fail("multiplier", cat("multiplier[", c, "] must be 0 or in [2^30, 2^31), got ", m0[c]));
      }
      if (sh[c] < kMinShift || sh[c] > kMaxShift) {
        n.fail("shift", cat("shift[", c, "] must be in [", kMinShift, ", ", kMaxShift, "], got ",
                            int{sh[c]}));
      }
      if (m0[c] == 0 && sh[c] != 0) {
        n.fail("shift",
               cat("shift[", c, "] must be 0 where multiplier[", c, "] is 0, got ", int{sh[c]}));
      }
      s.multipliers[c] = {m0[c], static_cast<int>(sh[c])};
    }
    s.bias = nullptr;
    if (n.has("bias") && !n.get("bias").is_null()) {  // absent or null: no bias
      s.bias = constant(n, "bias", DType::kInt32, shape).as<int32_t>();
    }
  }

  // The kernels' validators, once, at load (run time only changes the batch size).
  template <class Fn>
  void validate(const Obj& n, Fn&& fn) const {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      n.fail_here(cat("kernel check: ", e.what()));
    }
  }

  // Output size along one axis; a kernel larger than the padded input names `key`.
  int window(const Obj& n, const char* key, int in, int k, int stride, int dilation, int before,
             int after, const char* axis, const char* op) const {
    try {
      return window_output_size(in, k, stride, dilation, before, after, op, axis);
    } catch (const std::invalid_argument& e) {
      n.fail(key, e.what());
    }
  }

  void plan_conv(const Obj& n, Step& s) {
    n.allow_only({"op", "name", "inputs", "output", "weight", "bias", "multiplier", "shift",
                  "stride", "padding", "dilation", "groups", "act_min", "act_max"});
    const int in = s.inputs[0];
    require_image(n, in);
    const ValueDims& d = m_.dims[in];
    const ConstantView& w = constant(n, "weight", DType::kInt8);
    if (w.shape.size() != 4 || std::any_of(w.shape.begin(), w.shape.end(),
                                           [](int64_t x) { return x < 1 || x > kIntMax; })) {
      n.fail("weight", cat("constant '", w.name, "' must have shape [O, KH, KW, C / groups] (OHWI)",
                           " with dimensions >= 1, got ", shape_text(w.shape)));
    }
    const int oc = static_cast<int>(w.shape[0]), kh = static_cast<int>(w.shape[1]),
              kw = static_cast<int>(w.shape[2]), cg = static_cast<int>(w.shape[3]);
    const int groups = static_cast<int>(n.integer("groups", 1, kIntMax));
    if (d.c % groups != 0) {
      n.fail("groups", cat("groups (", groups, ") must divide the input channels (", d.c, ")"));
    }
    if (oc % groups != 0) {
      n.fail("groups", cat("groups (", groups, ") must divide the output channels (", oc,
                           ", weight dimension 0)"));
    }
    if (cg != d.c / groups) {
      n.fail("weight", cat("constant '", w.name, "' ", shape_text(w.shape),
                           ": dimension 3 must be input channels / groups = ", d.c, " / ", groups,
                           " = ", d.c / groups));
    }
    if (int64_t{kh} * kw * cg > kMaxAccumulationDepth) {
      n.fail("weight", cat("KH * KW * C / groups = ", int64_t{kh} * kw * cg,
                           " exceeds the accumulation limit ", kMaxAccumulationDepth));
    }
    const std::vector<int> stride = n.ints("stride", 2, 1, kIntMax);
    const std::vector<int> padding = n.ints("padding", 4, 0, kIntMax);
    const std::vector<int> dilation = n.ints("dilation", 2, 1, kIntMax);
    const Padding pad{padding[0], padding[1], padding[2], padding[3]};
    const int oh =
        window(n, "weight", d.h, kh, stride[0], dilation[0], pad.top, pad.bottom, "h", "conv2d");
    const int ow =
        window(n, "weight", d.w, kw, stride[1], dilation[1], pad.left, pad.right, "w", "conv2d");
    require_output_shape(n, s.output, {oc, oh, ow});
    per_channel(n, s, oc);
    const auto [act_min, act_max] = act_range(n, s.output);
    const ValueInfo& x = val(in);
    const ValueInfo& y = val(s.output);
    const Shape4 in_shape{1, d.h, d.w, d.c};
    const Shape4 out_shape{1, oh, ow, oc};
    s.weight = w.as<int8_t>();

    if (groups == d.c) {
      // Depthwise (docs/int8-format.md): OHWI [C * M, KH, KW, 1] -> [1, KH, KW, C * M].
      s.kind = StepKind::kDepthwiseConv2d;
      DepthwiseConvParams& p = s.depthwise;
      p.stride_h = stride[0];
      p.stride_w = stride[1];
      p.dilation_h = dilation[0];
      p.dilation_w = dilation[1];
      p.padding = pad;
      p.depth_multiplier = oc / d.c;
      p.input_zero_point = x.zero_point;
      p.output_zero_point = y.zero_point;
      p.act_min = act_min;
      p.act_max = act_max;
      s.filter_shape = {1, kh, kw, oc};
      s.depthwise_weight.resize(static_cast<size_t>(oc) * kh * kw);
      for (int o = 0; o < oc; ++o) {
        for (int t = 0; t < kh * kw; ++t) {
          s.depthwise_weight[static_cast<size_t>(t) * oc + o] =
              s.weight[static_cast<size_t>(o) * kh * kw + t];
        }
      }
      s.weight = s.depthwise_weight.data();
      validate(n, [&] { check_depthwise_conv2d(p, in_shape, s.filter_shape, out_shape); });
      validate(n, [&] { check_multipliers(s.multipliers.data(), oc, "depthwise_conv2d"); });
      if (!m_.isa.empty()) {
        validate(n, [&] {
          s.packed_depthwise = fast::pack_depthwise_conv2d(p, s.filter_shape, s.weight, m_.isa);
        });
        s.packed = true;
      }
      return;
    }
    s.kind = StepKind::kConv2d;
    ConvParams& p = s.conv;
    p.stride_h = stride[0];
    p.stride_w = stride[1];
    p.dilation_h = dilation[0];
    p.dilation_w = dilation[1];
    p.padding = pad;
    p.groups = groups;
    p.input_zero_point = x.zero_point;
    p.output_zero_point = y.zero_point;
    p.act_min = act_min;
    p.act_max = act_max;
    s.filter_shape = {oc, kh, kw, cg};
    validate(n, [&] { check_conv2d(p, in_shape, s.filter_shape, out_shape); });
    validate(n, [&] { check_multipliers(s.multipliers.data(), oc, "conv2d"); });
    if (!m_.isa.empty()) {
      validate(n, [&] { s.packed_conv = fast::pack_conv2d(p, s.filter_shape, s.weight, m_.isa); });
      s.packed = true;
    }
  }

  void plan_fully_connected(const Obj& n, Step& s) {
    n.allow_only({"op", "name", "inputs", "output", "weight", "bias", "multiplier", "shift",
                  "act_min", "act_max"});
    const int in = s.inputs[0];
    if (m_.dims[in].rank != 1) {
      n.fail("inputs", cat("value '", val(in).name, "' must have shape [F], got ",
                           shape_text(val(in).shape), " (flatten it first)"));
    }
    const int64_t features = m_.dims[in].c;
    const ConstantView& w = constant(n, "weight", DType::kInt8);
    if (w.shape.size() != 2 || w.shape[1] != features || w.shape[0] < 1 || w.shape[0] > kIntMax) {
      n.fail("weight", cat("constant '", w.name, "' must have shape [O, ", features,
                           "] with O >= 1, got ", shape_text(w.shape)));
    }
    if (features > kMaxAccumulationDepth) {
      n.fail("weight", cat("in_features (", features, ") exceeds the accumulation limit ",
                           kMaxAccumulationDepth));
    }
    const int oc = static_cast<int>(w.shape[0]);
    require_output_shape(n, s.output, {oc});
    per_channel(n, s, oc);
    const auto [act_min, act_max] = act_range(n, s.output);
    s.kind = StepKind::kFullyConnected;
    s.weight = w.as<int8_t>();
    FullyConnectedParams& p = s.fc;
    p.input_zero_point = val(in).zero_point;
    p.output_zero_point = val(s.output).zero_point;
    p.act_min = act_min;
    p.act_max = act_max;
    const FullyConnectedShape shape{1, static_cast<int>(features), oc};
    validate(n, [&] { check_fully_connected(p, shape); });
    validate(n, [&] { check_multipliers(s.multipliers.data(), oc, "fully_connected"); });
    if (!m_.isa.empty()) {
      validate(n, [&] { s.packed_fc = fast::pack_fully_connected(shape, s.weight, m_.isa); });
      s.packed = true;
    }
  }

  void plan_add(const Obj& n, Step& s) {
    n.allow_only({"op", "name", "inputs", "output", "left_shift", "input1_multiplier",
                  "input2_multiplier", "output_multiplier", "act_min", "act_max"});
    const ValueInfo& a = val(s.inputs[0]);
    const ValueInfo& b = val(s.inputs[1]);
    if (a.shape != b.shape) {
      n.fail("inputs", cat("values '", a.name, "' ", shape_text(a.shape), " and '", b.name, "' ",
                           shape_text(b.shape), " must have the same shape (no broadcasting)"));
    }
    require_output_shape(n, s.output, a.shape);
    AddParams& p = s.add;
    p.left_shift = static_cast<int>(n.integer("left_shift", 0, 20));
    p.input1_multiplier = n.multiplier_pair(n.get("input1_multiplier"), "input1_multiplier");
    p.input2_multiplier = n.multiplier_pair(n.get("input2_multiplier"), "input2_multiplier");
    p.output_multiplier = n.multiplier_pair(n.get("output_multiplier"), "output_multiplier");
    // The input multipliers s_i / (2 max(s1, s2)) are <= 1/2: below 1 keeps the sum in int32.
    const std::pair<const char*, QuantizedMultiplier> inputs[2] = {
        {"input1_multiplier", p.input1_multiplier}, {"input2_multiplier", p.input2_multiplier}};
    for (const auto& [key, m] : inputs) {
      if (m.shift > 0) {
        n.fail(key, cat("must be < 1 (shift <= 0), got [", m.multiplier, ", ", m.shift, "]"));
      }
    }
    const auto [act_min, act_max] = act_range(n, s.output);
    p.input1_zero_point = a.zero_point;
    p.input2_zero_point = b.zero_point;
    p.output_zero_point = val(s.output).zero_point;
    p.act_min = act_min;
    p.act_max = act_max;
    s.kind = StepKind::kAdd;
    validate(n, [&] { check_add(p); });
  }

  void plan_pool(const Obj& n, Step& s, bool max) {
    n.allow_only({"op", "name", "inputs", "output", "kernel", "stride", "padding"});
    const int in = s.inputs[0];
    require_image(n, in);
    const ValueDims& d = m_.dims[in];
    const std::vector<int> kernel = n.ints("kernel", 2, 1, kIntMax);
    if (int64_t{kernel[0]} * kernel[1] > kMaxPoolWindow) {
      n.fail("kernel", cat("window ", kernel[0], " x ", kernel[1], " exceeds 2^24 taps"));
    }
    const std::vector<int> stride = n.ints("stride", 2, 1, kIntMax);
    const std::vector<int> padding = n.ints("padding", 4, 0, kIntMax);
    PoolParams& p = s.pool;
    p.filter_h = kernel[0];
    p.filter_w = kernel[1];
    p.stride_h = stride[0];
    p.stride_w = stride[1];
    p.padding = {padding[0], padding[1], padding[2], padding[3]};
    const int oh = window(n, "kernel", d.h, p.filter_h, p.stride_h, 1, p.padding.top,
                          p.padding.bottom, "h", max ? "max_pool2d" : "average_pool2d");
    const int ow = window(n, "kernel", d.w, p.filter_w, p.stride_w, 1, p.padding.left,
                          p.padding.right, "w", max ? "max_pool2d" : "average_pool2d");
    // Every window must hold a tap of the image (a window in the padding has no value).
    if (p.padding.top >= p.filter_h || p.padding.left >= p.filter_w ||
        int64_t{oh - 1} * p.stride_h - p.padding.top >= d.h ||
        int64_t{ow - 1} * p.stride_w - p.padding.left >= d.w) {
      n.fail("padding", cat("[", p.padding.top, ", ", p.padding.left, ", ", p.padding.bottom, ", ",
                            p.padding.right, "] puts a whole ", p.filter_h, " x ", p.filter_w,
                            " window in the padding"));
    }
    require_output_shape(n, s.output, {d.c, oh, ow});
    require_same_grid(n, in, s.output);
    // No act_min / act_max: the output's grid is the clamp.
    p.act_min = val(s.output).qmin;
    p.act_max = val(s.output).qmax;
    s.kind = max ? StepKind::kMaxPool2d : StepKind::kAveragePool2d;
    validate(n, [&] {
      check_pool2d(p, {1, d.h, d.w, d.c}, {1, oh, ow, d.c}, max ? "max_pool2d" : "average_pool2d");
    });
  }

  void plan_flatten(const Obj& n, Step& s) {
    n.allow_only({"op", "name", "inputs", "output"});
    const int in = s.inputs[0];
    require_image(n, in);
    require_output_shape(n, s.output, {m_.dims[in].numel});
    require_same_grid(n, in, s.output);
    s.kind = StepKind::kFlatten;
    s.clamp_min = val(s.output).qmin;
    s.clamp_max = val(s.output).qmax;
  }

  void plan_concat(const Obj& n, Step& s) {
    n.allow_only({"op", "name", "inputs", "output", "multipliers", "act_min", "act_max"});
    const ValueDims& first = m_.dims[s.inputs[0]];
    int64_t channels = 0;
    for (int id : s.inputs) {
      require_image(n, id);
      const ValueDims& d = m_.dims[id];
      if (d.h != first.h || d.w != first.w) {
        n.fail("inputs", cat("value '", val(id).name, "' ", shape_text(val(id).shape),
                             " must have the same H and W as '", val(s.inputs[0]).name, "' ",
                             shape_text(val(s.inputs[0]).shape)));
      }
      channels += d.c;
    }
    require_output_shape(n, s.output, {channels, first.h, first.w});
    const json& ms = n.get("multipliers");
    if (!ms.is_array() || ms.size() != s.inputs.size()) {
      n.fail("multipliers", cat("must be an array of ", s.inputs.size(),
                                " [multiplier, shift] pairs (one per input), got ", brief(ms)));
    }
    const auto [act_min, act_max] = act_range(n, s.output);
    const int32_t zp_out = val(s.output).zero_point;
    for (size_t i = 0; i < s.inputs.size(); ++i) {
      const QuantizedMultiplier m = n.multiplier_pair(ms[i], "multipliers", cat("element ", i));
      const int32_t zp = val(s.inputs[i]).zero_point;
      std::array<int8_t, 256> table{};
      for (int q = -128; q <= 127; ++q) {
        table[static_cast<size_t>(q + 128)] =
            requantize_output(q - zp, m, zp_out, act_min, act_max);
      }
      s.concat_tables.push_back(table);
    }
    s.kind = StepKind::kConcat;
  }

  ModelImpl& m_;
  const std::string& src_;
};

}  // namespace

void select_kernels(ModelImpl& impl, const std::string& name) {
  const std::vector<std::string> isas = fast::available_isas();
  if (name == "reference") {
    impl.table = &reference::kernels();
    impl.kernels_name = "reference";
    impl.isa.clear();
    return;
  }
  std::string isa;
  if (name == "fast") {
    isa = fast::active_isa();  // throws for a bad EDGEQAT_RUNTIME_ISA
  } else if (name.rfind("fast/", 0) == 0 &&
             std::find(isas.begin(), isas.end(), name.substr(5)) != isas.end()) {
    isa = name.substr(5);
  } else {
    std::string known = "reference, fast";
    for (const std::string& i : isas) known += ", fast/" + i;
    throw std::invalid_argument("edgeqat::runtime::Model: unknown kernels '" + name +
                                "' (known here: " + known + ")");
  }
  impl.table = &fast::kernels_for_isa(isa);
  impl.kernels_name = "fast/" + isa;
  impl.isa = isa;
}

std::unique_ptr<ModelImpl> load_model(ModelFile file, const ModelOptions& options) {
  if (options.num_threads < 1) {
    throw std::invalid_argument("edgeqat::runtime::Model: num_threads must be >= 1, got " +
                                std::to_string(options.num_threads));
  }
  auto impl = std::make_unique<ModelImpl>();
  impl->file = std::move(file);
  impl->source = impl->file.source();
  select_kernels(*impl, options.kernels);  // before planning: packing depends on the ISA
  if (options.max_batch_chunk < 0) {
    throw std::invalid_argument("edgeqat::runtime::Model: max_batch_chunk must be >= 0, got " +
                                std::to_string(options.max_batch_chunk));
  }
  impl->ctx.num_threads = options.num_threads;
  Loader(*impl).run();
  if (options.max_batch_chunk > 0) {
    impl->max_chunk = std::min(impl->max_chunk, options.max_batch_chunk);
  }
  return impl;
}

}  // namespace detail
}  // namespace edgeqat::runtime
