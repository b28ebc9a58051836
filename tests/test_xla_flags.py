"""The CPU compiler options (train step, inference, initialisation): only on CPU, never over a user's XLA_FLAGS,
off on request, in effect."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import jax.numpy as jnp

from bisenet_jax import xla_flags

YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_options_only_on_cpu():
    assert set(xla_flags.train_step_options("cpu", {})) == {YNN}
    assert xla_flags.train_step_options("gpu", {}) == {}
    assert xla_flags.train_step_options("tpu", {}) == {}


def test_a_users_flag_wins():
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 --{YNN}="}
    assert xla_flags.train_step_options("cpu", env) == {}
    assert "XLA_FLAGS: --xla_force_host_platform_device_count=8" in xla_flags.describe({}, env)
    # An unrelated user flag leaves the option in place.
    assert set(xla_flags.train_step_options("cpu", {"XLA_FLAGS": "--xla_dump_to=/tmp/x"})) == {YNN}


def test_opt_out():
    env = {xla_flags.OPT_OUT: "0"}
    assert xla_flags.train_step_options("cpu", env) == {}
    assert "off (BISENET_XLA_DEFAULTS=0)" in xla_flags.describe({}, env)


def test_describe_names_the_flag_as_xla_flags_spells_it():
    line = xla_flags.describe(xla_flags.train_step_options("cpu", {}), {})
    assert f"--{YNN}=dot,reduce" in line and line.startswith("XLA_FLAGS: (none)")


def test_every_models_step_leaves_elementwise_fusions_to_xla():
    options = xla_flags.train_step_options("cpu", {})
    assert options == {YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    assert f"--{YNN}=dot,reduce " in xla_flags.describe(options, {})
    assert xla_flags.train_step_options("gpu", {}) == {}
    assert xla_flags.train_step_options("cpu", {"XLA_FLAGS": f"--{YNN}=dot"}) == {}


def test_the_setup_compiles_the_step_with_the_options(monkeypatch):
    from bisenet_jax.benchmarks import train_speed
    from bisenet_jax.train import setup as setup_module

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    passed = {}
    real = setup_module.compile_train_step

    def spy(*args, **kwargs):
        passed.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(setup_module, "compile_train_step", spy)
    setup = setup_module.create_train_setup(train_speed.benchmark_config("bisenetv2", 11, "float32", 2, 64, 64),
                                            ignore_label=255)
    assert setup.step_options == xla_flags.train_step_options("cpu", {}) != {}
    # The step is jitted with these (compile_train_step hands them to jax.jit: the test above).
    assert passed["compiler_options"] == setup.step_options


def test_the_options_reach_the_compiler():
    """Compiled with the options, a convolution is XLA's own (by default XLA:CPU hands it to YNNPACK)
    while a reduction still goes to YNNPACK (an empty fusion type would take that away too)."""
    options = xla_flags.train_step_options("cpu", {})
    x = jnp.ones((2, 32, 32, 64))
    conv = lambda x: jax.lax.conv_general_dilated(x, jnp.ones((3, 3, 64, 64)), (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with_options = jax.jit(conv, compiler_options=options).lower(x).compile().as_text()
    plain = jax.jit(conv).lower(x).compile().as_text()
    assert "ynn" not in with_options and "ynn" in plain
    y = jnp.ones((256, 256))
    assert "ynn" in jax.jit(lambda y: jnp.sum(y * y, axis=0), compiler_options=options).lower(y).compile().as_text()


def test_the_train_step_is_compiled_with_them(monkeypatch):
    from bisenet_jax.train import step

    seen = {}
    real_jit = jax.jit

    def spy(fun, **kwargs):
        seen.update(kwargs)
        return real_jit(fun, **kwargs)

    monkeypatch.setattr(step.jax, "jit", spy)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    from bisenet_jax.train.config import base_config
    config = base_config()
    step.compile_train_step(config, None, None, None, lambda s: 0.0, 255)
    assert seen["compiler_options"] == xla_flags.train_step_options("cpu", {})
    seen.clear()
    monkeypatch.setenv(xla_flags.OPT_OUT, "0")
    step.compile_train_step(config, None, None, None, lambda s: 0.0, 255)
    assert seen["compiler_options"] is None


def test_known_semantics_of_the_options_max_ignores_nan():
    """Recorded so that a change in YNNPACK is noticed: under the train step's options (and XLA:CPU's
    defaults, which also hand reductions to YNNPACK) a max inside a reduction ignores NaN, while sums
    and a lone elementwise ReLU keep it. The step's finite check reads sums, so a NaN batch is still
    refused (tests/train/test_faults.py)."""
    x = jnp.ones((64, 64)).at[3, 5].set(jnp.nan)
    options = xla_flags.train_step_options("cpu", {})
    fns = {"max": jnp.max, "relu_sum": lambda x: jnp.sum(jnp.maximum(x, 0.0)), "sum": jnp.sum,
           "sum_sq": lambda x: jnp.sum(x * x), "relu": lambda x: jnp.maximum(x, 0.0) * 2}
    out = {k: np.asarray(jax.jit(f, compiler_options=options)(x)) for k, f in fns.items()}
    assert float(out["max"]) == 1.0 and float(out["relu_sum"]) == 64 * 64 - 1
    assert all(np.isnan(out[k]).any() for k in ("sum", "sum_sq", "relu"))
    assert np.isnan(np.asarray(jnp.maximum(x, 0.0))).sum() == 1  # eager, outside any reduction


def test_init_options_only_on_cpu_never_over_a_users_flag_and_off_on_request():
    assert xla_flags.init_options("cpu", {}) == {"xla_backend_optimization_level": 0}
    assert xla_flags.init_options("gpu", {}) == {} and xla_flags.init_options("tpu", {}) == {}
    assert xla_flags.init_options("cpu", {"XLA_FLAGS": "--xla_backend_optimization_level=2"}) == {}
    assert xla_flags.init_options("cpu", {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}) != {}
    assert xla_flags.init_options("cpu", {xla_flags.OPT_OUT: "0"}) == {}
    line = xla_flags.describe({}, {}, init=xla_flags.init_options("cpu", {}))
    assert line.endswith("initialisation compiled with --xla_backend_optimization_level=0")


def test_the_setup_initialises_with_its_options_the_same_random_draws(monkeypatch):
    """The unoptimised initialisation program draws what the optimised one draws: the same values up to
    LLVM's floating-point contraction (last bit), for every parameter and BatchNorm statistic."""
    from bisenet_jax.benchmarks import train_speed
    from bisenet_jax.train import setup as setup_module

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    compiled_with = []
    real_compile = jax.stages.Lowered.compile

    def spy(self, compiler_options=None, **kwargs):
        compiled_with.append(compiler_options)
        return real_compile(self, compiler_options=compiler_options, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    config = train_speed.benchmark_config("bisenetv1_r18", 11, "float32", 2, 64, 64)
    setup = setup_module.create_train_setup(config, ignore_label=255)
    assert setup.init_options == {"xla_backend_optimization_level": 0}
    assert compiled_with == [{"xla_backend_optimization_level": 0}]  # the init program (the step compiles later)
    model = setup_module.build_model(config)
    init_rng, _ = jax.random.split(jax.random.PRNGKey(config.train.seed))
    optimised = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, 64, 64, 3)), train=False))(init_rng)
    got = {"params": setup.state.params, "batch_stats": setup.state.batch_stats}
    paths = jax.tree_util.tree_leaves_with_path(optimised)
    assert len(paths) == len(jax.tree_util.tree_leaves(got)) > 100
    for (path, want), have in zip(paths, jax.tree_util.tree_leaves(got)):
        scale = float(jnp.abs(want).max()) or 1.0
        assert float(jnp.abs(have - want).max()) <= 1e-6 * scale, jax.tree_util.keystr(path)


ZEN3_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
ZEN4_FLAGS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512vl\n"
ARM_FEATURES = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_cpu_has_avx512_reads_the_x86_flags_line():
    assert xla_flags.cpu_has_avx512(ZEN3_FLAGS) is False
    assert xla_flags.cpu_has_avx512(ZEN4_FLAGS) is True
    assert xla_flags.cpu_has_avx512(ARM_FEATURES) is None  # no x86 flags: not told
    assert xla_flags.cpu_has_avx512("flags : avx512fx avx2\n") is False  # a whole word, not a prefix
    assert xla_flags.cpu_has_avx512("") is None


def test_inference_options_only_on_a_cpu_without_avx512_never_over_a_users_flag_and_off_on_request(monkeypatch):
    want = {YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    assert xla_flags.inference_options("cpu", {}, avx512=False) == want
    assert xla_flags.inference_options("cpu", {}, avx512=True) == {}
    for told, expected in ((None, {}), (True, {}), (False, want)):  # by default, what this CPU's flags tell
        monkeypatch.setattr(xla_flags, "cpu_has_avx512", lambda cpuinfo=None, told=told: told)
        assert xla_flags.inference_options("cpu", {}) == expected
    assert xla_flags.inference_options("gpu", {}, avx512=False) == {}
    assert xla_flags.inference_options("tpu", {}, avx512=False) == {}
    assert xla_flags.inference_options("cpu", {"XLA_FLAGS": f"--{YNN}=dot"}, avx512=False) == {}
    assert xla_flags.inference_options("cpu", {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}, avx512=False) == want
    assert xla_flags.inference_options("cpu", {xla_flags.OPT_OUT: "0"}, avx512=False) == {}


def test_describe_names_the_inference_options():
    options = xla_flags.inference_options("cpu", {}, avx512=False)
    line = xla_flags.describe(xla_flags.train_step_options("cpu", {}), {}, inference=options)
    assert line.endswith(f"; inference compiled with --{YNN}=dot,reduce (an x86 CPU without AVX-512; "
                         "bisenet_jax/xla_flags.py)")
    assert "no inference options" in xla_flags.describe({}, {}, inference={})
    assert "inference" not in xla_flags.describe({}, {})
    off = xla_flags.describe_inference({}, {xla_flags.OPT_OUT: "0"})
    assert off == "inference options off (BISENET_XLA_DEFAULTS=0)"
