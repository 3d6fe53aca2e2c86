// Internal: CRC-32 as in zlib / PNG / IEEE 802.3 (reflected polynomial 0xEDB88320, initial value
// and final xor 0xFFFFFFFF), so crc32("123456789") == 0xCBF43926. The int8 model file stores it
// over its header and data (docs/int8-format.md).
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgeqat::runtime::detail {

// CRC-32 of `size` bytes at `data`, continuing from `crc` (the CRC of the bytes before them;
// 0 to start), so crc32(b, n2, crc32(a, n1)) is the CRC of a followed by b. `data` may be null
// when `size` is 0.
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

}  // namespace edgeqat::runtime::detail
