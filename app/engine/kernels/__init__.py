"""TensorFlow kernels compiled for the engine (build.py compiles them)."""
