"""GPT-2's forward pass as one TensorFlow graph, built once, with a key/value
cache that stays in the session between steps.

The same graph serves a prompt (one row, many tokens) and a decoding step
(many rows, one token each): rows say which cache slot they own and at which
positions their tokens sit. Each layer writes the new keys and values into its
slot, then reads back the first `kv_len` positions of every row's slot, so no
request ever adds a node to the graph and the cache never grows.

Cache layout per layer: a [slots * heads * n_ctx, head_size] variable, row
(slot * heads + head) * n_ctx + position, so that gathering a batch's keys
gives [batch, heads, kv_len, head_size] directly, ready for the matmul.
"""
from __future__ import annotations

import math

import numpy as np

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
    """Owns the graph, its session, the weights and the cache slots."""

    def __init__(self, hparams: HParams, n_slots: int, threads: int = 2):
        import tensorflow as tf

        self.hparams = hparams
        self.n_slots = n_slots
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._build_weights()
            self._build_cache()
            self._build_forward()
            self._init_cache = tf.compat.v1.variables_initializer(self.cache_k + self.cache_v)
        self.graph.finalize()  # any op added later is a bug: fail loudly
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config(threads))

    # ----------------------------------------------------------------- build
    def _weight(self, name: str, shape: tuple[int, ...]):
        import tensorflow as tf

        var = tf.compat.v1.Variable(
            tf.zeros(shape, tf.float32), trainable=False, name=name.replace("/", "_"),
            use_resource=True)
        value = tf.compat.v1.placeholder(tf.float32, shape, name=name.replace("/", "_") + "_value")
        self._assign[name] = (var.assign(value, read_value=False), value)
        return var

    def _build_weights(self):
        hp = self.hparams
        self._assign: dict[str, tuple] = {}
        self.wte = self._weight("model/wte", (hp.n_vocab, hp.n_embd))
        self.wpe = self._weight("model/wpe", (hp.n_ctx, hp.n_embd))
        self.layers = []
        for i in range(hp.n_layer):
            layer = {}
            for name, shape in layer_shapes(hp).items():
                # conv1d weights are stored [1, nx, nf]; the graph wants [nx, nf].
                full = f"model/h{i}/{name}"
                layer[name] = self._weight(full, shape[1:] if name.endswith("/w") else shape)
            self.layers.append(layer)
        self.ln_f = {"g": self._weight("model/ln_f/g", (hp.n_embd,)),
                     "b": self._weight("model/ln_f/b", (hp.n_embd,))}

    def _build_cache(self):
        import tensorflow as tf

        hp = self.hparams
        rows = self.n_slots * hp.n_head * hp.n_ctx
        self.cache_k, self.cache_v = [], []
        for i in range(hp.n_layer):
            for store, kind in ((self.cache_k, "k"), (self.cache_v, "v")):
                store.append(tf.compat.v1.Variable(
                    tf.zeros((rows, hp.head_size), tf.float32), trainable=False,
                    name=f"cache_{kind}{i}", use_resource=True))

    def _build_forward(self):
        import tensorflow as tf

        hp = self.hparams
        self.tokens = tf.compat.v1.placeholder(tf.int32, [None, None], name="tokens")
        self.positions = tf.compat.v1.placeholder(tf.int32, [None, None], name="positions")
        self.slots = tf.compat.v1.placeholder(tf.int32, [None], name="slots")
        self.kv_len = tf.compat.v1.placeholder(tf.int32, [], name="kv_len")

        batch = tf.shape(self.tokens)[0]
        steps = tf.shape(self.tokens)[1]
        # First cache row of each (row, head): [B, H]
        head_base = ((self.slots[:, None] * hp.n_head + tf.range(hp.n_head)[None, :]) * hp.n_ctx)
        write_rows = head_base[:, None, :] + self.positions[:, :, None]            # [B, T, H]
        read_rows = head_base[:, :, None] + tf.range(self.kv_len)[None, None, :]   # [B, H, L]
        visible = tf.range(self.kv_len)[None, None, None, :] <= self.positions[:, None, :, None]
        mask_bias = tf.where(visible, 0.0, MASKED)                                  # [B, 1, T, L]

        # Gather from a dense read: a sparse op on a variable switches it to
        # copy-on-read, and the logits matmul would then copy wte every step.
        h = tf.gather(self.wte.read_value(), self.tokens) + tf.gather(self.wpe.read_value(), self.positions)
        for i, layer in enumerate(self.layers):
            h = self._block(h, layer, i, batch, steps, write_rows, read_rows, mask_bias)
        h = _norm(h, self.ln_f["g"], self.ln_f["b"])
        self.logits_last = tf.matmul(h[:, -1, :], self.wte, transpose_b=True)       # [B, V]
        flat = tf.reshape(h, [-1, hp.n_embd])
        self.logits_all = tf.reshape(tf.matmul(flat, self.wte, transpose_b=True),
                                     [batch, steps, hp.n_vocab])

    def _block(self, h, layer, i, batch, steps, write_rows, read_rows, mask_bias):
        import tensorflow as tf

        hp = self.hparams
        e, heads, size = hp.n_embd, hp.n_head, hp.head_size
        x = tf.reshape(_norm(h, layer["ln_1/g"], layer["ln_1/b"]), [-1, e])
        qkv = tf.nn.bias_add(tf.matmul(x, layer["attn/c_attn/w"]), layer["attn/c_attn/b"])
        qkv = tf.reshape(qkv, [batch, steps, 3, heads, size])
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                          # [B, T, H, D]
        writes = [
            tf.raw_ops.ResourceScatterUpdate(resource=self.cache_k[i].handle, indices=write_rows, updates=k),
            tf.raw_ops.ResourceScatterUpdate(resource=self.cache_v[i].handle, indices=write_rows, updates=v),
        ]
        with tf.control_dependencies(writes):
            keys = tf.raw_ops.ResourceGather(resource=self.cache_k[i].handle, indices=read_rows, dtype=tf.float32)
            values = tf.raw_ops.ResourceGather(resource=self.cache_v[i].handle, indices=read_rows, dtype=tf.float32)
        q = tf.transpose(q, [0, 2, 1, 3])                                             # [B, H, T, D]
        scores = tf.matmul(q, keys, transpose_b=True) * (1.0 / math.sqrt(size)) + mask_bias
        attended = tf.matmul(tf.nn.softmax(scores), values)                           # [B, H, T, D]
        attended = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [-1, e])
        a = tf.nn.bias_add(tf.matmul(attended, layer["attn/c_proj/w"]), layer["attn/c_proj/b"])
        h = h + tf.reshape(a, [batch, steps, e])
        x = tf.reshape(_norm(h, layer["ln_2/g"], layer["ln_2/b"]), [-1, e])
        m = _gelu(tf.nn.bias_add(tf.matmul(x, layer["mlp/c_fc/w"]), layer["mlp/c_fc/b"]))
        m = tf.nn.bias_add(tf.matmul(m, layer["mlp/c_proj/w"]), layer["mlp/c_proj/b"])
        return h + tf.reshape(m, [batch, steps, e])

    # ------------------------------------------------------------------- run
    def load_weights(self, reader: WeightReader) -> None:
        for name, (assign, value) in self._assign.items():
            array = reader.read(name)
            self.session.run(assign, {value: array.reshape(value.shape.as_list())})
            del array
        self.session.run(self._init_cache)

    def warm_up(self) -> None:
        """Runs each batch size once, so the first requests do not pay for
        kernel set-up. Writes only into cache rows that requests overwrite."""
        prompt = np.zeros((1, 8), np.int32)
        self.forward(prompt, np.arange(8, dtype=np.int32)[None, :], np.zeros(1, np.int32))
        for batch in range(1, self.n_slots + 1):
            self.forward(np.zeros((batch, 1), np.int32), np.full((batch, 1), 8, np.int32),
                         np.arange(batch, dtype=np.int32))

    def forward(self, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray,
                all_logits: bool = False) -> np.ndarray:
        """Runs rows of tokens at their positions in their slots; returns the
        logits after each row's last token ([B, V]), or after every token."""
        kv_len = int(positions.max()) + 1
        fetch = self.logits_all if all_logits else self.logits_last
        return self.session.run(fetch, {
            self.tokens: tokens, self.positions: positions,
            self.slots: slots, self.kv_len: kv_len,
        })

    def op_count(self) -> int:
        return len(self.graph.get_operations())

    def close(self) -> None:
        self.session.close()


def _norm(x, g, b, epsilon=1e-5):
    import tensorflow as tf

    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + epsilon) * g + b


def _gelu(x):
    import tensorflow as tf

    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
