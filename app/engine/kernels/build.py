"""Compiles the engine's kernels: the bfloat16 TensorFlow op (against the
installed TensorFlow) and the int8 decoder in its AVX-512 VNNI, AVX2 and generic builds.

    python app/engine/kernels/build.py [--output PATH]

Needs g++ (and TensorFlow's headers, in the tensorflow pip package's
`include` folder). Each library is written to a temporary file and renamed,
so a failed build never leaves a half-written one.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "packed_bf16_matmul.cc")
DEFAULT_OUTPUT = os.path.join(HERE, "packed_bf16_matmul.so")


def tensorflow_flags() -> list[str]:
    # Asked of a child process: importing TensorFlow prints start-up notes on stderr.
    code = ("import tensorflow as tf; "
            "print('\\n'.join(tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: TensorFlow is not importable by {sys.executable}")
    return done.stdout.split()


NATIVE_SOURCE = os.path.join(HERE, "native_decoder.cc")
# -ffp-contract=off: no fused multiply-add the source does not ask for, so both
# builds round every float operation the same way.
NATIVE_FLAGS = {"avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vnni"],
                "avx2": ["-mavx2", "-mfma", "-mf16c"], "generic": []}


def native_output(variant: str) -> str:
    return os.path.join(HERE, f"native_decoder_{variant}.so")


def build_native(variant: str) -> None:
    command = ["g++", "-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off", *NATIVE_FLAGS[variant],
               "-shared", "-fPIC", NATIVE_SOURCE]
    compile_to(native_output(variant), command, NATIVE_SOURCE)


def build(output: str) -> None:
    # -ffp-contract=off here too: otherwise g++ fuses some tile sizes' multiply-adds
    # and not others on FMA CPUs, and a row's logits would change with its batch.
    command = ["g++", "-O3", "-ffp-contract=off", "-shared", "-fPIC", SOURCE, *tensorflow_flags()]
    compile_to(output, command, SOURCE)


def compile_to(output: str, command: list[str], source: str) -> None:
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".kernel-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([*command, "-o", temporary], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: compiling {source} failed:\n{done.stderr.strip()}")
        # mkstemp made it private; the service may run as another user (the image does).
        os.chmod(temporary, 0o755)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compile pokegen's TensorFlow kernels.")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="library to write (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        build(args.output)
        for variant in NATIVE_FLAGS:
            build_native(variant)
            print(f"built {native_output(variant)}")
    except FileNotFoundError as e:  # no g++
        print(f"error: cannot compile the kernels: {e.strerror}: {e.filename}", file=sys.stderr)
        return 1
    print(f"built {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
