"""The bfloat16 kernel (app/engine/kernels/packed_bf16_matmul.cc): exact
against a float64 product of the rounded weights, rows independent of their
batch, clear errors for bad shapes, and a build that never leaves half a file."""
import os

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from app.engine import packed_weights
from app.engine.kernels import build as kernel_build
from app.engine.packed_weights import PANEL


@pytest.fixture(scope="module")
def session():
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)
    with tf.compat.v1.Session(graph=graph, config=config) as sess:
        yield sess


def product(session, x, matrix):
    with session.graph.as_default():
        packed = tf.constant(packed_weights.pack(matrix))
        return session.run(packed_weights.matmul(tf.constant(x), packed, matrix.shape[1]))


def rounded(matrix):
    return matrix.astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.mark.parametrize("rows, k, n", [(1, 768, 2304), (3, 64, 33), (5, 7, 31), (17, 96, 100),
                                        (64, 48, 257)])
def test_product_matches_float64_with_the_weights_rounded_to_bfloat16(session, rows, k, n):
    rng = np.random.default_rng(rows * k + n)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    matrix = rng.standard_normal((k, n)).astype(np.float32)
    ours = product(session, x, matrix)
    assert ours.shape == (rows, n) and ours.dtype == np.float32
    expected = x.astype(np.float64) @ rounded(matrix)
    # float32 accumulation over k terms of size ~1
    np.testing.assert_allclose(ours, expected, atol=1e-5 * k, rtol=1e-5)
    # and far from the unrounded product's exactness: the rounding is real
    assert not np.allclose(ours, x.astype(np.float64) @ matrix, atol=1e-6 * k)


def test_a_rows_product_is_bit_identical_alone_and_in_any_batch(session):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((13, 768)).astype(np.float32)
    matrix = rng.standard_normal((768, 3072)).astype(np.float32)
    batched = product(session, x, matrix)
    for rows in ([0], [5], [2, 9], [12, 0, 7], list(range(4, 11))):
        assert np.array_equal(product(session, x[rows], matrix), batched[rows]), rows


def test_column_lookup_reads_the_packed_columns(session):
    rng = np.random.default_rng(2)
    matrix = rng.standard_normal((24, 70)).astype(np.float32)
    ids = np.array([[0, 31, 32], [69, 5, 64]], np.int32)
    with session.graph.as_default():
        looked_up = session.run(packed_weights.column_lookup(
            tf.constant(packed_weights.pack(matrix)), tf.constant(ids), 24))
    assert looked_up.shape == (2, 3, 24)
    np.testing.assert_array_equal(looked_up, rounded(matrix)[:, ids].transpose(1, 2, 0))


def test_pack_pads_the_last_panel_with_zeros():
    matrix = np.ones((3, PANEL + 1), np.float32)
    packed = packed_weights.pack(matrix)
    assert packed.shape == (2, 3, PANEL) and packed.dtype == ml_dtypes.bfloat16
    assert (packed[1, :, 0] == 1).all() and (packed[1, :, 1:] == 0).all()


@pytest.mark.parametrize("x_shape, packed_shape, n, message", [
    ((2, 8), (1, 9, PANEL), 4, "expected"),
    ((2, 8), (1, 8, PANEL), 40, "does not fit"),
    ((2, 8), (1, 8, 16), 4, "expected"),
])
def test_bad_shapes_are_invalid_argument_errors(session, x_shape, packed_shape, n, message):
    with session.graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None])
        packed = tf.compat.v1.placeholder(tf.bfloat16, [None, None, None])
        out = packed_weights.matmul(x, packed, n)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            session.run(out, {x: np.zeros(x_shape, np.float32),
                              packed: np.zeros(packed_shape, ml_dtypes.bfloat16)})


def test_a_failed_build_leaves_no_library(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(kernel_build, "SOURCE", str(broken))
    monkeypatch.setattr(kernel_build, "tensorflow_flags", lambda: [])
    output = tmp_path / "out" / "kernel.so"
    with pytest.raises(SystemExit, match="compiling .*broken.cc failed"):
        kernel_build.main(["--output", str(output)])
    assert os.listdir(tmp_path / "out") == []


def test_the_built_library_is_readable_by_other_users(tmp_path):
    """The image's service user is not the user who built the library."""
    output = tmp_path / "kernel.so"
    assert kernel_build.main(["--output", str(output)]) == 0
    assert output.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.so"]  # no temporary left
