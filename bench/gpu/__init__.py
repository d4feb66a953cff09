"""The GPU benchmark's steps, one module per measurement (see bench/gpu_bench.py)."""
