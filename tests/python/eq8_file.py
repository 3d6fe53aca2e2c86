"""A small, independent reader of the int8 model file (docs/int8-format.md), for tests: it
checks the container the way the document describes it and returns the header and the
constants as numpy arrays. Written from the document, not from the C++ reader."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

MAGIC = b"EQINT8\r\n"
DTYPES = {"int8": np.int8, "int32": np.int32, "float32": np.float32}


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    data = open(path, "rb").read()
    assert data[:8] == MAGIC
    version, flags, header_size, data_offset, data_size, crc, reserved = struct.unpack_from(
        "<IIQQQII", data, 8
    )
    assert (version, flags, reserved) == (1, 0, 0)
    assert data_offset % 64 == 0 and data_offset >= 48 + header_size
    assert len(data) == data_offset + data_size
    assert zlib.crc32(data[48:]) == crc
    header = json.loads(data[48 : 48 + header_size].decode("utf-8"))
    assert data[48 + header_size : data_offset] == bytes(data_offset - 48 - header_size)
    constants = {}
    for c in header["constants"]:
        assert c["offset"] % 64 == 0
        start = data_offset + c["offset"]
        raw = data[start : start + c["nbytes"]]
        constants[c["name"]] = np.frombuffer(raw, dtype=DTYPES[c["dtype"]]).reshape(c["shape"])
    return header, constants
