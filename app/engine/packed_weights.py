"""bfloat16 weights for the PackedBf16MatMul kernel (kernels/packed_bf16_matmul.cc).

A decoding step multiplies a few rows by every weight, so its cost is reading
the weights. Stored as bfloat16, packed in column panels the kernel reads
sequentially, they take half the memory and half the time of float32 ones.
Activations, biases, layer norms and attention stay float32.

The kernel is compiled against the installed TensorFlow by
`python app/engine/kernels/build.py` (`make venv` and the image build do it).
Without it the engine keeps float32 weights and says why.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from .checkpoint import first_line

# Columns per panel: must match kPanel in the kernel.
PANEL = 32
KERNEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels",
                           "packed_bf16_matmul.so")


class KernelUnavailable(RuntimeError):
    """The compiled kernel is missing or does not load into this TensorFlow."""


@functools.lru_cache(maxsize=1)
def load_kernel():
    import tensorflow as tf

    if not os.path.exists(KERNEL_PATH):
        raise KernelUnavailable(f"{KERNEL_PATH} is not built (python app/engine/kernels/build.py)")
    try:
        return tf.load_op_library(KERNEL_PATH)
    except (tf.errors.NotFoundError, OSError) as e:
        raise KernelUnavailable(f"{KERNEL_PATH} does not load ({first_line(e)}); rebuild it with "
                                "python app/engine/kernels/build.py") from None


def packed_shape(rows: int, columns: int) -> tuple[int, int, int]:
    return (-(-columns // PANEL), rows, PANEL)


def pack(matrix: np.ndarray) -> np.ndarray:
    """[K, N] float32 -> [panels, K, PANEL] bfloat16 (rounded to nearest even),
    columns past N zero."""
    import ml_dtypes

    rows, columns = matrix.shape
    panels = packed_shape(rows, columns)[0]
    padded = np.zeros((rows, panels * PANEL), ml_dtypes.bfloat16)
    padded[:, :columns] = matrix.astype(ml_dtypes.bfloat16)
    return np.ascontiguousarray(padded.reshape(rows, panels, PANEL).transpose(1, 0, 2))


def matmul(x, packed, columns: int):
    """x [M, K] float32 @ the packed [K, columns] matrix -> [M, columns] float32."""
    return load_kernel().packed_bf16_mat_mul(x, packed, n=columns)


def column_lookup(packed, ids, rows: int):
    """Columns `ids` (any shape) of the packed [rows, N] matrix, as float32
    [*ids.shape, rows]: an embedding lookup when the matrix is wte transposed."""
    import tensorflow as tf

    # Element (panel, k, lane) of the flat buffer sits at (panel * rows + k) * PANEL + lane.
    start = (ids // PANEL) * (rows * PANEL) + ids % PANEL
    offsets = tf.range(rows) * PANEL
    flat = tf.reshape(packed, [-1])
    return tf.cast(tf.gather(flat, start[..., None] + offsets), tf.float32)
