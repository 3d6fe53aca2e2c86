// Parts of the edgeqat._runtime module defined outside runtime_module.cpp.
#pragma once

#include <pybind11/pybind11.h>

// edgeqat._runtime.GraphBuilder (runtime_builder_bindings.cpp).
void bind_graph_builder(pybind11::module_& m);

// edgeqat._runtime.Model and its errors (runtime_model_bindings.cpp).
void bind_model(pybind11::module_& m);
