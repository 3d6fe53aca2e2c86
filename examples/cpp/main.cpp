// Quantization-aware training of a linear layer in plain LibTorch (no Python):
// the input is fake-quantized per tensor and the weight per output channel,
// each with learnable min/max tensors. The layer starts from the float
// solution of a regression task but with ranges far too narrow, so nearly all
// of the loss is clipping error: it can only fall if gradients reach min and
// max. A few SGD steps learn the ranges. Exits non-zero if a range gets no
// gradient or if the loss does not fall.
#include <edgeqat/edgeqat.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <vector>

namespace {

struct QuantLinearImpl : torch::nn::Module {
  QuantLinearImpl(int64_t in_features, int64_t out_features) {
    linear = register_module("linear", torch::nn::Linear(in_features, out_features));
    // Activations: one asymmetric 8-bit range for the whole tensor (0-dim).
    act_min = register_parameter("act_min", torch::tensor(-0.5f));
    act_max = register_parameter("act_max", torch::tensor(0.5f));
    // Weights: one symmetric narrow-range 8-bit range per output channel (dim 0).
    w_min = register_parameter("w_min", torch::full({out_features}, -0.1f));
    w_max = register_parameter("w_max", torch::full({out_features}, 0.1f));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto xq = edgeqat::fake_quant_with_min_max_vars(x, act_min, act_max, /*num_bits=*/8);
    const auto wq = edgeqat::fake_quant_with_min_max_vars_per_channel(
        linear->weight, w_min, w_max, /*axis=*/0, /*num_bits=*/8, /*narrow_range=*/true);
    return torch::nn::functional::linear(xq, wq, linear->bias);
  }

  // After each optimizer step: like TF's QAT recipe, keep 0.0 inside every
  // range (min <= 0 <= max), which also keeps min <= max.
  void keep_zero_in_ranges() {
    torch::NoGradGuard no_grad;
    act_min.clamp_max_(0.0);
    act_max.clamp_min_(0.0);
    w_min.clamp_max_(0.0);
    w_max.clamp_min_(0.0);
  }

  torch::nn::Linear linear{nullptr};
  torch::Tensor act_min, act_max, w_min, w_max;
};
TORCH_MODULE(QuantLinear);

double abs_sum(const torch::Tensor& t) {
  return t.defined() ? t.abs().sum().item<double>() : 0.0;
}

void print_vector(const char* name, const torch::Tensor& t) {
  std::printf("  %s = [", name);
  const auto v = t.detach().contiguous();
  for (int64_t i = 0; i < v.numel(); ++i) {
    std::printf(i ? ", %.4f" : "%.4f", v[i].item<double>());
  }
  std::printf("]\n");
}

}  // namespace

int run() {
  torch::manual_seed(0);
  constexpr int64_t kIn = 16, kOut = 4, kBatch = 256, kSteps = 40;

  // Target: inputs of std 2 and weights of std 1, far outside the initial
  // ranges [-0.5, 0.5] (activations) and [-0.1, 0.1] (weights).
  const auto x = 2.0 * torch::randn({kBatch, kIn});
  const auto w_true = torch::randn({kOut, kIn});
  const auto target = x.matmul(w_true.t());

  // QAT usually starts from a trained float model: start from the exact
  // float solution, so that all the loss comes from quantization.
  QuantLinear model(kIn, kOut);
  {
    torch::NoGradGuard no_grad;
    model->linear->weight.copy_(w_true);
    model->linear->bias.zero_();
  }
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));

  double first_loss = 0.0, last_loss = 0.0;
  bool ranges_got_grad = true;
  for (int64_t step = 0; step < kSteps; ++step) {
    optimizer.zero_grad();
    const auto loss = torch::mse_loss(model->forward(x), target);
    loss.backward();

    // The straight-through estimator sends the clipped part of the gradient
    // to min and max: every range must receive a non-zero gradient here.
    const double g_act_min = abs_sum(model->act_min.grad());
    const double g_act_max = abs_sum(model->act_max.grad());
    const double g_w_min = abs_sum(model->w_min.grad());
    const double g_w_max = abs_sum(model->w_max.grad());
    if (step == 0) {
      std::printf("range gradients at step 0: |act_min| %.6g |act_max| %.6g |w_min| %.6g "
                  "|w_max| %.6g\n",
                  g_act_min, g_act_max, g_w_min, g_w_max);
      for (const double g : {g_act_min, g_act_max, g_w_min, g_w_max}) {
        if (!(g > 0.0) || !std::isfinite(g)) ranges_got_grad = false;
      }
    }

    const double value = loss.item<double>();
    if (step == 0) first_loss = value;
    last_loss = value;
    if (step % 5 == 0 || step == kSteps - 1) {
      std::printf("step %3lld  loss %.6f  act range [%.4f, %.4f]\n",
                  static_cast<long long>(step), value, model->act_min.item<double>(),
                  model->act_max.item<double>());
    }
    optimizer.step();
    model->keep_zero_in_ranges();
  }

  std::printf("learned ranges:\n");
  std::printf("  act = [%.4f, %.4f]\n", model->act_min.item<double>(),
              model->act_max.item<double>());
  print_vector("w_min", model->w_min);
  print_vector("w_max", model->w_max);
  std::printf("loss: first %.6f last %.6f\n", first_loss, last_loss);

  int status = 0;
  if (!ranges_got_grad) {
    std::printf("FAIL: a range (min or max) received no gradient\n");
    status = 1;
  } else {
    std::printf("gradients reached min and max: yes\n");
  }
  if (!(last_loss < 0.5 * first_loss)) {
    std::printf("FAIL: the loss did not fall (first %.6f, last %.6f)\n", first_loss, last_loss);
    status = 1;
  } else {
    std::printf("loss fell: yes\n");
  }
  return status;
}

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 2;
  }
}
