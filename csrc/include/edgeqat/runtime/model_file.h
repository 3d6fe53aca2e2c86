// The int8 model file container (`.eq8`, docs/int8-format.md, "Container"): a 48-byte preamble,
// a JSON header and 64-byte-aligned little-endian constants, covered by a CRC-32.
//
// Reading: ModelFile::read / ModelFile::parse check everything the document lists before any
// byte of the header is trusted (a hostile file gets a ModelFileError, never a crash, a hang or
// an allocation sized by the file); the result owns one 64-byte-aligned copy of the file and
// hands out views of its constants. Interpreting the graph part of the header is the loader's
// job, not this one's.
//
// Writing: serialize_model_file / write_model_file take the graph (the header without
// "constants") and the constants, lay them out and add "constants" (and "format" if absent).
// write_model_file replaces the file atomically.
//
// Only little-endian hosts are supported (the library does not compile elsewhere): constants are
// stored little-endian and handed out in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgeqat::runtime {

inline constexpr uint32_t kModelFileVersion = 1;
// "EQINT8\r\n"
inline constexpr uint8_t kModelFileMagic[8] = {0x45, 0x51, 0x49, 0x4E, 0x54, 0x38, 0x0D, 0x0A};
inline constexpr size_t kModelFilePreambleSize = 48;
// Alignment of the data section, of every constant in it, and of the loaded buffer in memory.
inline constexpr size_t kModelFileAlignment = 64;
// Limits a reader enforces (and the writer, so that what it writes can be read).
inline constexpr uint64_t kModelFileMaxHeaderSize = uint64_t{64} << 20;  // 64 MiB
inline constexpr uint64_t kModelFileMaxFileSize = uint64_t{4} << 30;     // 4 GiB
inline constexpr int kModelFileMaxJsonDepth = 64;
inline constexpr size_t kModelFileMaxRank = 8;
inline constexpr int64_t kModelFileMaxDim = int64_t{1} << 40;

// Element type of a constant; JSON names "int8", "int32", "float32".
enum class DType : uint8_t { kInt8, kInt32, kFloat32 };

// "int8" / "int32" / "float32"; "unknown" for a value outside the enum.
const char* dtype_name(DType dtype);
// 1 / 4 / 4 bytes; 0 for a value outside the enum.
size_t dtype_size(DType dtype);
// Parses a JSON dtype name; false (and *out untouched) if `name` is not one.
bool dtype_from_name(const std::string& name, DType* out);

// The DType of a C++ element type (int8_t, int32_t, float); other types do not compile.
template <class T>
struct DTypeOf;
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::kInt8;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kInt32;
};
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};

// A file that fails a check, or that cannot be read or written. what() starts with
// "edgeqat int8 model file '<source>': " and names the field and its value (or the errno text).
class ModelFileError : public std::runtime_error {
 public:
  ModelFileError(const std::string& source, const std::string& message);
  // The path (or the source name given to ModelFile::parse).
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

struct ConstantView;
namespace detail {
[[noreturn]] void throw_dtype_mismatch(const ConstantView& constant, DType requested);
}  // namespace detail

// One constant of a loaded file: `nbytes` bytes at `data`, inside the ModelFile's buffer (valid
// as long as the ModelFile, moves included), 64-byte aligned, little-endian, row-major.
struct ConstantView {
  std::string name;
  DType dtype = DType::kInt8;
  std::vector<int64_t> shape;  // rank <= 8, every dimension in [0, 2^40]; [] is a scalar
  const uint8_t* data = nullptr;
  size_t nbytes = 0;  // == numel * dtype_size(dtype)
  int64_t numel = 0;  // product of shape (1 for a scalar)

  // The elements as T; throws std::invalid_argument if T does not match `dtype`.
  template <class T>
  const T* as() const {
    if (dtype != DTypeOf<T>::value) detail::throw_dtype_mismatch(*this, DTypeOf<T>::value);
    return reinterpret_cast<const T*>(data);
  }
};

// One constant for the writer. The typed constructors copy the values' bytes; the raw one takes
// them as they are (little-endian). Consistency of shape, dtype and bytes is checked by the writer.
struct ConstantData {
  std::string name;
  DType dtype = DType::kInt8;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  ConstantData() = default;
  ConstantData(std::string constant_name, DType constant_dtype, std::vector<int64_t> constant_shape,
               std::vector<uint8_t> constant_bytes);
  ConstantData(std::string constant_name, std::vector<int64_t> constant_shape,
               const std::vector<int8_t>& values);
  ConstantData(std::string constant_name, std::vector<int64_t> constant_shape,
               const std::vector<int32_t>& values);
  ConstantData(std::string constant_name, std::vector<int64_t> constant_shape,
               const std::vector<float>& values);
};

// A loaded, fully checked model file. Move-only; a default-constructed one is empty (no header,
// no constants, version 0).
class ModelFile {
 public:
  // Reads and checks the file at `path` (a regular file of at most 4 GiB). Throws ModelFileError
  // naming the path: with the errno text if it cannot be opened or read, otherwise naming the
  // field that fails a check.
  static ModelFile read(const std::string& path);
  // Same checks on `size` bytes in memory, which are copied into an aligned buffer (after the
  // preamble has been checked against `size`). `source_name` stands in for the path in errors.
  static ModelFile parse(const uint8_t* data, size_t size,
                         const std::string& source_name = "<memory>");

  ModelFile();
  ~ModelFile();
  ModelFile(ModelFile&&) noexcept;
  ModelFile& operator=(ModelFile&&) noexcept;
  ModelFile(const ModelFile&) = delete;
  ModelFile& operator=(const ModelFile&) = delete;

  // The whole header object, "constants" included.
  const nlohmann::json& header() const { return header_; }
  uint32_t version() const { return version_; }
  // The path or source name the file was loaded from.
  const std::string& source() const { return source_; }
  // The file's size in bytes.
  size_t size() const { return size_; }

  // In file order (the order of header "constants").
  const std::vector<ConstantView>& constants() const { return constants_; }
  bool has_constant(const std::string& name) const;
  // Throws ModelFileError naming `name` if the file has no such constant.
  const ConstantView& constant(const std::string& name) const;

 private:
  struct AlignedFree {
    void operator()(uint8_t* p) const;
  };
  using Buffer = std::unique_ptr<uint8_t[], AlignedFree>;
  static Buffer allocate(size_t size, const std::string& source);
  static ModelFile from_buffer(Buffer buffer, size_t size, const std::string& source);

  Buffer buffer_;
  size_t size_ = 0;
  std::string source_;
  uint32_t version_ = 0;
  nlohmann::json header_;
  std::vector<ConstantView> constants_;
  std::unordered_map<std::string, size_t> index_;
};

// The bytes of a model file holding `graph` and `constants`. `graph` must be a JSON object
// without "constants" (the writer adds it, one entry per constant in the given order); it gets
// "format": "edgeqat.int8" if it has no "format" (any other "format" is an error). Throws
// std::invalid_argument naming the argument (graph, constants[i] ...) and its value if the graph
// or a constant is malformed (dtype, rank, dimensions, byte count and shape disagree, empty or
// duplicate name) or the result would break a reader limit.
std::vector<uint8_t> serialize_model_file(const nlohmann::json& graph,
                                          const std::vector<ConstantData>& constants);

// serialize_model_file, written to `path` atomically: to a temporary file beside it
// (path + ".tmp-<pid>-<n>"), flushed to disk, then renamed over `path`. A failure removes the
// temporary file and leaves any existing `path` untouched; I/O failures throw ModelFileError
// with the errno text.
void write_model_file(const std::string& path, const nlohmann::json& graph,
                      const std::vector<ConstantData>& constants);

}  // namespace edgeqat::runtime
