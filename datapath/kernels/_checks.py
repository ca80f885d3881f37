"""Argument checks for the kernel wrappers: numba needs exact dtypes and layouts."""

from __future__ import annotations

import numpy as np


def require_array(name: str, value, dtype, ndim: int = 1, shape: tuple | None = None,
                  writeable: bool = False) -> np.ndarray:
    """``value`` as it is, if it is a C-contiguous array of ``dtype``; else a clear error.

    ``shape`` entries of ``None`` match any length. Nothing is copied or
    converted: a wrong dtype is the caller's bug, and a silent copy would hide
    writes to an output array.
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got {value.ndim}")
    if shape is not None:
        for axis, (want, have) in enumerate(zip(shape, value.shape)):
            if want is not None and want != have:
                raise ValueError(f"{name}: axis {axis} has length {have}, expected {want}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name}: array must be C-contiguous (use np.ascontiguousarray)")
    if writeable and not value.flags.writeable:
        raise ValueError(f"{name}: array is read-only but the kernel writes to it")
    return value


def require_power_of_two(name: str, value: int, limit: int = 1 << 30) -> int:
    if not isinstance(value, (int, np.integer)) or value <= 0 or value & (value - 1) or value > limit:
        raise ValueError(f"{name}: {value} is not a power of two in 1..{limit}")
    return int(value)
