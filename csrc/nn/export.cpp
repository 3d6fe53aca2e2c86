// edgeqat::export_int8: walks a torch::nn::Sequential of edgeqat::nn blocks and feeds the shared
// runtime::GraphBuilder (every numeric step is there). The Python twin is
// python/edgeqat/export.py: same rules, same messages where the two meet.
#include "edgeqat/nn/export.h"

#include <c10/util/Exception.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "edgeqat/nn/modules.h"
#include "edgeqat/nn/quantizer.h"
#include "edgeqat/nn/schedule.h"
#include "edgeqat/version.h"

namespace edgeqat {

namespace {

namespace rt = edgeqat::runtime;
using torch::nn::Module;

// "edgeqat::nn::ConvBn2d", "torch::nn::Sigmoid": the module's class without the Impl suffix.
std::string type_name(const Module& m) {
  std::string n = m.name();
  const std::string impl = "Impl";
  if (n.size() > impl.size() && n.compare(n.size() - impl.size(), impl.size(), impl) == 0) {
    n.resize(n.size() - impl.size());
  }
  return n;
}

std::string describe(const std::string& path, const Module& m) {
  return "module '" + path + "' (" + type_name(m) + ")";
}

// Raised for a module; becomes the c10::ValueError "cannot export module ...: why".
struct ExportFailure {
  std::string path;
  std::string type;
  std::string why;
};

[[noreturn]] void fail(const std::string& path, const Module& m, std::string why) {
  throw ExportFailure{path, type_name(m), std::move(why)};
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

int to_int(int64_t v, const std::string& path, const Module& m, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max()) {
    fail(path, m, std::string(what) + " out of range: " + std::to_string(v));
  }
  return static_cast<int>(v);
}

std::array<int, 2> pair_of(const torch::ExpandingArray<2>& a, const std::string& path,
                           const Module& m, const char* what) {
  return {to_int((*a)[0], path, m, what), to_int((*a)[1], path, m, what)};
}

rt::Activation to_runtime(nn::Activation a) {
  switch (a) {
    case nn::Activation::ReLU:
      return rt::Activation::kRelu;
    case nn::Activation::ReLU6:
      return rt::Activation::kRelu6;
    case nn::Activation::Identity:
      break;
  }
  return rt::Activation::kNone;
}

// A tensor as a contiguous float32 CPU tensor (a copy when it is not one already).
torch::Tensor f32(const torch::Tensor& t) {
  return t.detach().to(torch::kCPU, torch::kFloat).contiguous();
}

std::vector<float> to_vector(const torch::Tensor& t) {
  const auto c = f32(t).reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// As Python's _check_exportable: the quantizer must be on and have a range.
void check_exportable(const nn::FakeQuantizer& q, const std::string& path, const Module& m,
                      const std::string& which) {
  if (q->mode() == nn::Mode::Off) {
    fail(path, m, "its " + which + "quantizer is turned off (Mode::Off)");
  }
  if (!q->has_range()) {
    fail(path, m, "its " + which + "quantizer has no range yet (train, or calibrate, first)");
  }
}

// An activation quantizer's range as used in forward (learned in Learn mode) and its grid.
rt::QuantRange act_range(const nn::FakeQuantizer& q, const std::string& path, const Module& m) {
  check_exportable(q, path, m, "");
  if (q->spec().per_channel()) fail(path, m, "per-channel activation ranges");
  const auto [lo, hi] = q->quant_range();
  if (lo.numel() != 1 || hi.numel() != 1) {
    fail(path, m,
         "its quantizer has " + std::to_string(lo.numel()) + " ranges; an activation has one");
  }
  rt::QuantRange r;
  r.min = f32(lo).item<float>();
  r.max = f32(hi).item<float>();
  r.num_bits = static_cast<int>(q->spec().num_bits());
  r.narrow_range = q->spec().narrow_range();
  return r;
}

// PyTorch's pooled size (pooling_output_shape), for ceil_mode.
int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t d, bool ceil) {
  const int64_t span = in + 2 * pad - d * (k - 1) - 1 + (ceil ? s - 1 : 0);
  int64_t out = (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;
  if (ceil && (out - 1) * s >= in + pad) --out;
  return out;
}

class Exporter {
 public:
  explicit Exporter(std::vector<int64_t> input_shape)
      : b_("edgeqat " EDGEQAT_VERSION), input_shape_(std::move(input_shape)) {}

  rt::GraphBuilder run(const torch::nn::Sequential& model) {
    walk_sequential(*model, "");
    if (pending_) fail_pending("the end of the model");
    if (!value_) {
      throw ExportFailure{"", type_name(*model),
                          "the model has no ActQuant quantizing its input (it must start with "
                          "one)"};
    }
    b_.mark_output(*value_);
    return std::move(b_);
  }

 private:
  // A conv / linear layer waiting for the ActQuant that gives its output grid.
  struct Pending {
    std::shared_ptr<Module> module;
    std::string path;
    std::string input;
  };

  void walk_sequential(const torch::nn::SequentialImpl& seq, const std::string& prefix) {
    for (const auto& item : seq.named_children()) {
      const std::string path = prefix.empty() ? item.key() : prefix + "." + item.key();
      visit(item.value(), path);
    }
  }

  // The current value, for a module that reads it.
  const std::string& input_of(const std::string& path, const Module& m) const {
    if (!value_) {
      fail(path, m,
           "its input is not an int8 tensor (the model must start with an ActQuant quantizing "
           "its input)");
    }
    return *value_;
  }

  [[noreturn]] void fail_pending(const std::string& next) const {
    fail(pending_->path, *pending_->module,
         "its output must go to an ActQuant (the int8 layer's output grid and clamp), got " + next);
  }

  // Runs a builder call; its std::invalid_argument becomes an error naming the module.
  template <class F>
  auto build(const std::string& path, const Module& m, F&& f) {
    try {
      return f();
    } catch (const std::invalid_argument& e) {
      fail(path, m, e.what());
    }
  }

  // A module's own errors (c10::Error from a quantizer, say) get its path too.
  void visit(const std::shared_ptr<Module>& child, const std::string& path) {
    try {
      dispatch(child, path);
    } catch (const c10::Error& e) {
      fail(path, *child, e.what_without_backtrace());
    }
  }

  void dispatch(const std::shared_ptr<Module>& child, const std::string& path) {
    const Module& m = *child;
    // A training-time schedule (attach_schedule): nothing in the int8 model, as Python's export.
    if (child->as<nn::QATSchedulerImpl>()) return;
    const bool after_pool = after_pool_;
    after_pool_ = false;
    if (pending_ && !child->as<nn::ActQuantImpl>()) fail_pending(describe(path, m));

    if (auto* aq = child->as<nn::ActQuantImpl>()) {
      act_quant(*aq, path);
    } else if (child->as<nn::ConvBn2dImpl>() || child->as<nn::QuantConv2dImpl>() ||
               child->as<nn::QuantLinearImpl>()) {
      pending_ = Pending{child, path, input_of(path, m)};
      value_.reset();
    } else if (auto* res = child->as<nn::ResidualImpl>()) {
      residual(*res, path);
    } else if (auto* seq = child->as<torch::nn::SequentialImpl>()) {
      walk_sequential(*seq, path);
    } else if (auto* mp = child->as<torch::nn::MaxPool2dImpl>()) {
      max_pool(*mp, path);
    } else if (auto* ap = child->as<torch::nn::AvgPool2dImpl>()) {
      avg_pool(*ap, path);
    } else if (auto* aap = child->as<torch::nn::AdaptiveAvgPool2dImpl>()) {
      adaptive_avg_pool(*aap, path);
    } else if (auto* shared = child->as<nn::SharedActQuantImpl>()) {
      shared_act_quant(*shared, path, after_pool);
    } else if (auto* fl = child->as<torch::nn::FlattenImpl>()) {
      flatten(*fl, path);
    } else if (child->as<torch::nn::DropoutImpl>() || child->as<torch::nn::IdentityImpl>()) {
      input_of(path, m);  // nothing in the int8 model (eval mode)
    } else {
      fail(path, m, "the int8 model has no such op");
    }
  }

  void act_quant(const nn::ActQuantImpl& aq, const std::string& path) {
    const rt::QuantRange range = act_range(aq.quantizer, path, aq);
    if (pending_) {
      Pending p = std::move(*pending_);
      pending_.reset();
      value_ = weighted(p, aq, range);
    } else if (!started_) {
      if (aq.activation != nn::Activation::Identity) {
        fail(path, aq, "an input quantizer with an activation");
      }
      value_ = build(path, aq, [&] { return b_.add_input("input", input_shape_, range); });
    } else {
      fail(path, aq,
           "an ActQuant after an op the int8 model does not quantize (only the input, ConvBn2d, "
           "QuantConv2d and QuantLinear are followed by one)");
    }
    started_ = true;
  }

  // The layer's own activation (ConvBn2d) or its ActQuant's, as Python's _merge_activation.
  static nn::Activation merge_activation(const Pending& p, nn::Activation own,
                                         const nn::ActQuantImpl& aq) {
    if (own != nn::Activation::Identity && aq.activation != nn::Activation::Identity &&
        own != aq.activation) {
      fail(p.path, *p.module,
           std::string("two activations (") + nn::activation_name(own) + " and " +
               nn::activation_name(aq.activation) + ")");
    }
    return own != nn::Activation::Identity ? own : aq.activation;
  }

  // Conv geometry of ConvBn2d / QuantConv2d options into the builder's layer.
  template <class Options>
  void conv_geometry(const Options& o, const Pending& p, rt::ConvLayer& layer) {
    const Module& m = *p.module;
    layer.stride = pair_of(o.stride(), p.path, m, "stride");
    layer.dilation = pair_of(o.dilation(), p.path, m, "dilation");
    layer.groups = to_int(o.groups(), p.path, m, "groups");
    if (const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding())) {
      const auto hw = pair_of(*pad, p.path, m, "padding");
      layer.padding = {hw[0], hw[1], hw[0], hw[1]};
    } else if (std::holds_alternative<torch::enumtype::kSame>(o.padding())) {
      // PyTorch's 'same' pads dilation * (kernel - 1) in all, the odd pixel at the end.
      std::array<int, 2> begin{}, end{};
      for (size_t i = 0; i < 2; ++i) {
        const int total =
            layer.dilation[i] * (to_int((*o.kernel_size())[i], p.path, m, "kernel_size") - 1);
        begin[i] = total / 2;
        end[i] = total - total / 2;
      }
      layer.padding = {begin[0], begin[1], end[0], end[1]};
    } else {
      layer.padding = {0, 0, 0, 0};  // 'valid'
    }
  }

  // As Python's check_bias_link: a layer that simulates the int32 bias must be linked to a
  // quantizer with its input's scale, or training saw another bias than the int8 model's.
  void check_bias_link(const Pending& p, const nn::ActQuantImpl& link) {
    const Module& m = *p.module;
    const rt::QuantRange range = act_range(link.quantizer, p.path, m);
    const float scale = build(p.path, m, [&] { return rt::int8_grid(range, p.path); }).scale;
    const float expected = b_.grid_of(p.input).scale;
    if (scale != expected) {
      std::ostringstream os;
      os.precision(std::numeric_limits<float>::max_digits10);
      os << "its bias is simulated at the scale of its linked input quantizer (" << scale
         << "), but its input's int8 scale is " << expected
         << ": link the ActQuant of its input (set_input_quantizer), or set "
            "QConfig().quantize_bias(false)";
      fail(p.path, m, os.str());
    }
  }

  std::string weighted(const Pending& p, const nn::ActQuantImpl& aq,
                       const rt::QuantRange& out_range) {
    const Module& m = *p.module;
    torch::Tensor weight, bias;
    const nn::FakeQuantizer* wq = nullptr;
    nn::Activation own = nn::Activation::Identity;
    nn::ActQuant link{nullptr};
    bool quantize_bias = false;
    if (auto* cb = p.module->as<nn::ConvBn2dImpl>()) {
      std::tie(weight, bias) = cb->folded_weight_and_bias();
      wq = &cb->weight_quant;
      own = cb->options.activation();
      link = cb->input_quantizer();
      quantize_bias = cb->options.config().quantize_bias();
    } else if (auto* qc = p.module->as<nn::QuantConv2dImpl>()) {
      weight = qc->weight;
      bias = qc->bias;
      wq = &qc->weight_quant;
      link = qc->input_quantizer();
      quantize_bias = qc->options.config().quantize_bias();
    } else {
      auto* ql = p.module->as<nn::QuantLinearImpl>();
      weight = ql->weight;
      bias = ql->bias;
      wq = &ql->weight_quant;
      link = ql->input_quantizer();
      quantize_bias = ql->options.config().quantize_bias();
    }
    if (!link.is_empty() && quantize_bias && bias.defined()) check_bias_link(p, *link);
    const nn::Activation activation = merge_activation(p, own, aq);
    check_exportable(*wq, p.path, m, "weight ");
    const auto [wlo, whi] = (*wq)->quant_range();
    // Contiguous float32 CPU copies, alive while the builder reads them.
    const torch::Tensor w = f32(weight);
    const torch::Tensor b = bias.defined() ? f32(bias) : torch::Tensor();
    const auto& spec = (*wq)->spec();

    if (p.module->as<nn::QuantLinearImpl>()) {
      if (w.dim() != 2) fail(p.path, m, "weight must be 2-D, got " + shape_str(w.sizes().vec()));
      rt::LinearLayer layer;
      layer.name = p.path;
      layer.weight_shape = {w.size(0), w.size(1)};
      layer.weight = w.data_ptr<float>();
      layer.bias = b.defined() ? b.data_ptr<float>() : nullptr;
      layer.weight_min = to_vector(wlo);
      layer.weight_max = to_vector(whi);
      layer.weight_bits = static_cast<int>(spec.num_bits());
      layer.weight_narrow_range = spec.narrow_range();
      layer.activation = to_runtime(activation);
      return build(p.path, m, [&] { return b_.add_fully_connected(layer, p.input, out_range); });
    }
    if (w.dim() != 4) fail(p.path, m, "weight must be 4-D, got " + shape_str(w.sizes().vec()));
    rt::ConvLayer layer;
    layer.name = p.path;
    layer.weight_shape = {w.size(0), w.size(1), w.size(2), w.size(3)};
    layer.weight = w.data_ptr<float>();
    layer.bias = b.defined() ? b.data_ptr<float>() : nullptr;
    layer.weight_min = to_vector(wlo);
    layer.weight_max = to_vector(whi);
    layer.weight_bits = static_cast<int>(spec.num_bits());
    layer.weight_narrow_range = spec.narrow_range();
    layer.activation = to_runtime(activation);
    if (auto* cb = p.module->as<nn::ConvBn2dImpl>()) {
      conv_geometry(cb->options, p, layer);
    } else {
      conv_geometry(p.module->as<nn::QuantConv2dImpl>()->options, p, layer);
    }
    return build(p.path, m, [&] { return b_.add_conv2d(layer, p.input, out_range); });
  }

  // Walks a branch of a residual block from `start`; returns its output value.
  std::string branch(const torch::nn::Sequential& seq, const std::string& path,
                     const std::string& start) {
    value_ = start;
    after_pool_ = false;
    walk_sequential(*seq, path);
    if (pending_) fail_pending("the end of '" + path + "'");
    after_pool_ = false;
    return *value_;
  }

  void residual(const nn::ResidualImpl& res, const std::string& path) {
    const std::string x = input_of(path, res);
    const std::string body = branch(res.body, path + ".body", x);
    const std::string shortcut = res.shortcut.is_empty() || res.shortcut->size() == 0
                                     ? x
                                     : branch(res.shortcut, path + ".shortcut", x);
    const std::string add_path = path + ".add";
    const nn::QuantAddImpl& add = *res.add;
    const nn::ActQuantImpl& out_quant = *add.out_quant;
    const rt::QuantRange range = act_range(out_quant.quantizer, add_path, add);
    const nn::Activation activation = out_quant.activation != nn::Activation::Identity
                                          ? out_quant.activation
                                          : add.options.activation();
    if (b_.shape_of(body) != b_.shape_of(shortcut)) {
      fail(add_path, add,
           "the int8 add has no broadcasting; inputs differ in shape (body " +
               shape_str(b_.shape_of(body)) + ", shortcut " + shape_str(b_.shape_of(shortcut)) +
               ")");
    }
    value_ = build(add_path, add, [&] {
      return b_.add_add(add_path, body, shortcut, to_runtime(activation), range);
    });
  }

  // Pooling window geometry shared by max / average pooling.
  struct Window {
    std::array<int, 2> kernel, stride;
    std::array<int, 4> padding;
  };

  template <class Options>
  Window window(const Options& o, std::array<int64_t, 2> dilation, const std::string& path,
                const Module& m, const std::string& x) {
    Window w;
    w.kernel = pair_of(o.kernel_size(), path, m, "kernel_size");
    w.stride = pair_of(o.stride(), path, m, "stride");
    const auto pad = pair_of(o.padding(), path, m, "padding");
    w.padding = {pad[0], pad[1], pad[0], pad[1]};
    if (o.ceil_mode()) {
      // PyTorch's ceil_mode lets the last window hang over the bottom / right edge; extra
      // padding there gives the same output size, and the int8 pools skip padding taps as
      // PyTorch skips the overhang (max: never wins; average: not counted), as Python's export.
      const auto& shape = b_.shape_of(x);
      if (shape.size() != 3) fail(path, m, "expects an image [C, H, W], got " + shape_str(shape));
      for (size_t i = 0; i < 2; ++i) {
        const int64_t in = shape[i + 1], k = w.kernel[i], s = w.stride[i], p = pad[i];
        const int64_t out = pooled_size(in, k, s, p, dilation[i], true);
        const int64_t extra = std::max<int64_t>(0, (out - 1) * s + k - (in + 2 * p));
        if ((in + 2 * p + extra - k) / s + 1 != out) {
          fail(path, m,
               "ceil_mode=true: cannot express the pooled size " + std::to_string(out) + " from " +
                   std::to_string(in) + " with padding");
        }
        w.padding[i + 2] = static_cast<int>(p + extra);  // {top, left, bottom, right}
      }
    }
    return w;
  }

  void max_pool(const torch::nn::MaxPool2dImpl& mp, const std::string& path) {
    const std::string x = input_of(path, mp);
    const auto& o = mp.options;
    if ((*o.dilation())[0] != 1 || (*o.dilation())[1] != 1) {
      fail(path, mp, "max pooling with dilation");
    }
    const Window w = window(o, {1, 1}, path, mp, x);
    value_ =
        build(path, mp, [&] { return b_.add_max_pool2d(path, x, w.kernel, w.stride, w.padding); });
    after_pool_ = true;
  }

  void avg_pool(const torch::nn::AvgPool2dImpl& ap, const std::string& path) {
    const std::string x = input_of(path, ap);
    const auto& o = ap.options;
    if (o.divisor_override().has_value()) fail(path, ap, "divisor_override");
    if (o.count_include_pad() && ((*o.padding())[0] != 0 || (*o.padding())[1] != 0)) {
      fail(path, ap,
           "count_include_pad=true with padding: the int8 average counts only taps inside the "
           "image (use count_include_pad(false))");
    }
    const Window w = window(o, {1, 1}, path, ap, x);
    value_ = build(path, ap,
                   [&] { return b_.add_average_pool2d(path, x, w.kernel, w.stride, w.padding); });
    after_pool_ = true;
  }

  void adaptive_avg_pool(const torch::nn::AdaptiveAvgPool2dImpl& ap, const std::string& path) {
    const std::string x = input_of(path, ap);
    const auto& shape = b_.shape_of(x);
    if (shape.size() != 3) fail(path, ap, "expects an image [C, H, W], got " + shape_str(shape));
    std::array<int, 2> kernel{};
    for (size_t i = 0; i < 2; ++i) {
      const std::optional<int64_t> out = (*ap.options.output_size())[i];
      const int64_t size = shape[i + 1];
      const int64_t o = out.value_or(size);
      if (o <= 0 || size % o != 0) {
        fail(path, ap,
             "adaptive pooling " + std::to_string(shape[1]) + "x" + std::to_string(shape[2]) +
                 " -> output size " + std::to_string(o) + " is not uniform");
      }
      kernel[i] = to_int(size / o, path, ap, "kernel");
    }
    value_ = build(path, ap,
                   [&] { return b_.add_average_pool2d(path, x, kernel, kernel, {0, 0, 0, 0}); });
    after_pool_ = true;
  }

  // After a pool: the pool's output is already on its input's grid; the SharedActQuant's source
  // must give that grid (otherwise the float model would round to another one).
  void shared_act_quant(const nn::SharedActQuantImpl& s, const std::string& path, bool after_pool) {
    const std::string x = input_of(path, s);
    if (!after_pool) {
      fail(path, s,
           "a SharedActQuant must come right after a pooling module (its output keeps its "
           "input's grid)");
    }
    const rt::QuantRange range = act_range(s.source->quantizer, path, s);
    const rt::Int8Grid source = build(path, s, [&] { return rt::int8_grid(range, path); });
    const rt::Int8Grid in = b_.grid_of(x);
    if (source.scale != in.scale || source.zero_point != in.zero_point || source.qmin != in.qmin ||
        source.qmax != in.qmax) {
      std::ostringstream os;
      os.precision(std::numeric_limits<float>::max_digits10);
      os << "its source's grid (scale " << source.scale << ", zero point " << source.zero_point
         << ") is not the pooled value's (scale " << in.scale << ", zero point " << in.zero_point
         << "): share the quantizer of the tensor that was pooled";
      fail(path, s, os.str());
    }
  }

  void flatten(const torch::nn::FlattenImpl& fl, const std::string& path) {
    const std::string x = input_of(path, fl);
    const auto& shape = b_.shape_of(x);
    const int64_t rank = static_cast<int64_t>(shape.size()) + 1;  // with the batch
    const int64_t end =
        fl.options.end_dim() < 0 ? fl.options.end_dim() + rank : fl.options.end_dim();
    if (fl.options.start_dim() != 1 || end != rank - 1) {
      fail(path, fl,
           "only flatten to [N, C*H*W] exists (start_dim 1, end_dim -1), got start_dim " +
               std::to_string(fl.options.start_dim()) + ", end_dim " +
               std::to_string(fl.options.end_dim()));
    }
    if (shape.size() == 1) return;  // [N, F] stays [N, F]
    value_ = build(path, fl, [&] { return b_.add_flatten(path, x); });
  }

  rt::GraphBuilder b_;
  std::vector<int64_t> input_shape_;
  std::optional<std::string> value_;  // the current int8 value
  std::optional<Pending> pending_;
  bool started_ = false;     // the input is defined
  bool after_pool_ = false;  // the previous module was a pool
};

}  // namespace

runtime::GraphBuilder export_int8_graph(const torch::nn::Sequential& model,
                                        const torch::Tensor& example_input) {
  TORCH_CHECK_VALUE(!model.is_empty(),
                    "edgeqat::export_int8: model is an empty Sequential holder (nullptr)");
  TORCH_CHECK_VALUE(
      example_input.defined() && (example_input.dim() == 4 || example_input.dim() == 2),
      "edgeqat::export_int8: example_input must be [N, C, H, W] or [N, F], got ",
      example_input.defined() ? example_input.sizes() : c10::IntArrayRef{});
  TORCH_CHECK_VALUE(example_input.is_floating_point(),
                    "edgeqat::export_int8: example_input must be a float tensor, got ",
                    example_input.scalar_type());
  const auto sizes = example_input.sizes();
  std::vector<int64_t> shape(sizes.begin() + 1, sizes.end());
  try {
    return Exporter(std::move(shape)).run(model);
  } catch (const ExportFailure& e) {
    if (e.path.empty()) {
      TORCH_CHECK_VALUE(false, "edgeqat::export_int8: cannot export the ", e.type, ": ", e.why);
    }
    TORCH_CHECK_VALUE(false, "edgeqat::export_int8: cannot export module '", e.path, "' (", e.type,
                      "): ", e.why);
  }
}

void export_int8(const torch::nn::Sequential& model, const torch::Tensor& example_input,
                 const std::string& path) {
  export_int8_graph(model, example_input).save(path);
}

}  // namespace edgeqat
