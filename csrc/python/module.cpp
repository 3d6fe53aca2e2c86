// edgeqat._C: the only pybind11 code. Loading it loads libedgeqat, whose
// static initialisers register the ops with the PyTorch dispatcher; tensor
// ops are then reached through torch.ops.edgeqat, never wrapped here.
#include <pybind11/pybind11.h>

#include "edgeqat/version.h"
#include "ops/cpu/fake_quant_span.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "edgeqat native module (ops are registered in torch.ops.edgeqat)";
  m.attr("__version__") = EDGEQAT_VERSION;
  m.def("cpu_isa", &edgeqat::detail::fake_quant_span_isa,
        "Instruction-set level the vectorized CPU loops run at on this machine, "
        "e.g. 'x86-64-v4', 'x86-64-v3' or 'default'.");
}
