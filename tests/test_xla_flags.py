"""The XLA flags the entry points add: never over a user's own, logged, off on request, and in effect."""
from __future__ import annotations

import os
import subprocess
import sys

from bisenet_jax import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"
WIDTH = "--xla_cpu_prefer_vector_width=512"


def test_default_flags_follow_the_cpu():
    assert xla_flags.default_flags(avx512=True) == [YNN, WIDTH]
    assert xla_flags.default_flags(avx512=False) == [YNN]


def test_apply_adds_defaults_to_empty_flags(monkeypatch):
    monkeypatch.setattr(xla_flags, "default_flags", lambda: [YNN, WIDTH])
    env = {}
    assert xla_flags.apply(env) == [YNN, WIDTH]
    assert env["XLA_FLAGS"] == f"{YNN} {WIDTH}"
    # Idempotent: a second call (a script calling a script) adds nothing.
    assert xla_flags.apply(env) == [] and env["XLA_FLAGS"] == f"{YNN} {WIDTH}"


def test_user_flags_win_and_are_kept(monkeypatch):
    monkeypatch.setattr(xla_flags, "default_flags", lambda: [YNN, WIDTH])
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type="}
    assert xla_flags.apply(env) == [WIDTH]
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=8",
                                        "--xla_cpu_experimental_ynn_fusion_type=", WIDTH]
    line = xla_flags.describe([WIDTH], env)
    assert line.startswith("XLA_FLAGS: --xla_force_host_platform_device_count=8") and f"added: {WIDTH}" in line


def test_opt_out_adds_nothing(monkeypatch):
    monkeypatch.setattr(xla_flags, "default_flags", lambda: [YNN, WIDTH])
    env = {xla_flags.OPT_OUT: "0", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert xla_flags.apply(env) == []
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"
    assert "project defaults off" in xla_flags.describe([], env)


def test_flags_reach_the_compiler_only_through_apply():
    """In a fresh process: before apply() XLA:CPU fuses an elementwise program itself; after it the
    program is handed to YNNPACK, i.e. the flags took effect (apply runs after ``import jax``, before
    the backend starts, as in the scripts)."""
    code = ("import jax, jax.numpy as jnp\n"
            "from bisenet_jax import xla_flags\n"
            "import sys\n"
            "if sys.argv[1] == 'apply': print('added', xla_flags.apply())\n"
            "text = jax.jit(lambda x: jnp.exp(x) * 2 + 1).lower(jnp.ones((256, 256))).compile().as_text()\n"
            "print('ynn' in text, xla_flags.jax_started())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
    plain = subprocess.run([sys.executable, "-c", code, "plain"], env=env, capture_output=True, text=True, check=True)
    applied = subprocess.run([sys.executable, "-c", code, "apply"], env=env, capture_output=True, text=True, check=True)
    assert plain.stdout.split()[-2:] == ["False", "True"]
    assert applied.stdout.split()[-2:] == ["True", "True"]
    assert YNN in applied.stdout


def test_entry_points_apply_the_defaults():
    """Every script and the training entry point call apply() before running."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = [os.path.join(root, "scripts", f) for f in sorted(os.listdir(os.path.join(root, "scripts")))
               if f.endswith(".py")]
    missing = [s for s in scripts + [os.path.join(root, "bisenet_jax", "main.py")]
               if "xla_flags.apply()" not in open(s).read()]
    assert not missing, f"entry points without xla_flags.apply(): {missing}"
