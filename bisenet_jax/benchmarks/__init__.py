"""Benchmarks, the top floor: they use training, evaluation and ``convert`` (the PyTorch reference);
nothing below imports them.

- ``inference_speed``: latency, FPS, parameters and GFLOPs of the forward pass, JAX against PyTorch eager.
- ``train_speed``: train-step images/s and compile time, JAX against PyTorch eager.
- ``camvid``: CamVid time-to-accuracy under a wall-clock budget, JAX then the PyTorch reference.
- ``recipes``: the CamVid CPU recipes that ``camvid`` trains (``configs/camvid_*_cpu.py`` return them).
- ``torch_reference``: the same recipe in a plain PyTorch loop (the one benchmark module that imports
  torch at the top; the others import it only when asked to compare).
- ``machine``: CPU count and name, CPU time, other processes' CPU share, load, peak memory, versions.
"""
