"""Conversion between bisenet_jax variables and PyTorch state_dicts (torch only where needed)."""
