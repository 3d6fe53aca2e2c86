// QATScheduler and attach_schedule: the C++ twins of python/edgeqat/schedule.py.
// The QATSchedule value and its validation live with the other config values
// in quantizer.cpp.
#include "edgeqat/nn/schedule.h"

#include <c10/util/Exception.h>

#include "edgeqat/nn/controls.h"

namespace edgeqat::nn {

torch::nn::Module& QATSchedulerImpl::checked_deref(torch::nn::Module* model) {
  TORCH_CHECK_VALUE(model != nullptr,
                    "QATScheduler: model must be a module, got an empty holder (nullptr)");
  return *model;
}

QATSchedulerImpl::QATSchedulerImpl(torch::nn::Module& model, const QATSchedule& schedule)
    : torch::nn::Module("edgeqat::nn::QATScheduler"),
      schedule_(schedule),
      model_(&model),
      model_owner_(model.weak_from_this()) {
  // weak_from_this() is empty for a model not owned by a shared_ptr (a plain
  // `NetImpl net;`, or a model still being constructed): then the pointer
  // cannot be checked, and the model must outlive the scheduler (it does when
  // the scheduler is its submodule).
  model_shared_ = !model_owner_.expired();
  step = register_buffer("step", torch::zeros({}, torch::kLong));
}

torch::nn::Module& QATSchedulerImpl::model() const {
  TORCH_CHECK(!model_shared_ || !model_owner_.expired(),
              "QATScheduler: the model it was built for no longer exists");
  return *model_;
}

int64_t QATSchedulerImpl::current_step() const { return step.item<int64_t>(); }

void QATSchedulerImpl::forward() {
  torch::nn::Module& model = this->model();
  if (!model.is_training()) return;
  const int64_t now = current_step();
  // Python's order (_PHASES): freeze_bn, freeze_observers, learn_ranges.
  if (schedule_.freeze_bn_step() == now) freeze_bn(model);
  if (schedule_.freeze_observers_step() == now) freeze_observers(model);
  if (schedule_.learn_ranges_step() == now) learn_ranges(model);
  step.fill_(now + 1);
}

std::shared_ptr<torch::nn::Module> QATSchedulerImpl::clone(
    const std::optional<torch::Device>& /*device*/) const {
  TORCH_CHECK(false,
              "QATScheduler cannot be cloned: the copy would still switch the original model; "
              "attach a new scheduler to the copy (attach_schedule) and copy `step` into it");
  return nullptr;
}

void QATSchedulerImpl::pretty_print(std::ostream& stream) const {
  stream << "edgeqat::nn::QATScheduler(" << schedule_ << ", step=";
  if (step.defined()) {
    stream << current_step();
  } else {
    stream << "?";
  }
  stream << ")";
}

QATScheduler attach_schedule(torch::nn::Module& model, const QATSchedule& schedule) {
  TORCH_CHECK_VALUE(!model.named_children().contains("qat_schedule"),
                    "attach_schedule: the model already has a qat_schedule");
  return QATScheduler(model.register_module("qat_schedule", QATScheduler(model, schedule)));
}

}  // namespace edgeqat::nn
