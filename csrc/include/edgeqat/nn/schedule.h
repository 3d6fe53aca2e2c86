// A QAT phase schedule for LibTorch models: the C++ twin of Python's
// edgeqat.QATScheduler / edgeqat.attach_schedule (python/edgeqat/schedule.py).
//
// A QATScheduler counts the training steps of one model and starts the phases
// of a QATSchedule (edgeqat/nn/config.h) on time, through the model controls
// of edgeqat/nn/controls.h (freeze_bn, freeze_observers, learn_ranges). The
// count is an int64 0-dim buffer named `step`, as in Python, so torch::save /
// torch::load restore it and a resumed run switches phase at the same step.
//
// A C++ model has no prepare step that could put the call into its forward,
// so the training loop (or the model's own forward) calls the scheduler once
// per training step, before the model's forward:
//
//   namespace qnn = edgeqat::nn;
//   Net model;
//   auto schedule = qnn::attach_schedule(
//       model, qnn::QATSchedule().freeze_bn_step(600).learn_ranges_step(800));
//   for (int64_t i = 0; i < steps; ++i) {
//     schedule();                     // step i: runs the phases due now, counts the step
//     opt.zero_grad();
//     loss(model(x), y).backward();
//     opt.step();
//   }
//   torch::save(model, "qat.pt");     // "qat_schedule.step" included
//
// attach_schedule registers the scheduler as the model's submodule
// `qat_schedule` (Python's name), so the model's torch::save carries the
// count; to resume, build the model, attach the same schedule, then
// torch::load. A scheduler built directly, QATScheduler(model, schedule), is
// not part of the model: save it next to the model (torch::save(scheduler, path)).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>

#include "edgeqat/nn/config.h"

namespace edgeqat::nn {

// Counts the training steps of `model` and starts the phases of `schedule`.
// The model is not owned: the scheduler keeps a non-owning pointer (and, when
// the model is owned by a shared_ptr, as any ModuleHolder's is, notices when
// it is gone: using the scheduler then is an error).
//
// forward(), one call per training step: if the model is in training mode
// (model.is_training(); eval-mode calls count nothing, as Python's forward in
// eval mode), each phase whose step equals `step` runs, in the order
// freeze_bn, freeze_observers, learn_ranges, then `step` grows by one. A phase
// that cannot start (freeze_observers before any data was observed) throws
// from the call that reaches its step, naming the quantizers, and the step is
// not counted. `step` is read from the buffer on every call (no host mirror,
// so a buffer written by torch::load or by hand is followed; on CUDA that is
// one host sync per step).
//
// clone() is refused: the copy would still switch the original model.
class QATSchedulerImpl : public torch::nn::Module {
 public:
  QATSchedulerImpl(torch::nn::Module& model, const QATSchedule& schedule);
  template <typename M>
  QATSchedulerImpl(const std::shared_ptr<M>& model, const QATSchedule& schedule)
      : QATSchedulerImpl(checked_deref(model.get()), schedule) {}
  template <typename M>
  QATSchedulerImpl(const torch::nn::ModuleHolder<M>& model, const QATSchedule& schedule)
      : QATSchedulerImpl(checked_deref(model.is_empty() ? nullptr : model.ptr().get()), schedule) {}

  // One training step (see above).
  void forward();

  // The number of training steps counted so far: the step the next forward() starts.
  int64_t current_step() const;
  const QATSchedule& schedule() const { return schedule_; }
  // The model this scheduler switches (an error if it no longer exists).
  torch::nn::Module& model() const;

  std::shared_ptr<torch::nn::Module> clone(
      const std::optional<torch::Device>& device = std::nullopt) const override;
  void pretty_print(std::ostream& stream) const override;

  // int64 0-dim: training steps counted so far.
  torch::Tensor step;

 private:
  static torch::nn::Module& checked_deref(torch::nn::Module* model);

  QATSchedule schedule_;
  torch::nn::Module* model_;
  // Set when the model is owned by a shared_ptr: detects a destroyed model.
  std::weak_ptr<torch::nn::Module> model_owner_;
  bool model_shared_ = false;
};
TORCH_MODULE(QATScheduler);

// Makes `model` follow `schedule`: registers a QATScheduler for it as the
// submodule `qat_schedule` (so torch::save(model) includes
// "qat_schedule.step", as a Python model from prepare_qat has) and returns
// it; call it once per training step, before the model's forward. A model
// that already has a `qat_schedule` is an error. export_int8 skips the
// scheduler. With a QConfig: if (cfg.schedule()) attach_schedule(model, *cfg.schedule()).
QATScheduler attach_schedule(torch::nn::Module& model, const QATSchedule& schedule);
template <typename M>
QATScheduler attach_schedule(torch::nn::ModuleHolder<M>& model, const QATSchedule& schedule) {
  return attach_schedule(*model.ptr(), schedule);
}

}  // namespace edgeqat::nn
