// Tests of the C++ QAT phase schedule (edgeqat::nn::QATSchedule, QATScheduler,
// attach_schedule), the twins of Python's edgeqat.QATSchedule / QATScheduler:
//  - QATSchedule: defaults, validation and messages; QConfig::schedule;
//  - the phases start at their steps (and only in training mode), in
//    Python's order; a phase that cannot start throws and counts nothing;
//  - attach_schedule: the `qat_schedule.step` buffer (Python's name), saved
//    with the model: torch::save / torch::load mid-run resume at the same
//    step and switch phase at the same step, bit for bit;
//  - a standalone scheduler, a destroyed model, clone, export_int8 skipping it.
#include "catch_torch.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "edgeqat/edgeqat.h"
#include "nn_test_model.h"

namespace {

namespace qnn = edgeqat::nn;
using Catch::Contains;
using torch::Tensor;

bool same(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() && a.dtype() == b.dtype() &&
         torch::equal(a, b);
}

std::vector<std::shared_ptr<qnn::FakeQuantizerImpl>> quantizers_of(torch::nn::Module& model) {
  std::vector<std::shared_ptr<qnn::FakeQuantizerImpl>> out;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto q = std::dynamic_pointer_cast<qnn::FakeQuantizerImpl>(m)) out.push_back(q);
  }
  return out;
}

// Every quantizer that is not Off is in `mode`.
bool all_in(torch::nn::Module& model, qnn::Mode mode) {
  for (const auto& q : quantizers_of(model)) {
    if (q->mode() != mode && q->mode() != qnn::Mode::Off) return false;
  }
  return true;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / name).string();
}

struct Batches {
  std::vector<std::pair<Tensor, Tensor>> items;
};

Batches make_batches(int64_t steps, uint64_t seed) {
  torch::manual_seed(seed);
  const auto templates = torch::randn({4, 3, 8, 8});
  Batches b;
  for (int64_t i = 0; i < steps; ++i) b.items.push_back(edgeqat_test::make_task(templates, 8, 1.0));
  return b;
}

float train_step(edgeqat_test::QatNet& net, qnn::QATScheduler& schedule,
                 torch::optim::Optimizer& opt, const std::pair<Tensor, Tensor>& batch) {
  schedule();  // first, as Python's QATScheduler runs first in the forward
  opt.zero_grad();
  const auto loss = torch::nn::functional::cross_entropy(net(batch.first), batch.second);
  loss.backward();
  opt.step();
  return loss.item<float>();
}

}  // namespace

// ---------------------------------------------------------------------------
// QATSchedule
// ---------------------------------------------------------------------------

TEST_CASE("schedule: QATSchedule has Python's defaults, setters, equality, printing, in QConfig",
          "[nn][schedule][config]") {
  const qnn::QATSchedule none;
  CHECK_FALSE(none.freeze_bn_step().has_value());
  CHECK_FALSE(none.freeze_observers_step().has_value());
  CHECK_FALSE(none.learn_ranges_step().has_value());

  const auto s =
      qnn::QATSchedule().freeze_bn_step(20).freeze_observers_step(30).learn_ranges_step(40);
  CHECK(s.freeze_bn_step() == 20);
  CHECK(s.freeze_observers_step() == 30);
  CHECK(s.learn_ranges_step() == 40);
  CHECK(s != none);
  CHECK(qnn::QATSchedule(s).freeze_bn_step(std::nullopt) != s);
  CHECK(qnn::QATSchedule().freeze_bn_step(0).freeze_bn_step() == 0);
  // learn_ranges_step without freeze_observers_step, or the other way round: no ordering.
  CHECK_NOTHROW(qnn::QATSchedule().learn_ranges_step(0).freeze_bn_step(100));
  CHECK_NOTHROW(qnn::QATSchedule().freeze_observers_step(5).learn_ranges_step(std::nullopt));

  std::ostringstream text;
  text << qnn::QATSchedule().freeze_bn_step(2);
  CHECK(text.str() ==
        "QATSchedule(freeze_bn_step=2, freeze_observers_step=nullopt, learn_ranges_step=nullopt)");

  qnn::QConfig cfg;
  CHECK_FALSE(cfg.schedule().has_value());
  cfg.schedule(s);
  REQUIRE(cfg.schedule().has_value());
  CHECK(*cfg.schedule() == s);
  CHECK(cfg != qnn::QConfig());
  CHECK(qnn::QConfig(cfg).schedule(std::nullopt) == qnn::QConfig());
}

TEST_CASE("schedule: QATSchedule rejects bad steps, naming the field and the value",
          "[nn][schedule][config][errors]") {
  CHECK_THROWS_WITH(qnn::QATSchedule().freeze_bn_step(-1),
                    Contains("QATSchedule.freeze_bn_step must be a non-negative int or nullopt, "
                             "got -1"));
  CHECK_THROWS_WITH(qnn::QATSchedule().freeze_observers_step(-3),
                    Contains("QATSchedule.freeze_observers_step must be a non-negative int"));
  CHECK_THROWS_WITH(qnn::QATSchedule().learn_ranges_step(-2),
                    Contains("QATSchedule.learn_ranges_step must be a non-negative int"));
  CHECK_THROWS_AS(qnn::QATSchedule().freeze_bn_step(-1), c10::ValueError);
  // learn_ranges_step after freeze_observers_step, whichever is set last.
  CHECK_THROWS_WITH(qnn::QATSchedule().freeze_observers_step(30).learn_ranges_step(30),
                    Contains("QATSchedule.learn_ranges_step must come after freeze_observers_step "
                             "(or leave one of them nullopt), got learn_ranges_step=30, "
                             "freeze_observers_step=30"));
  CHECK_THROWS_WITH(qnn::QATSchedule().learn_ranges_step(10).freeze_observers_step(20),
                    Contains("got learn_ranges_step=10, freeze_observers_step=20"));
  CHECK_THROWS_AS(qnn::QATSchedule().learn_ranges_step(10).freeze_observers_step(20),
                  c10::ValueError);
  // A failed setter changes nothing.
  auto s = qnn::QATSchedule().freeze_observers_step(5);
  CHECK_THROWS(s.learn_ranges_step(5));
  CHECK_THROWS(s.freeze_observers_step(-1));
  CHECK_FALSE(s.learn_ranges_step().has_value());
  CHECK(s.freeze_observers_step() == 5);
}

// ---------------------------------------------------------------------------
// QATScheduler
// ---------------------------------------------------------------------------

TEST_CASE("schedule: QATScheduler starts each phase at its step, in training mode only",
          "[nn][schedule]") {
  const auto batches = make_batches(8, 31);
  torch::manual_seed(32);
  edgeqat_test::QatNet net;
  auto schedule = qnn::attach_schedule(
      net, qnn::QATSchedule().freeze_bn_step(2).freeze_observers_step(4).learn_ranges_step(6));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01));
  CHECK(schedule->current_step() == 0);
  CHECK(&schedule->model() == net.ptr().get());

  for (int64_t i = 0; i < 8; ++i) {
    INFO("step " << i);
    train_step(net, schedule, opt, batches.items[i]);
    CHECK(schedule->current_step() == i + 1);
    CHECK(schedule->step.item<int64_t>() == i + 1);
    // Phases start at the start of their step, before its forward.
    CHECK(net->stem->is_bn_frozen() == (i >= 2));
    CHECK(net->block->body[0]->as<qnn::ConvBn2dImpl>()->is_bn_frozen() == (i >= 2));
    const qnn::Mode expected = i >= 6   ? qnn::Mode::Learn
                               : i >= 4 ? qnn::Mode::Frozen
                                        : qnn::Mode::Observe;
    CHECK(all_in(*net, expected));
    if (i == 3) {
      // Eval-mode forwards (validation) count nothing and start nothing.
      net->eval();
      schedule();
      net(batches.items[0].first);
      CHECK(schedule->current_step() == 4);
      CHECK(all_in(*net, qnn::Mode::Observe));
      net->train();
    }
  }
  // Phases that were reached stay as they are; nothing runs again.
  qnn::observe(net);
  train_step(net, schedule, opt, batches.items[0]);
  CHECK(all_in(*net, qnn::Mode::Observe));

  std::ostringstream text;
  schedule->pretty_print(text);
  CHECK(text.str() ==
        "edgeqat::nn::QATScheduler(QATSchedule(freeze_bn_step=2, freeze_observers_step=4, "
        "learn_ranges_step=6), step=9)");
}

TEST_CASE("schedule: the phases of one step run in Python's order, a failed phase counts nothing",
          "[nn][schedule][errors]") {
  torch::manual_seed(33);
  edgeqat_test::QatNet net;
  // All at step 0 would be invalid (learn after freeze), so: freeze_bn and
  // learn_ranges together at 1 (freeze_bn first: BN is frozen when the ranges
  // start learning).
  auto schedule =
      qnn::attach_schedule(net, qnn::QATSchedule().freeze_bn_step(1).learn_ranges_step(1));
  schedule();
  net(torch::randn({4, 3, 8, 8}));
  schedule();
  CHECK(net->stem->is_bn_frozen());
  CHECK(all_in(*net, qnn::Mode::Learn));

  // freeze_observers before anything was observed: the step that reaches it
  // throws, naming the quantizers; the count stays, so the next call retries.
  torch::manual_seed(34);
  edgeqat_test::QatNet fresh;
  auto early =
      qnn::attach_schedule(fresh, qnn::QATSchedule().freeze_bn_step(0).freeze_observers_step(0));
  CHECK_THROWS_WITH(early(), Contains("freeze_observers: these quantizers have not observed data "
                                      "yet: input_quant.quantizer"));
  CHECK(early->current_step() == 0);
  CHECK(fresh->stem->is_bn_frozen());  // freeze_bn ran first, as in Python
  CHECK(all_in(*fresh, qnn::Mode::Observe));
  fresh(torch::randn({4, 3, 8, 8}));
  early();
  CHECK(early->current_step() == 1);
  CHECK(all_in(*fresh, qnn::Mode::Frozen));

  CHECK_THROWS_WITH(qnn::attach_schedule(fresh, qnn::QATSchedule()),
                    Contains("attach_schedule: the model already has a qat_schedule"));
  CHECK_THROWS_WITH(qnn::QATScheduler(edgeqat_test::QatNet(nullptr), qnn::QATSchedule()),
                    Contains("QATScheduler: model must be a module, got an empty holder"));
}

TEST_CASE(
    "attach_schedule: qat_schedule.step is saved with the model, and a resumed run switches "
    "phase at the same step",
    "[nn][schedule][serialize]") {
  constexpr int64_t kSteps = 14, kSaveAt = 5;
  const auto schedule_spec =
      qnn::QATSchedule().freeze_bn_step(3).freeze_observers_step(8).learn_ranges_step(11);
  const auto batches = make_batches(kSteps, 35);
  torch::manual_seed(36);
  edgeqat_test::QatNet net;
  auto schedule = qnn::attach_schedule(net, schedule_spec);
  const auto buffers = net->named_buffers();
  REQUIRE(buffers.contains("qat_schedule.step"));  // Python's name in a prepared model
  CHECK(buffers["qat_schedule.step"].scalar_type() == torch::kLong);
  CHECK(buffers["qat_schedule.step"].dim() == 0);
  CHECK(schedule->named_parameters().is_empty());  // only the count

  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.02).momentum(0.9));
  for (int64_t i = 0; i < kSaveAt; ++i) train_step(net, schedule, opt, batches.items[i]);
  REQUIRE(net->stem->is_bn_frozen());  // phase 1 reached before the save

  const auto model_path = temp_path("edgeqat_test_schedule_model.pt");
  const auto optim_path = temp_path("edgeqat_test_schedule_optim.pt");
  torch::save(net, model_path);
  torch::save(opt, optim_path);

  // A new process would do this: build the model, attach the schedule, load.
  torch::manual_seed(999);
  edgeqat_test::QatNet restored;
  auto restored_schedule = qnn::attach_schedule(restored, schedule_spec);
  torch::optim::SGD restored_opt(restored->parameters(),
                                 torch::optim::SGDOptions(0.02).momentum(0.9));
  torch::load(restored, model_path);
  torch::load(restored_opt, optim_path);
  std::remove(model_path.c_str());
  std::remove(optim_path.c_str());
  CHECK(restored_schedule->current_step() == kSaveAt);
  CHECK(restored->stem->is_bn_frozen());

  for (int64_t i = kSaveAt; i < kSteps; ++i) {
    INFO("step " << i);
    const float a = train_step(net, schedule, opt, batches.items[i]);
    const float b = train_step(restored, restored_schedule, restored_opt, batches.items[i]);
    CHECK(a == b);
    const qnn::Mode expected = i >= 11  ? qnn::Mode::Learn
                               : i >= 8 ? qnn::Mode::Frozen
                                        : qnn::Mode::Observe;
    CHECK(all_in(*net, expected));
    CHECK(all_in(*restored, expected));
  }
  CHECK(restored_schedule->current_step() == kSteps);
  const auto rbuffers = restored->named_buffers();
  for (const auto& b : net->named_buffers()) {
    INFO(b.key());
    CHECK(same(b.value(), rbuffers[b.key()]));
  }
  const auto rparams = restored->named_parameters();
  for (const auto& p : net->named_parameters()) {
    INFO(p.key());
    CHECK(same(p.value(), rparams[p.key()]));
  }
}

TEST_CASE("schedule: a standalone QATScheduler, saved on its own, a destroyed model, clone",
          "[nn][schedule]") {
  torch::manual_seed(37);
  auto net = std::make_unique<edgeqat_test::QatNet>();
  qnn::QATScheduler schedule(*net, qnn::QATSchedule().freeze_bn_step(2));
  // Not part of the model.
  CHECK_FALSE((*net)->named_buffers().contains("qat_schedule.step"));
  CHECK(schedule->named_buffers().contains("step"));
  for (int i = 0; i < 3; ++i) {
    schedule();
    (*net)(torch::randn({2, 3, 8, 8}));
  }
  CHECK((*net)->stem->is_bn_frozen());

  const auto path = temp_path("edgeqat_test_schedule_standalone.pt");
  torch::save(schedule, path);
  qnn::QATScheduler restored(*net, qnn::QATSchedule().freeze_bn_step(2));
  torch::load(restored, path);
  std::remove(path.c_str());
  CHECK(restored->current_step() == 3);

  CHECK_THROWS_WITH(schedule->clone(), Contains("QATScheduler cannot be cloned"));

  // A plain (not shared_ptr-owned) model works too.
  torch::manual_seed(38);
  edgeqat_test::QatNetImpl plain;
  qnn::QATScheduler on_plain(plain, qnn::QATSchedule().freeze_bn_step(0));
  on_plain();
  CHECK(plain.stem->is_bn_frozen());

  net.reset();  // the model is gone
  CHECK_THROWS_WITH(schedule(), Contains("QATScheduler: the model it was built for no longer "
                                         "exists"));
}

TEST_CASE("schedule: export_int8 skips an attached QATScheduler", "[nn][schedule][export]") {
  torch::manual_seed(39);
  torch::nn::Sequential model(qnn::ActQuant(), qnn::QuantLinear(6, 3), qnn::ActQuant());
  auto schedule = qnn::attach_schedule(model, qnn::QATSchedule().freeze_observers_step(1));
  for (int i = 0; i < 2; ++i) {
    schedule();
    model->forward(torch::randn({8, 6}));
  }
  CHECK(all_in(*model, qnn::Mode::Frozen));
  model->eval();
  const auto builder = edgeqat::export_int8_graph(model, torch::zeros({1, 6}));
  CHECK(builder.graph()["nodes"].size() == 1);
}
