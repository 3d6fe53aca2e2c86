// The small QAT network shared by test_nn.cpp (training, save / load) and the
// edgeqat_nn_parity program (C++ vs Python). Its Python twin is QatNet in
// tests/python/test_cpp_parity.py: same modules, same names, same
// construction order (so the same seed gives the same initial weights), same
// forward. Keep the two in step.
//
//   input_quant  ActQuant                                    [N, 3, 8, 8]
//   stem         ConvBn2d 3->8, 3x3, pad 1, ReLU
//   stem_quant   ActQuant
//   dw           QuantConv2d 8->8, 3x3, stride 2, pad 1, depthwise   [N, 8, 4, 4]
//   dw_quant     ActQuant
//   block        Residual: body = ConvBn2d 8->16 1x1 ReLU6, ActQuant,
//                ConvBn2d 16->8 3x3 pad 1 groups 8, ActQuant; identity
//                shortcut; ReLU fused into the add
//   mean over H, W, pool_quant SharedActQuant (the block's output grid, as
//   average pooling in the int8 model), fc QuantLinear 8->classes, logits_quant ActQuant
// Every layer is linked to the ActQuant of its input (set_input_quantizer: the int8
// model's int32 bias is simulated), as prepare_qat links a Python model.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "edgeqat/edgeqat.h"

namespace edgeqat_test {

namespace qnn = edgeqat::nn;

struct QatNetImpl : torch::nn::Module {
  explicit QatNetImpl(int64_t classes = 4) {
    // One statement per module: function arguments are evaluated in an
    // unspecified order, and the initialisation draws must come in Python's order.
    input_quant = register_module("input_quant", qnn::ActQuant());
    stem = register_module(
        "stem", qnn::ConvBn2d(qnn::ConvBn2dOptions(3, 8, 3).padding(1).activation("relu")));
    stem_quant = register_module("stem_quant", qnn::ActQuant());
    dw = register_module(
        "dw", qnn::QuantConv2d(qnn::QuantConv2dOptions(8, 8, 3).stride(2).padding(1).groups(8)));
    dw_quant = register_module("dw_quant", qnn::ActQuant());
    torch::nn::Sequential body;
    qnn::ConvBn2d expand(qnn::ConvBn2dOptions(8, 16, 1).activation("relu6"));
    qnn::ActQuant expand_quant;
    qnn::ConvBn2d project(qnn::ConvBn2dOptions(16, 8, 3).padding(1).groups(8));
    qnn::ActQuant project_quant;
    body->push_back(expand);
    body->push_back(expand_quant);
    body->push_back(project);
    body->push_back(project_quant);
    block = register_module(
        "block", qnn::Residual(body, nullptr, qnn::ResidualOptions().activation("relu")));
    // Not registered: SharedActQuant has no state, its source is block.add.out_quant.
    pool_quant = qnn::SharedActQuant(block->add->out_quant);
    fc = register_module("fc", qnn::QuantLinear(8, classes));
    logits_quant = register_module("logits_quant", qnn::ActQuant());
    // Each layer's input quantizer (the int32 bias); fc's is the pool's, so the add's.
    stem->set_input_quantizer(input_quant);
    dw->set_input_quantizer(stem_quant);
    expand->set_input_quantizer(dw_quant);
    project->set_input_quantizer(expand_quant);
    fc->set_input_quantizer(pool_quant);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto y = stem_quant(stem(input_quant(x)));
    y = dw_quant(dw(y));
    y = block(y);
    y = pool_quant(y.mean({2, 3}));
    return logits_quant(fc(y));
  }

  qnn::ActQuant input_quant{nullptr}, stem_quant{nullptr}, dw_quant{nullptr}, logits_quant{nullptr};
  qnn::SharedActQuant pool_quant{nullptr};
  qnn::ConvBn2d stem{nullptr};
  qnn::QuantConv2d dw{nullptr};
  qnn::Residual block{nullptr};
  qnn::QuantLinear fc{nullptr};
};
TORCH_MODULE(QatNet);

// A learnable synthetic task: class c is a fixed random 3x8x8 template plus
// noise. Returns (images [n, 3, 8, 8], labels [n]).
inline std::pair<torch::Tensor, torch::Tensor> make_task(const torch::Tensor& templates, int64_t n,
                                                         double noise) {
  const auto labels = torch::randint(templates.size(0), {n}, torch::kLong);
  const auto images = templates.index_select(0, labels) + noise * torch::randn({n, 3, 8, 8});
  return {images, labels};
}

}  // namespace edgeqat_test
