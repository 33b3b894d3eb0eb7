"""Reader (and writer, for fixtures) of the IDX format used by MNIST, Fashion-MNIST and KMNIST.

Layout: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
uint32, then the data in C order, big-endian. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}


class IDXFormatError(ValueError):
    pass


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file into a native-endian numpy array, validating header and size."""
    path = Path(path)
    with _open(path) as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in _TYPES:
        raise IDXFormatError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_TYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXFormatError(f"{path}: header promises {expected} data bytes for shape {shape}, file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as IDX (gzip when the name ends in .gz): used to make test fixtures."""
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IDXFormatError(f"dtype {array.dtype} has no IDX type code")
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.dtype(_TYPES[code])).tobytes()
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as fh:
        fh.write(payload)
