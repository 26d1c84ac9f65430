"""Compiles the engine's TensorFlow kernels against the installed TensorFlow.

    python app/engine/kernels/build.py [--output PATH]

Needs g++ and TensorFlow's headers (both in the tensorflow pip package's
`include` folder and Debian's g++). The library is written to a temporary
file and renamed, so a failed build never leaves a half-written one.
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


def build(output: str) -> None:
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".kernel-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        # -O3 vectorises the panel loops; the kernel picks AVX-512, AVX2 or
        # plain x86-64 code at load time, so one build runs on any x86-64 CPU.
        command = ["g++", "-O3", "-shared", "-fPIC", SOURCE, "-o", temporary, *tensorflow_flags()]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: compiling {SOURCE} failed:\n{done.stderr.strip()}")
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
    except FileNotFoundError as e:  # no g++
        print(f"error: cannot compile the kernels: {e.strerror}: {e.filename}", file=sys.stderr)
        return 1
    print(f"built {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
