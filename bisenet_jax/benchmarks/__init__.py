"""Benchmarks that train: CamVid time-to-accuracy against the PyTorch reference (``camvid``).

``bisenet_jax.benchmarks.camvid`` drives the JAX side (``train_and_evaluate`` under a wall-clock
budget) and prints both sides; ``torch_reference`` is the same recipe in a plain PyTorch loop and
the only module here that imports torch.
"""
