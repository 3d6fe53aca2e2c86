// Export of a LibTorch QAT model built from edgeqat::nn blocks to the integer-only int8 model
// file (docs/int8-format.md): the C++ twin of Python's edgeqat.export. This file only walks the
// modules; every numeric step (nudging the ranges, quantizing the folded weights, int32 biases,
// fixed-point multipliers, ReLU / ReLU6 clamps) is the shared runtime::GraphBuilder
// (edgeqat/runtime/builder.h), so both exporters write the same numbers for the same model.
//
// The model is a torch::nn::Sequential walked child by child (nested Sequentials inline), with
// the int8 value the float model holds at each point:
//   - ActQuant first: the graph input "input", with the example's per-sample shape;
//   - ConvBn2d / QuantConv2d / QuantLinear, each followed by the ActQuant of its output: one
//     conv2d / fully_connected node (ConvBn2d with its BN folded, running statistics), whose
//     output grid is that ActQuant's and whose clamp is the layer's activation (ConvBn2d) or the
//     ActQuant's;
//   - Residual: body and shortcut (identity when empty) from the same value, then an add node
//     with the add's activation and output range;
//   - torch::nn::MaxPool2d, AvgPool2d (count_include_pad only without padding; no
//     divisor_override; ceil_mode only where it changes nothing), AdaptiveAvgPool2d (uniform
//     windows), optionally followed by a SharedActQuant on the same grid (the pool keeps its
//     input's scale and zero point); torch::nn::Flatten; torch::nn::Dropout / Identity (nothing).
// Node names are the module paths ("1", "5.body.2", "5.add"). Ranges are the quantizers' own
// (learned in Learn mode), so the int8 model computes the model's eval-mode forward (BN frozen
// or in eval) to within an output step or so.
//
// Errors are c10::ValueError whose message names the module path and its type, e.g.
//   edgeqat::export_int8: cannot export module '4' (torch::nn::Sigmoid): the int8 model has no
//   such op
// for an unsupported module, a quantizer turned off or without a range, a layer not followed by
// an ActQuant, or anything the builder rejects (its message follows the module's).
//
//   torch::nn::Sequential model(qnn::ActQuant(), qnn::ConvBn2d(...), qnn::ActQuant(), ...);
//   ... train; edgeqat::nn::freeze_bn(model); ...
//   model->eval();
//   edgeqat::export_int8(model, torch::zeros({1, 3, 32, 32}), "model.eq8");
//   auto int8 = edgeqat::runtime::Model::load("model.eq8");
#pragma once

#include <torch/nn/modules/container/sequential.h>
#include <torch/types.h>

#include <string>

#include "edgeqat/runtime/builder.h"

namespace edgeqat {

// Writes the int8 model of `model` (a torch::nn::Sequential of edgeqat::nn blocks) to `path`
// (atomically: an existing file is replaced only by a complete new one). example_input:
// [N, C, H, W] (or [N, F]) float; fixes the per-sample shape (the int8 model runs any batch).
// The model is not modified.
void export_int8(const torch::nn::Sequential& model, const torch::Tensor& example_input,
                 const std::string& path);

// The same graph, not written (for tests / inspection): graph() is the file's header JSON
// without "constants", serialize() / save() write it.
runtime::GraphBuilder export_int8_graph(const torch::nn::Sequential& model,
                                        const torch::Tensor& example_input);

}  // namespace edgeqat
