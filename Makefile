# Everyday commands. The build itself is described once, in CMakeLists.txt;
# setup.py drives it for pip.
PY ?= python3
BUILD_DIR ?= build/python

.PHONY: deps build test test-cpp test-python reproduce demo bench format lint clean

deps:          ## apt + pip dependencies (Debian; pins torch==2.13.0)
	bash .ci/install-deps

build:         ## editable install: compiles libedgeqat, edgeqat._C and the C++ tests
	EDGEQAT_BUILD_DIR=$(BUILD_DIR) $(PY) -m pip install -q --no-build-isolation --no-deps -e .

test: build    ## every test: Catch2 through ctest, then pytest
	ctest --test-dir $(BUILD_DIR) --output-on-failure
	$(PY) -m pytest tests/python

test-cpp: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

test-python: build
	$(PY) -m pytest tests/python

reproduce: build  ## the float / QAT / PTQ table, reduced schedule (5.5 min on 2 cores; docs/reproduce.md)
	$(PY) -m edgeqat.reproduce --quick

demo: build    ## QAT on Fashion-MNIST -> int8 export -> accuracy in the int8 runtime
	$(PY) examples/python/qat_fashion_mnist.py

bench: build   ## fake-quant speed against torch's fake_quantize and a copy
	$(PY) benchmarks/fake_quant.py

format:
	clang-format -i $$(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'tests/cpp/*.cpp' 'examples/cpp/*.cpp')
	$(PY) -m ruff format python tests benchmarks examples

lint:
	$(PY) -m ruff check python tests benchmarks examples

clean:
	rm -rf build python/edgeqat/lib python/edgeqat/include python/edgeqat/_C*.so
