"""The engine's int8 decoder (kernels/native_decoder.cc) behind DecoderGraph's interface.

The library is built three times by `python app/engine/kernels/build.py`: an
AVX-512 VNNI build, an AVX2 + FMA build (any x86-64 CPU since 2013, the EC2 t2
family included) and a generic one. All give bit-identical logits;
POKEGEN_KERNEL=avx512|avx2|generic forces one (tests and benchmarks), the default
takes the fastest the CPU has.
"""
from __future__ import annotations

import ctypes
import functools
import os

import numpy as np

from .checkpoint import HParams, WeightReader, layer_shapes
from .packed_weights import KernelUnavailable

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
VARIANTS = ("avx512", "avx2", "generic")
# The CPU flags each build needs, as /proc/cpuinfo names them.
REQUIRED_FLAGS = {"avx512": {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni"},
                  "avx2": {"avx2", "fma", "f16c"}, "generic": set()}
KERNEL_SETTING = "POKEGEN_KERNEL"

# Tensor roles: must match enum Role in the library.
WTE, WPE, LNF_G, LNF_B = 0, 1, 2, 3
LAYER_ROLES = {"ln_1/g": 4, "ln_1/b": 5, "attn/c_attn/w": 6, "attn/c_attn/b": 7,
               "attn/c_proj/w": 8, "attn/c_proj/b": 9, "ln_2/g": 10, "ln_2/b": 11,
               "mlp/c_fc/w": 12, "mlp/c_fc/b": 13, "mlp/c_proj/w": 14, "mlp/c_proj/b": 15}


def library_path(variant: str) -> str:
    return os.path.join(HERE, f"native_decoder_{variant}.so")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return set(next((line.split(":", 1)[1].split() for line in f
                             if line.startswith("flags")), []))
    except OSError:
        return set()


def cpu_runs(variant: str) -> bool:
    return REQUIRED_FLAGS[variant] <= cpu_flags()


def chosen_variant() -> str:
    forced = os.environ.get(KERNEL_SETTING, "").strip().lower()
    if forced:
        if forced not in VARIANTS:
            raise KernelUnavailable(f"{KERNEL_SETTING} must be one of {', '.join(VARIANTS)}, got {forced!r}")
        return forced
    # The fastest build that is there (an older build step made fewer) and runs here.
    return next((variant for variant in VARIANTS
                 if cpu_runs(variant) and os.path.exists(library_path(variant))), "generic")


@functools.lru_cache(maxsize=None)
def load_library(variant: str) -> ctypes.CDLL:
    path = library_path(variant)
    if not os.path.exists(path):
        raise KernelUnavailable(f"{path} is not built (python app/engine/kernels/build.py)")
    if not cpu_runs(variant):
        missing = ", ".join(sorted(REQUIRED_FLAGS[variant] - cpu_flags()))
        raise KernelUnavailable(f"this CPU cannot run the {variant} build (no {missing})")
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:  # e.g. its OpenMP runtime (libgomp1) is not installed
        raise KernelUnavailable(f"{path} does not load: {e}") from None
    i32p = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
    f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    c = ctypes
    lib.pg_create.restype = c.c_void_p
    lib.pg_create.argtypes = [c.c_int] * 8
    lib.pg_destroy.argtypes = [c.c_void_p]
    lib.pg_set.restype = c.c_int
    lib.pg_set.argtypes = [c.c_void_p, c.c_int, c.c_int, f32p, c.c_long, c.c_long]
    lib.pg_weight_bytes.restype = c.c_long
    lib.pg_weight_bytes.argtypes = [c.c_void_p]
    lib.pg_profile.argtypes = [c.c_void_p, c.c_int, np.ctypeslib.ndpointer(np.float64)]
    lib.pg_forward.restype = c.c_int
    lib.pg_forward.argtypes = [c.c_void_p, c.c_int, i32p, i32p, i32p, i32p, c.c_int, c.c_int,
                               i32p, c.c_int, i32p, f32p]
    return lib


PROFILE_PARTS = ("layer matmuls", "vocabulary projection", "attention and cache", "other")


class NativeDecoder:
    """GPT-2 with int8 weights and a key/value pool of `pool_size` places; the same
    forward() contract as DecoderGraph."""

    weight_dtype = "int8"
    min_rows = 1  # a row's logits never depend on the batch

    def __init__(self, hparams: HParams, pool_size: int, threads: int = 2,
                 cache_dtype: str = "bfloat16", max_batch: int = 1, variant: str | None = None):
        if cache_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"cache_dtype must be bfloat16 or float32, got {cache_dtype!r}")
        self.variant = variant or chosen_variant()
        self.lib = load_library(self.variant)
        self.hparams = hparams
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.cache_dtype = cache_dtype
        hp = hparams
        self._model = self.lib.pg_create(hp.n_layer, hp.n_embd, hp.n_head, hp.n_vocab, hp.n_ctx,
                                         pool_size, int(cache_dtype == "bfloat16"), threads)
        if not self._model and (hp.head_size % 8 or hp.head_size > 128):
            raise KernelUnavailable(f"the int8 decoder needs a head size that is a multiple of 8 "
                                    f"and at most 128, got {hp.head_size}")
        if not self._model:
            raise MemoryError(f"no memory for a key/value pool of {pool_size} places")

    def _set(self, layer: int, role: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, np.float32)
        matrix = array.reshape(-1, array.shape[-1])
        if self.lib.pg_set(self._model, layer, role, matrix, matrix.shape[0], matrix.shape[1]) != 0:
            raise ValueError(f"the decoder refused tensor role {role} of layer {layer}")

    def load_weights(self, reader: WeightReader) -> None:
        self._set(-1, WTE, reader.read("model/wte"))
        self._set(-1, WPE, reader.read("model/wpe"))
        self._set(-1, LNF_G, reader.read("model/ln_f/g"))
        self._set(-1, LNF_B, reader.read("model/ln_f/b"))
        for i in range(self.hparams.n_layer):
            for name in layer_shapes(self.hparams):
                self._set(i, LAYER_ROLES[name], reader.read(f"model/h{i}/{name}"))

    def warm_up(self, scratch: np.ndarray) -> None:
        """One prompt and one step, written to the scratch places only."""
        positions = np.arange(8, dtype=np.int32)[None, :]
        self.forward(np.zeros((1, 8), np.int32), positions, scratch[None, :8], scratch[None, :8])
        self.forward(np.zeros((1, 1), np.int32), np.full((1, 1), 8, np.int32), scratch[None, 8:9],
                     scratch[None, :9])

    def forward(self, tokens: np.ndarray, positions: np.ndarray, write_at: np.ndarray,
                read_at: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """DecoderGraph's rectangular form: B rows of T tokens; logits [B, V] after
        each row's last token, or [B, T, V] after every token."""
        tokens = np.asarray(tokens, np.int32)
        batch, steps = tokens.shape
        row_seq = np.repeat(np.arange(batch, dtype=np.int32), steps)
        if all_logits:
            output_rows = np.arange(batch * steps, dtype=np.int32)
        else:
            output_rows = np.arange(steps - 1, batch * steps, steps, dtype=np.int32)
        logits = self.forward_rows(tokens.ravel(), np.asarray(positions).ravel(),
                                   np.asarray(write_at).ravel(), row_seq, read_at, output_rows)
        return logits.reshape(batch, steps, -1) if all_logits else logits

    def forward_rows(self, tokens: np.ndarray, positions: np.ndarray, write_at: np.ndarray,
                     row_seq: np.ndarray, read_at: np.ndarray, output_rows: np.ndarray) -> np.ndarray:
        """Any mix of sequences' rows in one pass (see pg_forward): token i at
        positions[i], written at write_at[i], reading read_at[row_seq[i]];
        logits [len(output_rows), V] after the rows named."""
        tokens = np.ascontiguousarray(tokens, np.int32)
        read_at = np.ascontiguousarray(read_at, np.int32)
        output_rows = np.ascontiguousarray(output_rows, np.int32)
        logits = np.empty((output_rows.size, self.hparams.n_vocab), np.float32)
        done = self.lib.pg_forward(self._model, tokens.size, tokens,
                                   np.ascontiguousarray(positions, np.int32),
                                   np.ascontiguousarray(write_at, np.int32),
                                   np.ascontiguousarray(row_seq, np.int32), read_at.shape[0],
                                   read_at.shape[1], read_at, output_rows.size, output_rows, logits)
        if done != 0:
            raise ValueError("a token, position, cache place or row is out of range")
        return logits

    def profile(self, on: bool) -> dict[str, float]:
        """Seconds per part of the forward passes since profiling was last turned
        on; `on` starts (again, from zero) or stops the clock. For benchmarks."""
        seconds = np.zeros(4)
        self.lib.pg_profile(self._model, int(on), seconds)
        return dict(zip(PROFILE_PARTS, seconds.tolist()))

    def weight_bytes(self) -> int:
        return int(self.lib.pg_weight_bytes(self._model))

    def op_count(self) -> int:
        return 0  # no graph: nothing can grow per request

    def close(self) -> None:
        if self._model:
            self.lib.pg_destroy(self._model)
            self._model = None
