// The int8 model file container (docs/int8-format.md, "Container"): CRC-32, writer round trip
// and layout, atomic writes, the writer's argument checks, and every rejection the reader owes a
// hostile file. Hostile files are built by make_file(), which wraps arbitrary header bytes and
// data in a correct preamble and CRC (unless told otherwise), so each test fails the check it
// names and no earlier one.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgeqat/runtime/model_file.h"
#include "runtime/crc32.h"

namespace rt = edgeqat::runtime;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using nlohmann::json;
using Bytes = std::vector<uint8_t>;

namespace {

constexpr char kSource[] = "hostile.eq8";
const std::string kPrefix = std::string("edgeqat int8 model file '") + kSource + "': ";

uint32_t crc_of(const std::string& s) {
  return rt::detail::crc32(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

void put_u32(Bytes& b, size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void put_u64(Bytes& b, size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
uint64_t get_u64(const Bytes& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
uint32_t get_u32(const Bytes& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

// Recomputes the CRC of bytes [48, end) into the preamble.
void fix_crc(Bytes& b) { put_u32(b, 40, rt::detail::crc32(b.data() + 48, b.size() - 48)); }

// Preamble fields to force instead of the correct ones (the CRC is computed after the layout,
// over the bytes actually there, unless `crc` is given).
struct Override {
  std::optional<uint32_t> version, flags, reserved, crc;
  std::optional<uint64_t> header_size, data_offset, data_size;
};

// A file with `header` as the header bytes (any bytes, not necessarily JSON) and `data` as the
// data section: correct magic, version, sizes, zero padding to a 64-byte D, and CRC.
Bytes make_file(const std::string& header, const Bytes& data = {}, const Override& o = {}) {
  const uint64_t d = (48 + header.size() + 63) / 64 * 64;
  Bytes b(d + data.size(), 0);
  std::memcpy(b.data(), rt::kModelFileMagic, 8);
  put_u32(b, 8, o.version.value_or(1));
  put_u32(b, 12, o.flags.value_or(0));
  put_u64(b, 16, o.header_size.value_or(header.size()));
  put_u64(b, 24, o.data_offset.value_or(d));
  put_u64(b, 32, o.data_size.value_or(data.size()));
  put_u32(b, 44, o.reserved.value_or(0));
  std::memcpy(b.data() + 48, header.data(), header.size());
  if (!data.empty()) std::memcpy(b.data() + d, data.data(), data.size());
  fix_crc(b);
  if (o.crc) put_u32(b, 40, *o.crc);
  return b;
}

// A header whose "constants" array is `constants_json` (raw text).
std::string header_with(const std::string& constants_json) {
  return R"({"format":"edgeqat.int8","constants":)" + constants_json + "}";
}

// One constant entry; fields given as raw JSON text.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offset, const std::string& nbytes) {
  return R"({"name":)" + name + R"(,"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"offset":)" +
         offset + R"(,"nbytes":)" + nbytes + "}";
}

rt::ModelFile parse_bytes(const Bytes& b) {
  return rt::ModelFile::parse(b.data(), b.size(), kSource);
}

// The file is refused with a ModelFileError whose message starts with the file's name and
// contains `text`.
#define REQUIRE_REJECTED(bytes, text)                                                \
  do {                                                                               \
    const Bytes bytes_ = (bytes);                                                    \
    REQUIRE_THROWS_AS(parse_bytes(bytes_), rt::ModelFileError);                      \
    REQUIRE_THROWS_WITH(parse_bytes(bytes_), StartsWith(kPrefix) && Contains(text)); \
  } while (0)

// A fresh empty directory, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("edgeqat_model_file_test_" + std::to_string(::getpid()) +
                                        "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(path)) names.insert(e.path().filename().string());
    return names;
  }
};

void write_bytes(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(f.good());
}

Bytes read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

json sample_graph() {
  return json::parse(R"({
    "producer": "edgeqat test",
    "values": [{"name": "input", "shape": [3, 28, 28], "scale": 0.0078125, "zero_point": -1,
                "qmin": -128, "qmax": 127}],
    "inputs": ["input"], "outputs": ["fc"],
    "nodes": [{"op": "flatten", "name": "f", "inputs": ["input"], "output": "fc"}],
    "unicode": "\u00e9\u4e2d", "nested": {"a": [1, [2, [3]]], "b": null, "c": true}
  })");
}

std::vector<rt::ConstantData> sample_constants() {
  const float inf = std::numeric_limits<float>::infinity();
  return {
      rt::ConstantData("conv.weight", {2, 3}, std::vector<int8_t>{-128, -1, 0, 1, 127, 5}),
      rt::ConstantData("conv.bias", {3}, std::vector<int32_t>{INT32_MIN, -7, INT32_MAX}),
      rt::ConstantData("scales", {2, 2}, std::vector<float>{0.5f, -0.0f, inf, 1e-38f}),
      rt::ConstantData("empty", {0, 5}, std::vector<int8_t>{}),
      rt::ConstantData("scalar", {}, std::vector<float>{3.25f}),
      rt::ConstantData("empty32", {3, 0}, std::vector<int32_t>{}),
      rt::ConstantData("odd", {65}, std::vector<int8_t>(65, 9)),  // next one starts at 64 * k
      rt::ConstantData("raw", rt::DType::kInt32, {1}, Bytes{1, 2, 3, 4}),
  };
}

// A small valid file: two constants.
Bytes small_file() {
  return rt::serialize_model_file(json{{"producer", "t"}},
                                  {rt::ConstantData("w", {2, 2}, std::vector<int8_t>{1, -2, 3, -4}),
                                   rt::ConstantData("b", {2}, std::vector<int32_t>{100000, -5})});
}

// Loads equal: same header and the same constant bytes.
void require_same(const rt::ModelFile& a, const rt::ModelFile& b) {
  REQUIRE(a.header() == b.header());
  REQUIRE(a.constants().size() == b.constants().size());
  for (size_t i = 0; i < a.constants().size(); ++i) {
    const auto& x = a.constants()[i];
    const auto& y = b.constants()[i];
    REQUIRE((x.name == y.name && x.dtype == y.dtype && x.shape == y.shape && x.nbytes == y.nbytes));
    REQUIRE(Bytes(x.data, x.data + x.nbytes) == Bytes(y.data, y.data + y.nbytes));
  }
}

}  // namespace

// ---- CRC-32 ------------------------------------------------------------------------------------

TEST_CASE("model_file: crc32 matches zlib's known vectors", "[model_file]") {
  CHECK(crc_of("") == 0u);
  CHECK(crc_of("a") == 0xE8B7BE43u);
  CHECK(crc_of("123456789") == 0xCBF43926u);
  CHECK(crc_of("The quick brown fox jumps over the lazy dog") == 0x414FA339u);
  const Bytes zeros(32, 0);
  CHECK(rt::detail::crc32(zeros.data(), zeros.size()) == 0x190A55ADu);
  const Bytes ones(32, 0xFF);
  CHECK(rt::detail::crc32(ones.data(), ones.size()) == 0xFF6CAB0Bu);
  CHECK(rt::detail::crc32(nullptr, 0) == 0u);
}

TEST_CASE("model_file: crc32 slicing-by-8 equals the bitwise definition at every length",
          "[model_file]") {
  std::mt19937 rng(7);
  Bytes data(300);
  for (auto& v : data) v = static_cast<uint8_t>(rng());
  auto bitwise = [](const uint8_t* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
      c ^= p[i];
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
  };
  for (size_t start = 0; start < 8; ++start) {
    for (size_t n = 0; start + n <= data.size(); ++n) {
      REQUIRE(rt::detail::crc32(data.data() + start, n) == bitwise(data.data() + start, n));
    }
  }
  // Chaining: the CRC of a + b continues from the CRC of a.
  for (size_t split = 0; split <= data.size(); split += 13) {
    const uint32_t first = rt::detail::crc32(data.data(), split);
    REQUIRE(rt::detail::crc32(data.data() + split, data.size() - split, first) ==
            rt::detail::crc32(data.data(), data.size()));
  }
}

// ---- dtypes, round trip, layout
// ------------------------------------------------------------------

TEST_CASE("model_file: dtype names and sizes", "[model_file]") {
  CHECK(std::string(rt::dtype_name(rt::DType::kInt8)) == "int8");
  CHECK(std::string(rt::dtype_name(rt::DType::kInt32)) == "int32");
  CHECK(std::string(rt::dtype_name(rt::DType::kFloat32)) == "float32");
  CHECK(std::string(rt::dtype_name(static_cast<rt::DType>(9))) == "unknown");
  CHECK(rt::dtype_size(rt::DType::kInt8) == 1);
  CHECK(rt::dtype_size(rt::DType::kInt32) == 4);
  CHECK(rt::dtype_size(rt::DType::kFloat32) == 4);
  CHECK(rt::dtype_size(static_cast<rt::DType>(9)) == 0);
  rt::DType d = rt::DType::kInt8;
  CHECK((rt::dtype_from_name("float32", &d) && d == rt::DType::kFloat32));
  CHECK((!rt::dtype_from_name("int16", &d) && d == rt::DType::kFloat32));
  CHECK(!rt::dtype_from_name("Int8", &d));
}

TEST_CASE("model_file: round trip of header and constants of every dtype", "[model_file]") {
  TempDir dir;
  const std::string path = (dir.path / "model.eq8").string();
  const json graph = sample_graph();
  const auto constants = sample_constants();
  rt::write_model_file(path, graph, constants);
  CHECK(dir.listing() == std::set<std::string>{"model.eq8"});  // no temporary file left

  const rt::ModelFile file = rt::ModelFile::read(path);
  CHECK(file.version() == rt::kModelFileVersion);
  CHECK(file.source() == path);
  CHECK(file.size() == fs::file_size(path));

  // The header is the graph plus "format" and "constants".
  json rest = file.header();
  CHECK(rest["format"] == "edgeqat.int8");
  const json entries = rest["constants"];
  rest.erase("format");
  rest.erase("constants");
  CHECK(rest == graph);
  CHECK(file.header()["values"][0]["scale"].get<double>() == 0.0078125);
  REQUIRE(entries.size() == constants.size());

  REQUIRE(file.constants().size() == constants.size());
  for (size_t i = 0; i < constants.size(); ++i) {
    const auto& c = constants[i];
    const rt::ConstantView& v = file.constants()[i];
    INFO(c.name);
    CHECK(v.name == c.name);
    CHECK(v.dtype == c.dtype);
    CHECK(v.shape == c.shape);
    CHECK(v.nbytes == c.bytes.size());
    CHECK(v.numel * static_cast<int64_t>(rt::dtype_size(v.dtype)) ==
          static_cast<int64_t>(v.nbytes));
    CHECK(reinterpret_cast<uintptr_t>(v.data) % 64 == 0);
    CHECK(Bytes(v.data, v.data + v.nbytes) == c.bytes);
    CHECK(&file.constant(c.name) == &v);
    CHECK(file.has_constant(c.name));
    CHECK(entries[i]["name"] == c.name);
    CHECK(entries[i]["dtype"] == rt::dtype_name(c.dtype));
    CHECK(entries[i]["shape"] == json(c.shape));
    CHECK(entries[i]["nbytes"] == c.bytes.size());
    CHECK(entries[i]["offset"].get<uint64_t>() % 64 == 0);
  }
  CHECK(file.constant("scalar").numel == 1);
  CHECK(file.constant("empty").numel == 0);
  CHECK(file.constant("conv.weight").as<int8_t>()[0] == -128);
  CHECK(file.constant("conv.bias").as<int32_t>()[2] == INT32_MAX);
  CHECK(std::isinf(file.constant("scales").as<float>()[2]));
  CHECK(std::signbit(file.constant("scales").as<float>()[1]));
  CHECK(file.constant("raw").as<int32_t>()[0] == 0x04030201);
  CHECK_THROWS_AS(file.constant("conv.bias").as<float>(), std::invalid_argument);
  CHECK_THROWS_WITH(file.constant("conv.bias").as<int8_t>(),
                    Contains("constant 'conv.bias' has dtype int32, not int8"));
  CHECK(!file.has_constant("nope"));
  CHECK_THROWS_AS(file.constant("nope"), rt::ModelFileError);
  CHECK_THROWS_WITH(file.constant("nope"), StartsWith("edgeqat int8 model file '" + path + "': ") &&
                                               Contains("no constant 'nope'"));

  // parse() of the serialized bytes gives the same; serializing is deterministic.
  const Bytes bytes = rt::serialize_model_file(graph, constants);
  CHECK(bytes == read_bytes(path));
  const rt::ModelFile parsed = rt::ModelFile::parse(bytes.data(), bytes.size());
  require_same(file, parsed);
  CHECK(parsed.source() == "<memory>");
  for (const auto& v : parsed.constants()) CHECK(reinterpret_cast<uintptr_t>(v.data) % 64 == 0);
}

TEST_CASE("model_file: moving a ModelFile keeps its views valid", "[model_file]") {
  const Bytes bytes = small_file();
  rt::ModelFile a = rt::ModelFile::parse(bytes.data(), bytes.size());
  const int8_t* w = a.constant("w").as<int8_t>();
  rt::ModelFile b(std::move(a));
  CHECK(b.constant("w").as<int8_t>() == w);
  rt::ModelFile c;
  CHECK(c.constants().empty());
  CHECK(c.version() == 0);
  c = std::move(b);
  CHECK(c.constant("w").as<int8_t>()[3] == -4);
}

TEST_CASE("model_file: written layout follows the document", "[model_file]") {
  const json graph = {{"format", "edgeqat.int8"}, {"producer", "p"}};  // "format" may be given
  const auto constants = sample_constants();
  const Bytes b = rt::serialize_model_file(graph, constants);
  REQUIRE(b.size() >= 48);
  CHECK(std::memcmp(b.data(), "EQINT8\r\n", 8) == 0);
  CHECK(get_u32(b, 8) == 1);
  CHECK(get_u32(b, 12) == 0);
  CHECK(get_u32(b, 44) == 0);
  const uint64_t h = get_u64(b, 16), d = get_u64(b, 24), s = get_u64(b, 32);
  CHECK(d % 64 == 0);
  CHECK(d >= 48 + h);
  CHECK(d < 48 + h + 64);  // minimal padding
  CHECK(d + s == b.size());
  CHECK(get_u32(b, 40) == rt::detail::crc32(b.data() + 48, b.size() - 48));
  for (uint64_t i = 48 + h; i < d; ++i) CHECK(b[i] == 0);
  const json header = json::parse(b.begin() + 48, b.begin() + 48 + static_cast<int64_t>(h));
  CHECK(header["producer"] == "p");
  // Constants in order, each at the next multiple of 64, zero between them.
  uint64_t end = 0;
  for (size_t i = 0; i < constants.size(); ++i) {
    const uint64_t off = header["constants"][i]["offset"];
    CHECK(off == (end + 63) / 64 * 64);
    for (uint64_t k = end; k < off; ++k) CHECK(b[d + k] == 0);
    end = off + constants[i].bytes.size();
  }
  CHECK(s == end);
  // No constants: an empty data section.
  const Bytes none = rt::serialize_model_file(json::object(), {});
  CHECK(get_u64(none, 32) == 0);
  CHECK(none.size() == get_u64(none, 24));
  const auto loaded = rt::ModelFile::parse(none.data(), none.size());
  CHECK(loaded.constants().empty());
  CHECK(loaded.header()["constants"] == json::array());
}

// ---- writing -----------------------------------------------------------------------------------

TEST_CASE("model_file: write is atomic and overwrites", "[model_file]") {
  TempDir dir;
  const fs::path path = dir.path / "m.eq8";
  SECTION("a missing directory: throws, creates nothing") {
    const fs::path bad = dir.path / "missing" / "m.eq8";
    CHECK_THROWS_AS(rt::write_model_file(bad.string(), json::object(), {}), rt::ModelFileError);
    CHECK_THROWS_WITH(rt::write_model_file(bad.string(), json::object(), {}),
                      StartsWith("edgeqat int8 model file '" + bad.string() + "': ") &&
                          Contains("cannot create temporary file") &&
                          Contains("No such file or directory"));
    CHECK(dir.listing().empty());
  }
  SECTION("overwriting an existing file") {
    rt::write_model_file(path.string(), {{"producer", "first"}},
                         {rt::ConstantData("a", {1}, std::vector<int8_t>{1})});
    rt::write_model_file(path.string(), {{"producer", "second"}},
                         {rt::ConstantData("b", {2}, std::vector<float>{1.f, 2.f})});
    const auto file = rt::ModelFile::read(path.string());
    CHECK(file.header()["producer"] == "second");
    CHECK(!file.has_constant("a"));
    CHECK(file.constant("b").as<float>()[1] == 2.f);
    CHECK(dir.listing() == std::set<std::string>{"m.eq8"});
  }
  SECTION("a failed write leaves the existing file untouched") {
    rt::write_model_file(path.string(), {{"producer", "first"}}, {});
    const Bytes before = read_bytes(path);
    // Invalid arguments: nothing is written.
    CHECK_THROWS_AS(rt::write_model_file(path.string(), json::array(), {}), std::invalid_argument);
    // The target is a directory: the rename fails after the temporary file was written.
    const fs::path as_dir = dir.path / "d.eq8";
    fs::create_directories(as_dir / "inside");
    CHECK_THROWS_WITH(rt::write_model_file(as_dir.string(), json::object(), {}),
                      StartsWith("edgeqat int8 model file '" + as_dir.string() + "': ") &&
                          Contains("cannot rename temporary file"));
    CHECK(fs::is_directory(as_dir / "inside"));
    CHECK(read_bytes(path) == before);
    CHECK(dir.listing() == std::set<std::string>{"m.eq8", "d.eq8"});
  }
}

TEST_CASE("model_file: the writer checks its arguments", "[model_file]") {
  const auto w = [](json graph, std::vector<rt::ConstantData> constants) {
    rt::serialize_model_file(graph, constants);
  };
  using rt::ConstantData;
  using V8 = std::vector<int8_t>;
  const auto fn = StartsWith("edgeqat::runtime::serialize_model_file: ");
  CHECK_THROWS_AS(w(json::array(), {}), std::invalid_argument);
  CHECK_THROWS_WITH(w(json::array(), {}), fn && Contains("graph must be a JSON object, got []"));
  CHECK_THROWS_WITH(w(json(3), {}), Contains("graph must be a JSON object, got 3"));
  CHECK_THROWS_WITH(w({{"constants", json::array()}}, {}),
                    Contains("graph must not contain \"constants\""));
  CHECK_THROWS_WITH(w({{"format", "onnx"}}, {}),
                    Contains("graph[\"format\"] must be \"edgeqat.int8\"") && Contains("\"onnx\""));
  CHECK_THROWS_WITH(w(json::object(), {ConstantData("", {1}, V8{1})}),
                    fn && Contains("constants[0].name must not be empty"));
  CHECK_THROWS_WITH(
      w(json::object(), {ConstantData("a", {1}, V8{1}), ConstantData("a", {1}, V8{2})}),
      Contains("constants[1] ('a'): name already used by constants[0]"));
  CHECK_THROWS_WITH(w(json::object(), {ConstantData("a", {2, 2}, V8{1, 2, 3})}),
                    Contains("constants[0] ('a').bytes has 3 bytes, but shape [2, 2] of int8 "
                             "needs 4"));
  CHECK_THROWS_WITH(
      w(json::object(), {ConstantData("f", {3}, std::vector<float>{1.f, 2.f})}),
      Contains("constants[0] ('f').bytes has 8 bytes, but shape [3] of float32 needs 12"));
  CHECK_THROWS_WITH(w(json::object(), {ConstantData("a", {-1}, V8{})}),
                    Contains("constants[0] ('a').shape[0] must be in [0, 2^40], got -1"));
  CHECK_THROWS_WITH(w(json::object(), {ConstantData("a", {(int64_t{1} << 40) + 1}, V8{})}),
                    Contains("constants[0] ('a').shape[0] must be in [0, 2^40]"));
  CHECK_THROWS_WITH(w(json::object(), {ConstantData("a", std::vector<int64_t>(9, 1), V8{1})}),
                    Contains("constants[0] ('a').shape [1, 1, 1, 1, 1, 1, 1, 1, 1] has rank 9"));
  CHECK_THROWS_WITH(
      w(json::object(), {ConstantData("a", {int64_t{1} << 40, int64_t{1} << 40}, V8{})}),
      Contains("constants[0] ('a').shape [1099511627776, 1099511627776] of int8 overflows"));
  CHECK_THROWS_WITH(
      w(json::object(), {ConstantData("a", static_cast<rt::DType>(7), {1}, Bytes{1})}),
      Contains("constants[0] ('a').dtype is not a DType: 7"));
  // Too deep for a reader.
  json deep = json::array();
  for (int i = 0; i < 70; ++i) deep = json::array({deep});
  CHECK_THROWS_WITH(w({{"deep", deep}}, {}), Contains("graph nests deeper than 64"));
  // Invalid UTF-8 cannot be JSON.
  CHECK_THROWS_WITH(w({{"bad", std::string("\xff")}}, {}),
                    Contains("graph cannot be written as JSON"));
  // write_model_file names itself.
  CHECK_THROWS_WITH(rt::write_model_file("/nonexistent/x", json::array(), {}),
                    StartsWith("edgeqat::runtime::write_model_file: graph must be a JSON object"));
}

// ---- reading: files and paths ------------------------------------------------------------------

TEST_CASE("model_file: unreadable paths name the path and the errno text", "[model_file]") {
  TempDir dir;
  const std::string missing = (dir.path / "missing.eq8").string();
  CHECK_THROWS_AS(rt::ModelFile::read(missing), rt::ModelFileError);
  CHECK_THROWS_WITH(rt::ModelFile::read(missing),
                    StartsWith("edgeqat int8 model file '" + missing + "': ") &&
                        Contains("cannot open: No such file or directory"));
  CHECK_THROWS_WITH(rt::ModelFile::read(dir.path.string()),
                    Contains("is not a regular file (a directory)"));
  // A FIFO is refused at once (opening it does not wait for a writer).
  const std::string fifo = (dir.path / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(rt::ModelFile::read(fifo), Contains("is not a regular file (a FIFO)"));
  // Sizes are checked before anything is read or allocated.
  const fs::path small = dir.path / "small.eq8";
  write_bytes(small, Bytes(47, 0));
  CHECK_THROWS_WITH(rt::ModelFile::read(small.string()),
                    Contains("file size 47 bytes is smaller than the 48-byte preamble"));
  const fs::path huge = dir.path / "huge.eq8";
  write_bytes(huge, small_file());
  fs::resize_file(huge, (uint64_t{4} << 30) + 1);  // sparse
  CHECK_THROWS_WITH(rt::ModelFile::read(huge.string()),
                    Contains("file size 4294967297 bytes exceeds the 4 GiB limit (4294967296"));
  fs::remove(huge);
  // A file whose preamble claims more than is there.
  Bytes b = small_file();
  b.resize(b.size() - 1);
  write_bytes(small, b);
  CHECK_THROWS_WITH(rt::ModelFile::read(small.string()), Contains("differs from data offset D"));
  // parse() of null data.
  CHECK_THROWS_AS(rt::ModelFile::parse(nullptr, 100), std::invalid_argument);
  CHECK_THROWS_AS(rt::ModelFile::parse(nullptr, 0), rt::ModelFileError);
}

// ---- reading: the preamble ---------------------------------------------------------------------

TEST_CASE("model_file: preamble rejections name the field", "[model_file]") {
  const std::string ok = header_with("[]");
  REQUIRE_NOTHROW(parse_bytes(make_file(ok)));

  Bytes magic = make_file(ok);
  magic[7] = 0x0B;
  REQUIRE_REJECTED(magic,
                   "magic (bytes 0..7) is 45 51 49 4E 54 38 0D 0B, expected 45 51 49 4E "
                   "54 38 0D 0A");
  // A text-mode transfer turning \r\n into \n shifts everything: the magic catches it.
  Bytes text = make_file(ok);
  text.erase(text.begin() + 6);
  REQUIRE_REJECTED(text, "magic");

  Override o;
  o.version = 2;
  REQUIRE_REJECTED(make_file(ok, {}, o),
                   "format version 2 is not supported: this reader reads version 1");
  o = {};
  o.version = 0;
  REQUIRE_REJECTED(make_file(ok, {}, o), "format version 0 is not supported");
  o = {};
  o.flags = 1;
  REQUIRE_REJECTED(make_file(ok, {}, o), "flags (bytes 12..15) must be 0, got 0x00000001");
  o = {};
  o.reserved = 0x80000000u;
  REQUIRE_REJECTED(make_file(ok, {}, o), "reserved field (bytes 44..47) must be 0, got 0x80000000");
  o = {};
  o.header_size = (uint64_t{64} << 20) + 1;
  REQUIRE_REJECTED(make_file(ok, {}, o), "header size H = 67108865 exceeds the 64 MiB limit");
  o = {};
  o.header_size = ~uint64_t{0};
  REQUIRE_REJECTED(make_file(ok, {}, o), "header size H = 18446744073709551615 exceeds");
  o = {};
  o.data_offset = 65;
  REQUIRE_REJECTED(make_file(ok, {}, o), "data offset D = 65 is not a multiple of 64");
  o = {};
  o.header_size = 100;  // 48 + 100 > 128 = D
  o.data_offset = 128;
  REQUIRE_REJECTED(make_file(std::string(60, ' '), {}, o),
                   "data offset D = 128 is less than 48 + header size H = 148");
  o = {};
  o.data_offset = ~uint64_t{63};
  o.data_size = 128;
  REQUIRE_REJECTED(make_file(ok, {}, o),
                   "data offset D = 18446744073709551552 plus data size S = "
                   "128 overflows");
  o = {};
  o.data_size = 1;
  REQUIRE_REJECTED(make_file(ok, {}, o), "differs from data offset D + data size S");
  Bytes trailing = make_file(ok);
  trailing.push_back(0);
  REQUIRE_REJECTED(trailing, "(truncated, or trailing bytes)");
  REQUIRE_REJECTED(Bytes(10, 0), "file size 10 bytes is smaller than the 48-byte preamble");
  REQUIRE_REJECTED(Bytes{}, "file size 0 bytes");

  o = {};
  o.crc = 0x12345678;
  REQUIRE_REJECTED(make_file(ok, {}, o),
                   "CRC-32 mismatch: the preamble (bytes 40..43) stores "
                   "0x12345678");
  // Nonzero padding between the header and D, with a correct CRC.
  Bytes pad = make_file(ok);
  REQUIRE(get_u64(pad, 24) > 48 + ok.size());
  pad[48 + ok.size()] = 1;
  fix_crc(pad);
  REQUIRE_REJECTED(pad, "padding byte at offset " + std::to_string(48 + ok.size()));
}

// ---- reading: the header JSON ------------------------------------------------------------------

TEST_CASE("model_file: header JSON rejections", "[model_file]") {
  REQUIRE_REJECTED(make_file(""), "header JSON does not parse");
  REQUIRE_REJECTED(make_file(R"({"constants": [)"), "header JSON does not parse");
  REQUIRE_REJECTED(make_file(R"({"constants": []} x)"), "header JSON does not parse");
  REQUIRE_REJECTED(make_file("{\"constants\": [], \"s\": \"\xC3\x28\"}"),
                   "header JSON does not parse");  // invalid UTF-8
  // nlohmann's parser stops at a NUL byte: without this check H could cover trailing NULs.
  REQUIRE_REJECTED(make_file(std::string(R"({"constants": []})") + '\0'),
                   "header contains a NUL byte at file offset 65");
  REQUIRE_REJECTED(make_file(std::string(R"({"constants": [], "s": "a)") + '\0' + "\"}"),
                   "header contains a NUL byte");
  REQUIRE_REJECTED(make_file(std::string(R"({"constants": [], "s": "\)") + '\0' + "\"}"),
                   "header contains a NUL byte");  // escaped
  REQUIRE_REJECTED(make_file("[]"), "header must be a JSON object, got []");
  REQUIRE_REJECTED(make_file("{}"), "header field constants is missing");
  REQUIRE_REJECTED(make_file(R"({"constants": {}})"),
                   "header field constants must be an array, got {}");
  REQUIRE_REJECTED(make_file(R"({"format": "onnx", "constants": []})"),
                   "header field format must be \"edgeqat.int8\", got \"onnx\"");
  // Without "format" it loads (the writer always adds it; the magic identifies the file).
  REQUIRE_NOTHROW(parse_bytes(make_file(R"({"constants": []})")));
}

TEST_CASE("model_file: deep nesting is refused before parsing", "[model_file]") {
  // 100000 '[' with a valid CRC: refused by the scan, the parser never recurses.
  REQUIRE_REJECTED(make_file(std::string(100000, '[')),
                   "header JSON nests deeper than 64 levels (at file offset 112)");
  REQUIRE_REJECTED(make_file(std::string(100000, '{')), "nests deeper than 64");
  // Exactly 64 levels (the top object is level 1) loads; 65 does not.
  auto nested = [](int levels) {
    return R"({"constants": [], "x": )" + std::string(levels - 1, '[') +
           std::string(levels - 1, ']') + "}";
  };
  REQUIRE_NOTHROW(parse_bytes(make_file(nested(64))));
  REQUIRE_REJECTED(make_file(nested(65)), "nests deeper than 64");
  // Brackets inside strings, escaped quotes included, do not count.
  const std::string in_string =
      R"({"constants": [], "s": "\"[[[)" + std::string(200, '[') + R"(\\", "t": "{{{"})";
  const auto file = parse_bytes(make_file(in_string));
  CHECK(file.header()["s"].get<std::string>().size() == 205);
}

// ---- reading: constant entries -----------------------------------------------------------------

TEST_CASE("model_file: constant entry rejections name the field", "[model_file]") {
  const Bytes data(128, 0);
  auto one = [&](const std::string& e) { return make_file(header_with("[" + e + "]"), data); };
  // The baseline entry loads.
  REQUIRE_NOTHROW(parse_bytes(one(entry("\"w\"", "\"int8\"", "[2,3]", "0", "6"))));
  REQUIRE_NOTHROW(parse_bytes(one(entry("\"w\"", "\"float32\"", "[]", "64", "4"))));
  REQUIRE_NOTHROW(parse_bytes(one(entry("\"w\"", "\"int32\"", "[0]", "128", "0"))));  // at S

  REQUIRE_REJECTED(one("3"), "header field constants[0] must be an object, got 3");
  // name
  REQUIRE_REJECTED(one(R"({"dtype":"int8","shape":[1],"offset":0,"nbytes":1})"),
                   "header field constants[0].name is missing");
  REQUIRE_REJECTED(one(entry("7", "\"int8\"", "[1]", "0", "1")),
                   "header field constants[0].name must be a non-empty string, got 7");
  REQUIRE_REJECTED(one(entry("\"\"", "\"int8\"", "[1]", "0", "1")),
                   "constants[0].name must be a non-empty string");
  // dtype
  REQUIRE_REJECTED(one(R"({"name":"w","shape":[1],"offset":0,"nbytes":1})"),
                   "header field constants[0] ('w').dtype is missing");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int16\"", "[1]", "0", "2")),
                   "constants[0] ('w').dtype: unknown dtype \"int16\"");
  REQUIRE_REJECTED(one(entry("\"w\"", "1", "[1]", "0", "1")),
                   "constants[0] ('w').dtype must be a non-empty string, got 1");
  // shape
  REQUIRE_REJECTED(one(R"({"name":"w","dtype":"int8","offset":0,"nbytes":1})"),
                   "constants[0] ('w').shape is missing");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "3", "0", "3")),
                   "constants[0] ('w').shape must be an array, got 3");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1,1,1,1,1,1,1,1,1]", "0", "1")),
                   "constants[0] ('w').shape has rank 9, over the maximum 8");
  REQUIRE_NOTHROW(parse_bytes(one(entry("\"w\"", "\"int8\"", "[1,1,1,1,1,1,1,1]", "0", "1"))));
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[2,-3]", "0", "6")),
                   "constants[0] ('w').shape[1] is negative: -3");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[2.0]", "0", "2")),
                   "constants[0] ('w').shape[0] must be an integer in [0, 2^40], got 2.0");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[\"2\"]", "0", "2")),
                   "constants[0] ('w').shape[0] must be an integer in [0, 2^40], got \"2\"");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1099511627777]", "0", "0")),
                   "constants[0] ('w').shape[0] must be an integer in [0, 2^40], got "
                   "1099511627777");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[99999999999999999999999]", "0", "0")),
                   "constants[0] ('w').shape[0] must be an integer");
  // element count and byte size overflow
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1099511627776,1099511627776]", "0", "0")),
                   "constants[0] ('w').shape [1099511627776, 1099511627776]: element count "
                   "overflows");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int32\"", "[2147483648,2147483648]", "0", "0")),
                   "constants[0] ('w').shape [2147483648, 2147483648] of int32: byte size "
                   "overflows");
  // a zero dimension makes the count 0 even after huge ones
  REQUIRE_NOTHROW(
      parse_bytes(one(entry("\"w\"", "\"int8\"", "[1099511627776,1099511627776,0]", "0", "0"))));
  // offset, nbytes
  REQUIRE_REJECTED(one(R"({"name":"w","dtype":"int8","shape":[1],"nbytes":1})"),
                   "constants[0] ('w').offset is missing");
  REQUIRE_REJECTED(one(R"({"name":"w","dtype":"int8","shape":[1],"offset":0})"),
                   "constants[0] ('w').nbytes is missing");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1]", "-64", "1")),
                   "constants[0] ('w').offset must be a non-negative integer, got -64");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1]", "0.0", "1")),
                   "constants[0] ('w').offset must be a non-negative integer, got 0.0");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1]", "0", "\"1\"")),
                   "constants[0] ('w').nbytes must be a non-negative integer, got \"1\"");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int32\"", "[2,3]", "0", "6")),
                   "constants[0] ('w').nbytes = 6 disagrees with shape [2, 3] of int32 (24 bytes)");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1]", "32", "1")),
                   "constants[0] ('w').offset = 32 is not a multiple of 64");
  // outside the data section (S = 128): past the end, overlapping the end, overflowing
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1]", "192", "1")),
                   "constants[0] ('w').offset = 192 with nbytes = 1 falls outside the data "
                   "section (data size S = 128)");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[1]", "128", "1")), "falls outside");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[65]", "64", "65")),
                   "offset = 64 with nbytes = 65 falls outside");
  REQUIRE_REJECTED(one(entry("\"w\"", "\"int8\"", "[64]", "18446744073709551552", "64")),
                   "offset = 18446744073709551552 with nbytes = 64 falls outside");
  // A constant of 2^62 bytes: refused from the header alone, nothing allocated.
  REQUIRE_REJECTED(
      one(entry("\"w\"", "\"int8\"", "[2147483648,2147483648]", "0", "4611686018427387904")),
      "nbytes = 4611686018427387904 falls outside the data section");
  // duplicates
  REQUIRE_REJECTED(make_file(header_with("[" + entry("\"a\"", "\"int8\"", "[1]", "0", "1") + "," +
                                         entry("\"b\"", "\"int8\"", "[1]", "64", "1") + "," +
                                         entry("\"a\"", "\"int8\"", "[1]", "64", "1") + "]"),
                             data),
                   "header field constants[2]: duplicate constant name 'a' (also constants[0])");
  // Errors in later entries give their index.
  REQUIRE_REJECTED(make_file(header_with("[" + entry("\"a\"", "\"int8\"", "[1]", "0", "1") + "," +
                                         entry("\"b\"", "\"int8\"", "[1]", "1", "1") + "]"),
                             data),
                   "constants[1] ('b').offset = 1 is not a multiple of 64");
}

// ---- reading: damaged files --------------------------------------------------------------------

TEST_CASE("model_file: truncation at every length is refused", "[model_file]") {
  const Bytes full = small_file();
  REQUIRE_NOTHROW(parse_bytes(full));
  for (size_t n = 0; n < full.size(); ++n) {
    const Bytes cut(full.begin(), full.begin() + static_cast<int64_t>(n));
    INFO("length " << n);
    REQUIRE_THROWS_AS(parse_bytes(cut), rt::ModelFileError);
  }
  // The same through files on disk, at a few lengths.
  TempDir dir;
  const fs::path p = dir.path / "cut.eq8";
  for (size_t n : {size_t{0}, size_t{47}, size_t{48}, size_t{100}, full.size() - 1}) {
    write_bytes(p, Bytes(full.begin(), full.begin() + static_cast<int64_t>(n)));
    INFO("length " << n);
    REQUIRE_THROWS_AS(rt::ModelFile::read(p.string()), rt::ModelFileError);
  }
}

TEST_CASE("model_file: every single-byte change is detected", "[model_file]") {
  const Bytes full = small_file();
  const auto reference = parse_bytes(full);
  // No byte escapes every check: the preamble's fields are all checked (reserved and flags must
  // be 0), and the CRC covers the rest, padding included.
  for (const uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
    for (size_t i = 0; i < full.size(); ++i) {
      Bytes b = full;
      b[i] ^= flip;
      INFO("byte " << i << " xor " << int{flip});
      REQUIRE_THROWS_AS(parse_bytes(b), rt::ModelFileError);
    }
  }
  // With the CRC recomputed, changes reach the structure checks: each is refused or, for a byte
  // of a constant's data or a JSON value the container does not interpret, loads with that one
  // change. Never a crash.
  size_t refused = 0, loaded = 0;
  for (size_t i = 48; i < full.size(); ++i) {
    for (int v = 0; v < 256; v += 7) {
      Bytes b = full;
      if (b[i] == v) continue;
      b[i] = static_cast<uint8_t>(v);
      fix_crc(b);
      try {
        const auto f = parse_bytes(b);
        ++loaded;
        const bool in_data = i >= get_u64(full, 24);
        if (in_data) REQUIRE(f.header() == reference.header());
      } catch (const rt::ModelFileError&) {
        ++refused;
      }
    }
  }
  CHECK(refused > 0);
  CHECK(loaded > 0);
}

TEST_CASE("model_file: random damage with a recomputed CRC never crashes", "[model_file]") {
  const Bytes full = rt::serialize_model_file(sample_graph(), sample_constants());
  std::mt19937 rng(12345);
  const uint64_t d = get_u64(full, 24);
  for (int iter = 0; iter < 3000; ++iter) {
    Bytes b = full;
    const int changes = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < changes; ++k) {
      // Mostly the header, where the structure is.
      const size_t i = 48 + rng() % (d - 48);
      const char pick[] = "[]{}\",:0123456789-.e\\ x";
      b[i] = (rng() % 2) ? static_cast<uint8_t>(pick[rng() % (sizeof pick - 1)])
                         : static_cast<uint8_t>(rng());
    }
    fix_crc(b);
    try {
      const auto f = parse_bytes(b);
      // Every view lies in the file: reading all of it is safe (and checked by ASan builds).
      size_t sum = 0;
      for (const auto& c : f.constants()) {
        REQUIRE(reinterpret_cast<uintptr_t>(c.data) % 64 == 0);
        REQUIRE(static_cast<uint64_t>(c.numel) * rt::dtype_size(c.dtype) == c.nbytes);
        for (size_t k = 0; k < c.nbytes; ++k) sum += c.data[k];
      }
      CHECK(sum < (size_t{1} << 40));
    } catch (const rt::ModelFileError&) {
    }
  }
}
