# The int8 runtime must stay torch-free: fails if a runtime source or public runtime header
# includes a torch, ATen, c10 or caffe2 header. Run at configure time (include()) and as the
# ctest `runtime_no_torch_headers` (cmake -DEDGEQAT_SOURCE_DIR=... -P this file), so a bad
# include is caught even before it would fail to compile (the runtime target gets no torch
# include directories, so it could not compile either).
if(NOT EDGEQAT_SOURCE_DIR)
  set(EDGEQAT_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../..")
endif()
file(GLOB_RECURSE _edgeqat_runtime_files
  "${EDGEQAT_SOURCE_DIR}/csrc/runtime/*.h" "${EDGEQAT_SOURCE_DIR}/csrc/runtime/*.cpp"
  "${EDGEQAT_SOURCE_DIR}/csrc/include/edgeqat/runtime/*.h")
set(_edgeqat_torch_include_regex "^[ \t]*#[ \t]*include[ \t]*[<\"](torch|ATen|c10|caffe2)/")
set(_edgeqat_bad "")
foreach(_f IN LISTS _edgeqat_runtime_files)
  file(STRINGS "${_f}" _lines REGEX "${_edgeqat_torch_include_regex}")
  if(_lines)
    list(APPEND _edgeqat_bad "${_f}: ${_lines}")
  endif()
endforeach()
if(_edgeqat_bad)
  string(REPLACE ";" "\n  " _msg "${_edgeqat_bad}")
  message(FATAL_ERROR "edgeqat runtime must not include torch headers:\n  ${_msg}")
endif()
list(LENGTH _edgeqat_runtime_files _n)
message(STATUS "edgeqat runtime: ${_n} files checked, no torch/ATen/c10 include")
