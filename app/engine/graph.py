"""GPT-2's forward pass as one TensorFlow graph, built once, with a key/value
cache that stays in the session between steps.

The same graph serves a prompt (one row, many tokens) and a decoding step
(many rows, one token each). The cache is a fixed pool of positions shared by
all requests (see cache_pool.py); each row says where in the pool its new
tokens go (`write_at`) and where its first `kv_len` positions live
(`read_at`). Each layer writes the new keys and values, then gathers the
row's keys and values back, so no request ever adds a node to the graph and
the cache never grows.

Cache layout: one [layers * 2 * heads * pool, head_size] variable, row
((layer * 2 + k|v) * heads + head) * pool + place, so that gathering a batch's
keys gives [batch, heads, kv_len, head_size], ready for the matmul. Keys and
values are kept in bfloat16 by default: half the memory and half the bytes to
read per step; attention itself runs in float32 (the perplexity cost is
measured by benchmarks/precision.py). The weights are bfloat16 too by
default, packed for a compiled kernel (packed_weights.py).
"""
from __future__ import annotations

import math

import numpy as np

from . import packed_weights
from .checkpoint import HParams, WeightReader, layer_shapes

# Masked attention scores: exp() of this is exactly 0 in float32.
MASKED = -1e9


def session_config(threads: int):
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=threads,
        inter_op_parallelism_threads=1,
        allow_soft_placement=True,
    )


class DecoderGraph:
    """Owns the graph, its session, the weights and the key/value pool."""

    def __init__(self, hparams: HParams, pool_size: int, threads: int = 2,
                 cache_dtype: str = "bfloat16", max_batch: int = 1,
                 weight_dtype: str = "bfloat16"):
        """weight_dtype "bfloat16" needs the compiled kernel (packed_weights.py)
        and raises KernelUnavailable without it."""
        import tensorflow as tf

        if weight_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"weight_dtype must be bfloat16 or float32, got {weight_dtype!r}")
        self.packed = weight_dtype == "bfloat16"
        if self.packed:
            packed_weights.load_kernel()
        self.weight_dtype = weight_dtype
        # Fewest rows a decoding step runs for a row's logits not to depend on
        # the batch (see StepRunner._decode_batch).
        self.min_rows = 1 if self.packed else 2
        self.hparams = hparams
        self.pool_size = pool_size  # positions in the key/value pool
        self.cache_dtype = tf.as_dtype(cache_dtype)
        self.max_batch = max_batch  # only used to warm up every batch size
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._build_weights()
            self._build_cache()
            self._build_forward()
            self._init_cache = self.cache.initializer
        self.graph.finalize()  # any op added later is a bug: fail loudly
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config(threads))

    # ----------------------------------------------------------------- build
    def _weight(self, name: str, shape: tuple[int, ...], dtype: str = "float32", prepare=None):
        import tensorflow as tf

        var = tf.compat.v1.Variable(
            tf.zeros(shape, dtype), trainable=False, name=name.replace("/", "_"),
            use_resource=True)
        value = tf.compat.v1.placeholder(dtype, shape, name=name.replace("/", "_") + "_value")
        self._assign[name] = (var.assign(value, read_value=False), value,
                              prepare or (lambda array: array.reshape(shape)))
        return var

    def _matrix(self, name: str, rows: int, columns: int, transpose: bool = False) -> "Matrix":
        """A [rows, columns] weight: bfloat16 packed for the kernel, or float32.
        `transpose`: the checkpoint holds it as [columns, rows]."""
        def oriented(array):
            return array.T if transpose else array.reshape(rows, columns)

        if self.packed:
            var = self._weight(name, packed_weights.packed_shape(rows, columns), "bfloat16",
                               lambda array: packed_weights.pack(oriented(array)))
        else:
            var = self._weight(name, (rows, columns),
                               prepare=lambda array: np.ascontiguousarray(oriented(array)))
        return Matrix(var, rows, columns, self.packed)

    def _build_weights(self):
        hp = self.hparams
        self._assign: dict[str, tuple] = {}
        # Token embeddings are kept transposed, [n_embd, n_vocab]: the logits
        # are then a plain h @ wte_t, the fastest form for 1 to 16 rows, and
        # the embedding lookup reads its columns.
        self.wte_t = self._matrix("model/wte", hp.n_embd, hp.n_vocab, transpose=True)
        self.wpe = self._weight("model/wpe", (hp.n_ctx, hp.n_embd))
        self.layers = []
        for i in range(hp.n_layer):
            layer = {}
            for name, shape in layer_shapes(hp).items():
                full = f"model/h{i}/{name}"
                if name.endswith("/w"):  # conv1d weights are stored [1, nx, nf]
                    layer[name] = self._matrix(full, shape[1], shape[2])
                else:
                    layer[name] = self._weight(full, shape)
            self.layers.append(layer)
        self.ln_f = {"g": self._weight("model/ln_f/g", (hp.n_embd,)),
                     "b": self._weight("model/ln_f/b", (hp.n_embd,))}

    def _build_cache(self):
        import tensorflow as tf

        hp = self.hparams
        # One variable for the keys and values of every layer, block
        # (layer, k|v, head) holding `pool_size` places. It is allocated but
        # never initialised: the scheduler only ever reads places a request
        # has written, so memory pages are touched (and count in RSS) only as
        # places are used, and the low places are handed out first.
        rows = hp.n_layer * 2 * hp.n_head * self.pool_size
        self.cache = tf.compat.v1.Variable(
            tf.raw_ops.Empty(shape=[rows, hp.head_size], dtype=self.cache_dtype, init=False),
            trainable=False, name="kv_cache", use_resource=True)

    def _build_forward(self):
        import tensorflow as tf

        hp = self.hparams
        self.tokens = tf.compat.v1.placeholder(tf.int32, [None, None], name="tokens")
        self.positions = tf.compat.v1.placeholder(tf.int32, [None, None], name="positions")
        self.write_at = tf.compat.v1.placeholder(tf.int32, [None, None], name="write_at")  # [B, T]
        self.read_at = tf.compat.v1.placeholder(tf.int32, [None, None], name="read_at")    # [B, L]

        batch = tf.shape(self.tokens)[0]
        steps = tf.shape(self.tokens)[1]
        kv_len = tf.shape(self.read_at)[1]
        head_offset = tf.range(hp.n_head) * self.pool_size
        write_rows = self.write_at[:, :, None] + head_offset[None, None, :]         # [B, T, H]
        read_rows = self.read_at[:, None, :] + head_offset[None, :, None]           # [B, H, L]
        visible = tf.range(kv_len)[None, None, None, :] <= self.positions[:, None, :, None]
        mask_bias = tf.where(visible, 0.0, MASKED)                                  # [B, 1, T, L]

        h = self.wte_t.columns_of(self.tokens) + tf.gather(self.wpe.read_value(), self.positions)
        for i, layer in enumerate(self.layers):
            h = self._block(h, layer, i, batch, steps, write_rows, read_rows, mask_bias)
        h = _norm(h, self.ln_f["g"], self.ln_f["b"])
        self.logits_last = self.wte_t.times(h[:, -1, :])                            # [B, V]
        flat = tf.reshape(h, [-1, hp.n_embd])
        self.logits_all = tf.reshape(self.wte_t.times(flat), [batch, steps, hp.n_vocab])

    def _block(self, h, layer, i, batch, steps, write_rows, read_rows, mask_bias):
        import tensorflow as tf

        hp = self.hparams
        e, heads, size = hp.n_embd, hp.n_head, hp.head_size
        x = tf.reshape(_norm(h, layer["ln_1/g"], layer["ln_1/b"]), [-1, e])
        qkv = tf.nn.bias_add(layer["attn/c_attn/w"].times(x), layer["attn/c_attn/b"])
        qkv = tf.reshape(qkv, [batch, steps, 3, heads, size])
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                          # [B, T, H, D]
        cached = self.cache_dtype
        block = heads * self.pool_size
        k_rows, v_rows = (2 * i) * block, (2 * i + 1) * block
        writes = [
            tf.raw_ops.ResourceScatterUpdate(resource=self.cache.handle, indices=write_rows + k_rows,
                                             updates=tf.cast(k, cached)),
            tf.raw_ops.ResourceScatterUpdate(resource=self.cache.handle, indices=write_rows + v_rows,
                                             updates=tf.cast(v, cached)),
        ]
        with tf.control_dependencies(writes):
            keys = tf.raw_ops.ResourceGather(resource=self.cache.handle, indices=read_rows + k_rows,
                                             dtype=cached)
            values = tf.raw_ops.ResourceGather(resource=self.cache.handle, indices=read_rows + v_rows,
                                               dtype=cached)
        keys, values = tf.cast(keys, tf.float32), tf.cast(values, tf.float32)
        q = tf.transpose(q, [0, 2, 1, 3])                                             # [B, H, T, D]
        scores = tf.matmul(q, keys, transpose_b=True) * (1.0 / math.sqrt(size)) + mask_bias
        attended = tf.matmul(tf.nn.softmax(scores), values)                           # [B, H, T, D]
        attended = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [-1, e])
        a = tf.nn.bias_add(layer["attn/c_proj/w"].times(attended), layer["attn/c_proj/b"])
        h = h + tf.reshape(a, [batch, steps, e])
        x = tf.reshape(_norm(h, layer["ln_2/g"], layer["ln_2/b"]), [-1, e])
        m = _gelu(tf.nn.bias_add(layer["mlp/c_fc/w"].times(x), layer["mlp/c_fc/b"]))
        m = tf.nn.bias_add(layer["mlp/c_proj/w"].times(m), layer["mlp/c_proj/b"])
        return h + tf.reshape(m, [batch, steps, e])

    # ------------------------------------------------------------------- run
    def load_weights(self, reader: WeightReader) -> None:
        """Reads the checkpoint one layer at a time: at most a layer is held
        twice while loading, and each session.run signature (whose executor
        the session keeps) is used once per layer, not once per weight."""
        groups: dict[str, list[str]] = {}
        for name in self._assign:
            groups.setdefault("/".join(name.split("/")[:2]), []).append(name)  # model/h3, model/wte...
        for names in groups.values():
            feed, ops = {}, []
            for name in names:
                assign, value, prepare = self._assign[name]
                feed[value] = prepare(reader.read(name))
                ops.append(assign)
            self.session.run(ops, feed)
            del feed
        self.session.run(self._init_cache)

    def warm_up(self, scratch: np.ndarray) -> None:
        """Runs each batch size once, so the first requests do not pay for
        kernel set-up. Writes to the scratch places only."""
        positions = np.arange(8, dtype=np.int32)[None, :]
        self.forward(np.zeros((1, 8), np.int32), positions, scratch[None, :8], scratch[None, :8])
        for batch in range(self.min_rows, max(self.min_rows, self.max_batch) + 1):
            column = np.full((batch, 1), 8, np.int32)
            read_at = scratch[np.minimum(np.arange(16), 8)]  # written places only
            self.forward(np.zeros((batch, 1), np.int32), column,
                         np.full((batch, 1), scratch[8], np.int32), np.tile(read_at, (batch, 1)))

    def forward(self, tokens: np.ndarray, positions: np.ndarray, write_at: np.ndarray,
                read_at: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Runs rows of tokens at their positions; returns the logits after
        each row's last token ([B, V]), or after every token ([B, T, V]).

        write_at [B, T]: pool places for the new tokens' keys and values.
        read_at [B, L]: pool places of each row's positions 0..L-1, where L is
        past the furthest position in the batch. Positions beyond a row's own
        are masked, but must still name places that hold written values (the
        pool starts uninitialised): repeat one of the row's own places."""
        fetch = self.logits_all if all_logits else self.logits_last
        return self.session.run(fetch, {
            self.tokens: tokens, self.positions: positions,
            self.write_at: write_at, self.read_at: read_at,
        })

    def op_count(self) -> int:
        return len(self.graph.get_operations())

    def close(self) -> None:
        self.session.close()


class Matrix:
    """A [rows, columns] weight matrix in the graph, packed bfloat16 or float32."""

    def __init__(self, var, rows: int, columns: int, packed: bool):
        self.var, self.rows, self.columns, self.packed = var, rows, columns, packed

    def times(self, x):
        """x [M, rows] @ the matrix -> [M, columns], float32."""
        import tensorflow as tf

        if self.packed:
            return packed_weights.matmul(x, self.var, self.columns)
        return tf.matmul(x, self.var)

    def columns_of(self, ids):
        """Columns `ids` as [*ids.shape, rows]: the embedding lookup of wte."""
        import tensorflow as tf

        # From a dense read: a sparse op on a variable switches it to
        # copy-on-read, and the logits matmul would then copy it every step.
        dense = self.var.read_value()
        if self.packed:
            return packed_weights.column_lookup(dense, ids, self.rows)
        return tf.transpose(tf.gather(dense, ids, axis=1), [1, 2, 0])


def _norm(x, g, b, epsilon=1e-5):
    import tensorflow as tf

    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
    # The scale is taken over the full [.., n_embd] shape: rsqrt (which
    # grappler substitutes for 1/sqrt) is approximated differently in a full
    # vector and in a tail, and a [rows, 1] tensor put a row in one or the
    # other depending on the batch size.
    centered = x - mean
    return centered / tf.sqrt(tf.broadcast_to(var, tf.shape(centered)) + epsilon) * g + b


def _gelu(x):
    import tensorflow as tf

    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
