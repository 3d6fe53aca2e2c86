// The reference kernels gathered into the table the interpreter and the tests select from.
#include "edgeqat/runtime/reference.h"

namespace edgeqat::runtime::reference {

const KernelTable& kernels() {
  static const KernelTable table{"reference", kConv2d,     kDepthwiseConv2d, kFullyConnected,
                                 kAdd,        kAveragePool2d, kMaxPool2d,     kQuantize,
                                 kDequantize};
  return table;
}

}  // namespace edgeqat::runtime::reference
