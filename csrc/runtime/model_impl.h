// Internal: the execution plan of a Model, built by model_load.cpp and run by model_run.cpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "edgeqat/runtime/fast.h"
#include "edgeqat/runtime/kernels.h"
#include "edgeqat/runtime/model.h"
#include "edgeqat/runtime/model_file.h"
#include "edgeqat/runtime/types.h"

namespace edgeqat::runtime::detail {

// Per-sample geometry of a value as stored inside the runtime (NHWC; [F] is h = w = 1, c = F).
struct ValueDims {
  int rank = 3;  // 3: [C, H, W], 1: [F]
  int c = 1, h = 1, w = 1;
  int64_t numel = 1;  // c * h * w <= kMaxValueElements
  // NCHW and NHWC are the same bytes (rank 1, one channel or one pixel): no transpose needed.
  bool layout_trivial() const { return rank == 1 || c == 1 || int64_t{h} * w == 1; }
};

// One sample of one value holds at most this many elements, so that a value of a whole chunk
// (chunk * numel, see ModelImpl::max_chunk) fits the kernels' int sizes.
inline constexpr int64_t kMaxValueElements = (int64_t{1} << 31) - 1;

enum class StepKind {
  kConv2d,
  kDepthwiseConv2d,
  kFullyConnected,
  kAdd,
  kAveragePool2d,
  kMaxPool2d,
  kFlatten,
  kConcat
};

// One node, ready to run: everything the kernel call needs except the batch size.
struct Step {
  StepKind kind = StepKind::kConv2d;
  std::vector<int> inputs;  // value indices
  int output = -1;

  // conv2d / depthwise / fully connected
  ConvParams conv;
  DepthwiseConvParams depthwise;
  FullyConnectedParams fc;
  Shape4 filter_shape;                           // conv: OHWI; depthwise: [1, kh, kw, c * m]
  const int8_t* weight = nullptr;                // conv / fc: in the file; depthwise: below
  std::vector<int8_t> depthwise_weight;          // depthwise layout (repacked from OHWI)
  const int32_t* bias = nullptr;                 // in the file, or null
  std::vector<QuantizedMultiplier> multipliers;  // per output channel
  bool packed = false;                           // fast kernels on prepacked weights below
  fast::PackedConv2d packed_conv;
  fast::PackedDepthwiseConv2d packed_depthwise;
  fast::PackedFullyConnected packed_fc;

  AddParams add;
  PoolParams pool;

  // flatten: clamp to the output's grid when it is narrower than the input's
  int32_t clamp_min = -128, clamp_max = 127;

  // concat: one 256-entry table per input, q -> clamp(requant(q - zp_i, M_i) + zp_out), built at
  // load time with requantize_output: integer only and exactly the formula, one lookup a value.
  std::vector<std::array<int8_t, 256>> concat_tables;
};

struct ModelImpl {
  ModelFile file;
  std::string source;

  std::vector<ValueInfo> values;
  std::vector<ValueDims> dims;
  std::unordered_map<std::string, int> value_index;
  std::vector<int> input_ids, output_ids;
  std::vector<ValueInfo> input_infos, output_infos;
  std::vector<NodeInfo> nodes;
  std::vector<Step> steps;
  // Liveness: the step that defines each value (-1 for graph inputs) and the last step reading
  // it (its definition if none does).
  std::vector<int> def_step, last_use;

  // Kernels
  const KernelTable* table = nullptr;
  std::string kernels_name;  // "reference" or "fast/<isa>"
  std::string isa;           // empty for the reference kernels
  KernelContext ctx;

  // Largest number of samples run at once: chunk * numel <= kMaxValueElements for every value.
  int64_t max_chunk = 1;

  // Run state: arena planned for `planned_chunk` samples (0: none yet).
  int64_t planned_chunk = 0;
  std::vector<size_t> offsets;  // per value, into the arena
  // Not zero-filled: the kernels write every slot before it is read, and pages a run never
  // touches are never committed.
  struct ArenaFree {
    void operator()(int8_t* p) const { ::operator delete(p, std::align_val_t{64}); }
  };
  std::unique_ptr<int8_t, ArenaFree> arena;
  size_t arena_bytes = 0;
  std::vector<int8_t> scratch;  // float runs: quantized NCHW before / after the transposes
};

// Loads and plans (model_load.cpp).
std::unique_ptr<ModelImpl> load_model(ModelFile file, const ModelOptions& options);
// Resolves a kernels name into impl->table / kernels_name / isa (model_load.cpp).
void select_kernels(ModelImpl& impl, const std::string& name);

// Runs (model_run.cpp). `inputs` are batch * numel elements each, already checked;
// results[r] receives value `wanted[r]`, sized by the caller.
void run_model(ModelImpl& impl, const std::vector<const int8_t*>& inputs, int64_t batch,
               const std::vector<int>& wanted, std::vector<std::vector<int8_t>>& results);
void run_model(ModelImpl& impl, const std::vector<const float*>& inputs, int64_t batch,
               const std::vector<int>& wanted, std::vector<std::vector<float>>& results);

}  // namespace edgeqat::runtime::detail
