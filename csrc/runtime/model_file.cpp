#include "edgeqat/runtime/model_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>
#include <system_error>
#include <utility>

#include "crc32.h"
#include "error.h"

// The file is little-endian and constants are handed out in place (ConstantView::as, the
// typed ConstantData constructors): there is no byte-swapping path, so refuse to build one.
#if !defined(__BYTE_ORDER__) || !defined(__ORDER_LITTLE_ENDIAN__) || \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error \
    "edgeqat int8 model files are little-endian and read in place: big-endian (or unknown-endian) hosts are not supported"
#endif

namespace edgeqat::runtime {
namespace {

using nlohmann::json;

constexpr char kFormatName[] = "edgeqat.int8";
static_assert(kModelFileMaxFileSize <= std::numeric_limits<size_t>::max(),
              "the file size cap must fit in size_t");

// Preamble field offsets (docs/int8-format.md, "Container").
constexpr size_t kVersionAt = 8, kFlagsAt = 12, kHeaderSizeAt = 16, kDataOffsetAt = 24,
                 kDataSizeAt = 32, kCrcAt = 40, kReservedAt = 44;

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);  // little-endian host (checked above)
  return v;
}
uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }
void store_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, sizeof v); }

// Callers keep v far below 2^64 (every size involved is capped first).
uint64_t align_up(uint64_t v) { return (v + (kModelFileAlignment - 1)) & ~uint64_t{63}; }

std::string errno_text(int err) { return std::generic_category().message(err); }

std::string hex(uint64_t v, int digits) {
  std::ostringstream os;
  os << "0x" << std::hex << std::uppercase;
  os.width(digits);
  os.fill('0');
  os << v;
  return os.str();
}

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += hex(p[i], 2).substr(2);
  }
  return s;
}

template <class... Parts>
[[noreturn]] void reject(const std::string& source, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw ModelFileError(source, os.str());
}

// A JSON value for an error message, cut short: the header can be 64 MiB.
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

struct JsonScan {
  int64_t too_deep_at = -1;  // offset of the bracket that opens level kModelFileMaxJsonDepth + 1
  int64_t nul_at = -1;       // offset of the first NUL byte
};

// One pass over the header bytes before nlohmann sees them, stopping at the first problem:
// - nesting depth: brackets inside strings do not count; an escape skips the next byte, so "\""
//   stays a string. nlohmann's parser gives up at the first byte where this scan and a real
//   parse could disagree (an invalid token), so the scan bounds the depth the parser can reach.
// - NUL bytes: never valid in JSON text (raw control characters are not allowed in strings
//   either), but nlohmann stops at one as at the end of input, so trailing NULs counted in H
//   would go unnoticed.
JsonScan scan_json(const uint8_t* begin, const uint8_t* end) {
  JsonScan r;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const uint8_t* q = begin; q < end; ++q) {
    const uint8_t c = *q;
    if (c == 0) {
      r.nul_at = q - begin;
      return r;
    }
    if (escaped) {
      escaped = false;
    } else if (in_string) {
      if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kModelFileMaxJsonDepth) {
        r.too_deep_at = q - begin;
        return r;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return r;
}

void check_file_size(uint64_t size, const std::string& src) {
  if (size < kModelFilePreambleSize) {
    reject(src, "file size ", size, " bytes is smaller than the ", kModelFilePreambleSize,
           "-byte preamble (truncated, or not a model file)");
  }
  if (size > kModelFileMaxFileSize) {
    reject(src, "file size ", size, " bytes exceeds the 4 GiB limit (", kModelFileMaxFileSize,
           " bytes)");
  }
}

struct Preamble {
  uint32_t version = 0;
  uint64_t header_size = 0, data_offset = 0, data_size = 0;
  uint32_t crc = 0;
};

// Checks the 48 preamble bytes against the file's real size. Afterwards H <= 64 MiB,
// 48 + H <= D, D % 64 == 0 and D + S == file_size (<= 4 GiB): every later size is bounded by
// bytes that really exist.
Preamble check_preamble(const uint8_t* p, uint64_t file_size, const std::string& src) {
  check_file_size(file_size, src);
  if (std::memcmp(p, kModelFileMagic, sizeof kModelFileMagic) != 0) {
    reject(src, "magic (bytes 0..7) is ", hex_bytes(p, 8), ", expected ",
           hex_bytes(kModelFileMagic, 8), " (\"EQINT8\\r\\n\"; not a model file, or altered by a ",
           "text-mode transfer)");
  }
  Preamble pre;
  pre.version = load_u32(p + kVersionAt);
  if (pre.version != kModelFileVersion) {
    reject(src, "format version ", pre.version, " is not supported: this reader reads version ",
           kModelFileVersion);
  }
  const uint32_t flags = load_u32(p + kFlagsAt);
  if (flags != 0) reject(src, "flags (bytes 12..15) must be 0, got ", hex(flags, 8));
  const uint32_t reserved = load_u32(p + kReservedAt);
  if (reserved != 0) reject(src, "reserved field (bytes 44..47) must be 0, got ", hex(reserved, 8));
  pre.header_size = load_u64(p + kHeaderSizeAt);
  pre.data_offset = load_u64(p + kDataOffsetAt);
  pre.data_size = load_u64(p + kDataSizeAt);
  pre.crc = load_u32(p + kCrcAt);
  const uint64_t h = pre.header_size, d = pre.data_offset, s = pre.data_size;
  if (h > kModelFileMaxHeaderSize) {
    reject(src, "header size H = ", h, " exceeds the 64 MiB limit (", kModelFileMaxHeaderSize,
           " bytes)");
  }
  if (d % kModelFileAlignment != 0) {
    reject(src, "data offset D = ", d, " is not a multiple of ", kModelFileAlignment);
  }
  if (d < kModelFilePreambleSize + h) {  // h is capped: no overflow
    reject(src, "data offset D = ", d,
           " is less than 48 + header size H = ", kModelFilePreambleSize + h);
  }
  if (s > std::numeric_limits<uint64_t>::max() - d) {
    reject(src, "data offset D = ", d, " plus data size S = ", s, " overflows");
  }
  if (d + s != file_size) {
    reject(src, "file size ", file_size, " differs from data offset D + data size S = ", d, " + ",
           s, " = ", d + s, " (truncated, or trailing bytes)");
  }
  return pre;
}

// An unsigned integer field of a constant entry ("offset", "nbytes").
uint64_t unsigned_field(const json& entry, const char* key, const std::string& where,
                        const std::string& src) {
  const auto it = entry.find(key);
  if (it == entry.end()) reject(src, "header field ", where, ".", key, " is missing");
  if (!it->is_number_unsigned()) {
    reject(src, "header field ", where, ".", key, " must be a non-negative integer, got ",
           brief(*it));
  }
  return it->get<uint64_t>();
}

const std::string& string_field(const json& entry, const char* key, const std::string& where,
                                const std::string& src) {
  const auto it = entry.find(key);
  if (it == entry.end()) reject(src, "header field ", where, ".", key, " is missing");
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    reject(src, "header field ", where, ".", key, " must be a non-empty string, got ", brief(*it));
  }
  return it->get_ref<const std::string&>();
}

// Product of `shape` (1 for a scalar, 0 if any dimension is 0), false if it overflows int64.
bool checked_numel(const std::vector<int64_t>& shape, int64_t* numel) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) {
    *numel = 0;
    return true;
  }
  int64_t n = 1;
  for (const int64_t d : shape) {
    if (d <= 0 || n > std::numeric_limits<int64_t>::max() / d) return false;
    n *= d;
  }
  *numel = n;
  return true;
}

// Byte size of numel elements of dtype, false if it overflows uint64.
bool checked_nbytes(int64_t numel, DType dtype, uint64_t* nbytes) {
  const uint64_t size = dtype_size(dtype);
  if (size == 0 || static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / size) {
    return false;
  }
  *nbytes = static_cast<uint64_t>(numel) * size;
  return true;
}

ConstantView check_constant(const json& entry, size_t i, const Preamble& pre,
                            const uint8_t* data_section, const std::string& src) {
  std::string where = "constants[" + std::to_string(i) + "]";
  if (!entry.is_object()) {
    reject(src, "header field ", where, " must be an object, got ", brief(entry));
  }
  ConstantView view;
  view.name = string_field(entry, "name", where, src);
  where += " ('" + view.name + "')";

  const std::string& dtype = string_field(entry, "dtype", where, src);
  if (!dtype_from_name(dtype, &view.dtype)) {
    reject(src, "header field ", where, ".dtype: unknown dtype \"", dtype,
           "\" (expected int8, int32 or float32)");
  }

  const auto shape = entry.find("shape");
  if (shape == entry.end()) reject(src, "header field ", where, ".shape is missing");
  if (!shape->is_array()) {
    reject(src, "header field ", where, ".shape must be an array, got ", brief(*shape));
  }
  if (shape->size() > kModelFileMaxRank) {
    reject(src, "header field ", where, ".shape has rank ", shape->size(), ", over the maximum ",
           kModelFileMaxRank);
  }
  for (size_t k = 0; k < shape->size(); ++k) {
    const json& dim = (*shape)[k];
    if (dim.is_number_integer() && !dim.is_number_unsigned()) {
      reject(src, "header field ", where, ".shape[", k, "] is negative: ", brief(dim));
    }
    if (!dim.is_number_unsigned() || dim.get<uint64_t>() > uint64_t{kModelFileMaxDim}) {
      reject(src, "header field ", where, ".shape[", k, "] must be an integer in [0, 2^40], got ",
             brief(dim));
    }
    view.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }
  uint64_t expected = 0;
  if (!checked_numel(view.shape, &view.numel)) {
    reject(src, "header field ", where, ".shape ", shape_text(view.shape),
           ": element count overflows");
  }
  if (!checked_nbytes(view.numel, view.dtype, &expected)) {
    reject(src, "header field ", where, ".shape ", shape_text(view.shape), " of ", dtype,
           ": byte size overflows");
  }

  const uint64_t offset = unsigned_field(entry, "offset", where, src);
  const uint64_t nbytes = unsigned_field(entry, "nbytes", where, src);
  if (nbytes != expected) {
    reject(src, "header field ", where, ".nbytes = ", nbytes, " disagrees with shape ",
           shape_text(view.shape), " of ", dtype, " (", expected, " bytes)");
  }
  if (offset % kModelFileAlignment != 0) {
    reject(src, "header field ", where, ".offset = ", offset, " is not a multiple of ",
           kModelFileAlignment);
  }
  if (offset > pre.data_size || nbytes > pre.data_size - offset) {
    reject(src, "header field ", where, ".offset = ", offset, " with nbytes = ", nbytes,
           " falls outside the data section (data size S = ", pre.data_size, ")");
  }
  view.data = data_section + offset;  // within the buffer (or one past its end if nbytes is 0)
  view.nbytes = static_cast<size_t>(nbytes);
  return view;
}

// The bytes of a model file; `fn` names the public function in argument errors.
std::vector<uint8_t> serialize(const json& graph, const std::vector<ConstantData>& constants,
                               const char* fn) {
  if (!graph.is_object()) detail::fail(fn, "graph must be a JSON object, got ", brief(graph));
  if (graph.contains("constants")) {
    detail::fail(fn, "graph must not contain \"constants\": the writer adds it from `constants`");
  }
  json header = graph;
  const auto format = header.find("format");
  if (format == header.end()) {
    header["format"] = kFormatName;
  } else if (*format != kFormatName) {
    detail::fail(fn, "graph[\"format\"] must be \"", kFormatName, "\" (or absent), got ",
                 brief(*format));
  }

  json entries = json::array();
  std::unordered_map<std::string, size_t> seen;
  std::vector<uint64_t> offsets;
  uint64_t end = 0;  // end of the data section so far
  for (size_t i = 0; i < constants.size(); ++i) {
    const ConstantData& c = constants[i];
    const std::string where = "constants[" + std::to_string(i) + "] ('" + c.name + "')";
    if (c.name.empty()) detail::fail(fn, "constants[", i, "].name must not be empty");
    const auto [first, inserted] = seen.emplace(c.name, i);
    if (!inserted) {
      detail::fail(fn, where, ": name already used by constants[", first->second, "]");
    }
    if (dtype_size(c.dtype) == 0) {
      detail::fail(fn, where, ".dtype is not a DType: ", static_cast<int>(c.dtype));
    }
    if (c.shape.size() > kModelFileMaxRank) {
      detail::fail(fn, where, ".shape ", shape_text(c.shape), " has rank ", c.shape.size(),
                   ", over the maximum ", kModelFileMaxRank);
    }
    for (size_t k = 0; k < c.shape.size(); ++k) {
      if (c.shape[k] < 0 || c.shape[k] > kModelFileMaxDim) {
        detail::fail(fn, where, ".shape[", k, "] must be in [0, 2^40], got ", c.shape[k]);
      }
    }
    int64_t numel = 0;
    uint64_t nbytes = 0;
    if (!checked_numel(c.shape, &numel) || !checked_nbytes(numel, c.dtype, &nbytes)) {
      detail::fail(fn, where, ".shape ", shape_text(c.shape), " of ", dtype_name(c.dtype),
                   " overflows");
    }
    if (c.bytes.size() != nbytes) {
      detail::fail(fn, where, ".bytes has ", c.bytes.size(), " bytes, but shape ",
                   shape_text(c.shape), " of ", dtype_name(c.dtype), " needs ", nbytes);
    }
    // end <= 4 GiB here and nbytes == bytes.size() exists in memory: no overflow.
    const uint64_t offset = align_up(end);
    end = offset + nbytes;
    if (end > kModelFileMaxFileSize) {
      detail::fail(fn, "constants: the data section exceeds the 4 GiB file limit at ", where);
    }
    offsets.push_back(offset);
    entries.push_back({{"name", c.name},
                       {"dtype", dtype_name(c.dtype)},
                       {"shape", c.shape},
                       {"offset", offset},
                       {"nbytes", nbytes}});
  }
  header["constants"] = std::move(entries);

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    detail::fail(fn, "graph cannot be written as JSON: ", e.what());
  }
  if (text.size() > kModelFileMaxHeaderSize) {
    detail::fail(fn, "graph: the header JSON is ", text.size(), " bytes, over the 64 MiB limit");
  }
  const auto* text_bytes = reinterpret_cast<const uint8_t*>(text.data());
  if (scan_json(text_bytes, text_bytes + text.size()).too_deep_at >= 0) {
    detail::fail(fn, "graph nests deeper than ", kModelFileMaxJsonDepth, " levels");
  }
  const uint64_t data_offset = align_up(kModelFilePreambleSize + text.size());
  if (end > kModelFileMaxFileSize - data_offset) {
    detail::fail(fn, "constants: the file would exceed the 4 GiB limit");
  }
  std::vector<uint8_t> out(static_cast<size_t>(data_offset + end), 0);
  std::memcpy(out.data(), kModelFileMagic, sizeof kModelFileMagic);
  store_u32(out.data() + kVersionAt, kModelFileVersion);
  store_u64(out.data() + kHeaderSizeAt, text.size());
  store_u64(out.data() + kDataOffsetAt, data_offset);
  store_u64(out.data() + kDataSizeAt, end);
  std::memcpy(out.data() + kModelFilePreambleSize, text.data(), text.size());
  for (size_t i = 0; i < constants.size(); ++i) {
    if (!constants[i].bytes.empty()) {
      std::memcpy(out.data() + data_offset + offsets[i], constants[i].bytes.data(),
                  constants[i].bytes.size());
    }
  }
  store_u32(out.data() + kCrcAt, detail::crc32(out.data() + kModelFilePreambleSize,
                                               out.size() - kModelFilePreambleSize));
  return out;
}

// Reads exactly `size` bytes at `offset`; reads are chunked (Linux caps one read near 2 GiB).
void read_exact(int fd, uint8_t* out, uint64_t size, uint64_t offset, const std::string& path) {
  uint64_t done = 0;
  while (done < size) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size - done, uint64_t{1} << 30));
    const ssize_t n = ::pread(fd, out + done, chunk, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      reject(path, "read failed: ", errno_text(errno));
    }
    if (n == 0) {
      reject(path, "file shrank while being read: it ended after ", offset + done, " of ",
             offset + size, " bytes");
    }
    done += static_cast<uint64_t>(n);
  }
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error (a write error can surface only at close).
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

// ---- dtypes ---------------------------------------------------------------------------------

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kInt8:
      return "int8";
    case DType::kInt32:
      return "int32";
    case DType::kFloat32:
      return "float32";
  }
  return "unknown";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kInt8:
      return 1;
    case DType::kInt32:
      return 4;
    case DType::kFloat32:
      return 4;
  }
  return 0;
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (const DType d : {DType::kInt8, DType::kInt32, DType::kFloat32}) {
    if (name == dtype_name(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

namespace detail {
void throw_dtype_mismatch(const ConstantView& constant, DType requested) {
  fail("ConstantView::as", "constant '", constant.name, "' has dtype ", dtype_name(constant.dtype),
       ", not ", dtype_name(requested));
}
}  // namespace detail

// ---- errors, constants ------------------------------------------------------------------------

ModelFileError::ModelFileError(const std::string& source, const std::string& message)
    : std::runtime_error("edgeqat int8 model file '" + source + "': " + message), source_(source) {}

ConstantData::ConstantData(std::string constant_name, DType constant_dtype,
                           std::vector<int64_t> constant_shape, std::vector<uint8_t> constant_bytes)
    : name(std::move(constant_name)),
      dtype(constant_dtype),
      shape(std::move(constant_shape)),
      bytes(std::move(constant_bytes)) {}

namespace {
template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());  // little-endian host
  return out;
}
}  // namespace

ConstantData::ConstantData(std::string constant_name, std::vector<int64_t> constant_shape,
                           const std::vector<int8_t>& values)
    : ConstantData(std::move(constant_name), DType::kInt8, std::move(constant_shape),
                   bytes_of(values)) {}
ConstantData::ConstantData(std::string constant_name, std::vector<int64_t> constant_shape,
                           const std::vector<int32_t>& values)
    : ConstantData(std::move(constant_name), DType::kInt32, std::move(constant_shape),
                   bytes_of(values)) {}
ConstantData::ConstantData(std::string constant_name, std::vector<int64_t> constant_shape,
                           const std::vector<float>& values)
    : ConstantData(std::move(constant_name), DType::kFloat32, std::move(constant_shape),
                   bytes_of(values)) {}

// ---- reading ----------------------------------------------------------------------------------

void ModelFile::AlignedFree::operator()(uint8_t* p) const {
  ::operator delete(p, std::align_val_t{kModelFileAlignment});
}

ModelFile::Buffer ModelFile::allocate(size_t size, const std::string& source) {
  void* p = ::operator new(size, std::align_val_t{kModelFileAlignment}, std::nothrow);
  if (p == nullptr) reject(source, "cannot allocate ", size, " bytes to hold the file");
  return Buffer(static_cast<uint8_t*>(p));
}

ModelFile::ModelFile() = default;
ModelFile::~ModelFile() = default;
ModelFile::ModelFile(ModelFile&&) noexcept = default;
ModelFile& ModelFile::operator=(ModelFile&&) noexcept = default;

ModelFile ModelFile::parse(const uint8_t* data, size_t size, const std::string& source_name) {
  if (data == nullptr && size != 0) {
    detail::fail("ModelFile::parse", "data is null but size is ", size);
  }
  check_file_size(size, source_name);
  check_preamble(data, size, source_name);  // before allocating `size` bytes
  Buffer buffer = allocate(size, source_name);
  std::memcpy(buffer.get(), data, size);
  return from_buffer(std::move(buffer), size, source_name);
}

ModelFile ModelFile::read(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused as not a regular
  // file); it does not change reads of regular files.
  int raw = -1;
  do {
    raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) reject(path, "cannot open: ", errno_text(errno));
  Fd fd(raw);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) reject(path, "cannot stat: ", errno_text(errno));
  if (!S_ISREG(st.st_mode)) reject(path, "is not a regular file (", file_kind(st.st_mode), ")");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  check_file_size(size, path);
  uint8_t preamble[kModelFilePreambleSize];
  read_exact(fd.get(), preamble, sizeof preamble, 0, path);
  check_preamble(preamble, size, path);  // only now is `size` trusted with an allocation
  Buffer buffer = allocate(static_cast<size_t>(size), path);
  read_exact(fd.get(), buffer.get(), size, 0, path);
  uint8_t extra = 0;
  if (::pread(fd.get(), &extra, 1, static_cast<off_t>(size)) > 0) {
    reject(path, "file grew while being read (past ", size, " bytes)");
  }
  return from_buffer(std::move(buffer), static_cast<size_t>(size), path);
}

ModelFile ModelFile::from_buffer(Buffer buffer, size_t size, const std::string& source) {
  const uint8_t* p = buffer.get();
  const Preamble pre = check_preamble(p, size, source);
  const uint32_t crc = detail::crc32(p + kModelFilePreambleSize, size - kModelFilePreambleSize);
  if (crc != pre.crc) {
    reject(source, "CRC-32 mismatch: the preamble (bytes 40..43) stores ", hex(pre.crc, 8),
           ", the bytes [48, ", size, ") give ", hex(crc, 8), " (corrupted file)");
  }
  const uint8_t* header_begin = p + kModelFilePreambleSize;
  const uint8_t* header_end = header_begin + pre.header_size;
  for (const uint8_t* q = header_end; q < p + pre.data_offset; ++q) {
    if (*q != 0) {
      reject(source, "padding byte at offset ", q - p,
             " (between the header and D = ", pre.data_offset, ") must be 0, got ", hex(*q, 2));
    }
  }
  const JsonScan scan = scan_json(header_begin, header_end);
  if (scan.nul_at >= 0) {
    reject(source, "header contains a NUL byte at file offset ",
           kModelFilePreambleSize + scan.nul_at, " (header size H = ", pre.header_size, ")");
  }
  if (scan.too_deep_at >= 0) {
    reject(source, "header JSON nests deeper than ", kModelFileMaxJsonDepth,
           " levels (at file offset ", kModelFilePreambleSize + scan.too_deep_at, ")");
  }
  json header;
  try {
    header = json::parse(header_begin, header_end, nullptr, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    reject(source, "header JSON does not parse: ", e.what());
  }
  if (!header.is_object()) reject(source, "header must be a JSON object, got ", brief(header));
  const auto format = header.find("format");
  if (format != header.end() && *format != kFormatName) {
    reject(source, "header field format must be \"", kFormatName, "\", got ", brief(*format));
  }
  const auto entries = header.find("constants");
  if (entries == header.end()) reject(source, "header field constants is missing");
  if (!entries->is_array()) {
    reject(source, "header field constants must be an array, got ", brief(*entries));
  }

  ModelFile file;
  file.constants_.reserve(entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    ConstantView view = check_constant((*entries)[i], i, pre, p + pre.data_offset, source);
    const auto [first, inserted] = file.index_.emplace(view.name, i);
    if (!inserted) {
      reject(source, "header field constants[", i, "]: duplicate constant name '", view.name,
             "' (also constants[", first->second, "])");
    }
    file.constants_.push_back(std::move(view));
  }
  file.buffer_ = std::move(buffer);  // the views point into it; moving keeps the address
  file.size_ = size;
  file.source_ = source;
  file.version_ = pre.version;
  file.header_ = std::move(header);
  return file;
}

bool ModelFile::has_constant(const std::string& name) const { return index_.count(name) != 0; }

const ConstantView& ModelFile::constant(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) reject(source_, "has no constant '", name, "'");
  return constants_[it->second];
}

// ---- writing ----------------------------------------------------------------------------------

std::vector<uint8_t> serialize_model_file(const nlohmann::json& graph,
                                          const std::vector<ConstantData>& constants) {
  return serialize(graph, constants, "serialize_model_file");
}

void write_model_file(const std::string& path, const nlohmann::json& graph,
                      const std::vector<ConstantData>& constants) {
  const std::vector<uint8_t> bytes = serialize(graph, constants, "write_model_file");
  // The pid keeps processes apart, the counter threads of one process.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int raw = -1;
  do {
    raw = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) reject(path, "cannot create temporary file '", tmp, "': ", errno_text(errno));
  Fd fd(raw);
  // On any failure from here on: close, remove the temporary file, report; `path` is untouched.
  auto fail_io = [&](const char* what, int err) {
    if (fd.get() >= 0) fd.close();
    ::unlink(tmp.c_str());
    reject(path, what, " '", tmp, "': ", errno_text(err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - done, size_t{1} << 30);
    const ssize_t n = ::write(fd.get(), bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_io("cannot write temporary file", n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  // Data on disk before the rename makes it visible: a crash leaves the old file or the new one.
  if (::fsync(fd.get()) != 0) fail_io("cannot flush temporary file", errno);
  if (fd.close() != 0) fail_io("cannot close temporary file", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail_io("cannot rename temporary file", errno);
}

}  // namespace edgeqat::runtime
