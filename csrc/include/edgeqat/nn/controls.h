// Model-level QAT phase controls: one call switches every FakeQuantizer or
// ConvBn2d in a model (anything reachable through Module::modules()), as
// Python's edgeqat.freeze_bn / freeze_observers / learn_ranges / observe.
//
// A usual schedule (Jacob et al. 2018; Krishnamoorthi 2018): train with
// observing quantizers, freeze_bn after a few epochs, then freeze_observers
// (or learn_ranges) for the last ones. Each works in place and returns the
// model, so calls chain: learn_ranges(freeze_bn(*model)).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace edgeqat::nn {

// Freezes the BN statistics of every ConvBn2d: from now on they train the
// folded inference graph conv(x, fq(W')) + b'.
torch::nn::Module& freeze_bn(torch::nn::Module& model);

// Every FakeQuantizer in Observe mode goes to Frozen: ranges stop moving.
// Other modes are left alone. Throws (naming the quantizers, changing nothing)
// if one of them has observed no data.
torch::nn::Module& freeze_observers(torch::nn::Module& model);

// Every FakeQuantizer in Observe or Frozen mode goes to Learn: its range
// becomes the parameters learned_min / learned_max, starting from the observed
// range (they are ordinary parameters of the model: give them to the
// optimizer). Off quantizers stay off. Throws (naming the quantizers,
// changing nothing) if one of them has observed no data.
torch::nn::Module& learn_ranges(torch::nn::Module& model);

// Every FakeQuantizer that is not Off goes (back) to Observe, continuing from
// the observed state (learned ranges are not copied back).
torch::nn::Module& observe(torch::nn::Module& model);

// The same for module holders: freeze_bn(model) with `MyNet model;`.
template <typename M>
torch::nn::ModuleHolder<M>& freeze_bn(torch::nn::ModuleHolder<M>& model) {
  freeze_bn(*model.ptr());
  return model;
}
template <typename M>
torch::nn::ModuleHolder<M>& freeze_observers(torch::nn::ModuleHolder<M>& model) {
  freeze_observers(*model.ptr());
  return model;
}
template <typename M>
torch::nn::ModuleHolder<M>& learn_ranges(torch::nn::ModuleHolder<M>& model) {
  learn_ranges(*model.ptr());
  return model;
}
template <typename M>
torch::nn::ModuleHolder<M>& observe(torch::nn::ModuleHolder<M>& model) {
  observe(*model.ptr());
  return model;
}

}  // namespace edgeqat::nn
