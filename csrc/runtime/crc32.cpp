#include "crc32.h"

#include <array>

namespace edgeqat::runtime::detail {
namespace {

// Slicing-by-8 (Intel's layout): table[0] is the classic byte-at-a-time table; table[k][b] is the
// CRC of byte b followed by k zero bytes, so eight input bytes are folded in with eight lookups
// and no data-dependent loop. About 8x the byte-at-a-time speed, 8 KiB of tables, computed at
// compile time.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = make_tables();
static_assert(kTables[0][1] == 0x77073096u, "CRC-32 table");
static_assert(kTables[0][255] == 0x2D02EF8Du, "CRC-32 table");

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  const auto& t = kTables;
  uint32_t c = ~crc;
  // Bytes are assembled explicitly (not loaded as a uint32), so this is endian-independent.
  while (size >= 8) {
    const uint32_t lo = c ^ (uint32_t{data[0]} | uint32_t{data[1]} << 8 | uint32_t{data[2]} << 16 |
                             uint32_t{data[3]} << 24);
    c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
        t[3][data[4]] ^ t[2][data[5]] ^ t[1][data[6]] ^ t[0][data[7]];
    data += 8;
    size -= 8;
  }
  while (size-- > 0) c = (c >> 8) ^ t[0][(c ^ *data++) & 0xFFu];
  return ~c;
}

}  // namespace edgeqat::runtime::detail
