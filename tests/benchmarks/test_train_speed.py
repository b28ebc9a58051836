"""The train-step benchmark runs both frameworks and reports consistent fields (no timing asserts)."""
from __future__ import annotations

import numpy as np
import pytest

from bisenet_jax.benchmarks import train_speed


def test_jax_and_torch_train_speed_report_the_protocol_fields():
    pytest.importorskip("torch")
    jax_result = train_speed.jax_train_speed("bisenetv1_x39", 2, 64, 64, num_classes=3, warmup=1, steps=2)
    torch_result = train_speed.torch_train_speed("bisenetv1_x39", 2, 64, 64, num_classes=3, warmup=1, steps=2)
    for r, framework in ((jax_result, "jax"), (torch_result, "torch")):
        assert r["framework"] == framework and r["steps"] == 2 and (r["height"], r["width"]) == (64, 64)
        assert 0 < r["step_seconds_min"] <= r["step_seconds_median"] <= r["step_seconds_max"]
        assert r["images_per_second"] == pytest.approx(2 / r["step_seconds_median"])
    assert jax_result["compile_seconds"] > 0


class _FakeMachine:
    """A clock and steps whose cost is a fixed per-side time scaled by the machine's speed, which drops
    by 30% in stretches: the ``slow`` windows of ``2 * steps_per_round`` timed steps, counted over both
    sides in the order they run (what a drifting VM does to a comparison). Rounds that alternate the
    sides put both in the same window; timing one side's rounds after the other's would not."""

    def __init__(self, costs, slow, steps_per_round):
        self.now, self.calls, self.costs = 0.0, [], costs
        self.slow, self.window = set(slow), 2 * steps_per_round
        self.timed = 0

    def clock(self):
        return self.now

    def step(self, side, warmup):
        def run():
            self.calls.append(side)
            if len(self.calls) <= warmup * len(self.costs):  # the untimed warm-up steps come first
                self.now += 100.0
                return
            slow = self.timed // self.window in self.slow
            self.timed += 1
            self.now += self.costs[side] * (1.3 if slow else 1.0)
        return run


def test_alternate_orders_the_sides_and_pairs_each_round_under_the_same_conditions():
    fake = _FakeMachine({"jax": 0.5, "torch": 0.6}, slow=[1, 2], steps_per_round=3)
    out = train_speed.alternate({"jax": fake.step("jax", 2), "torch": fake.step("torch", 2)}, warmup=2,
                                steps_per_round=3, rounds=4, clock=fake.clock)
    assert fake.calls[:4] == ["jax", "jax", "torch", "torch"]  # each side's warm-up, untimed
    assert out["orders"] == [["jax", "torch"], ["torch", "jax"], ["jax", "torch"], ["torch", "jax"]]
    timed_calls = fake.calls[4:]
    assert timed_calls[:6] == ["jax"] * 3 + ["torch"] * 3 and timed_calls[6:12] == ["torch"] * 3 + ["jax"] * 3
    assert out["round_medians"]["jax"] == pytest.approx([0.5, 0.65, 0.65, 0.5])
    assert out["round_medians"]["torch"] == pytest.approx([0.6, 0.78, 0.78, 0.6])
    assert all(len(row) == 3 for row in out["times"]["jax"]) and len(out["times"]["torch"]) == 4

    summary = train_speed.ratio_summary(out)
    # Every round compares the two sides at the same machine speed: the true 1.2x in each of them.
    assert summary["ratio_each_round"] == pytest.approx([1.2] * 4)
    assert summary["ratio_round_min"] == pytest.approx(1.2) and summary["ratio_round_max"] == pytest.approx(1.2)
    assert summary["spread"] == pytest.approx({"jax": 1.3, "torch": 1.3})
    assert summary["ratio"] == pytest.approx(np.median([0.6] * 6 + [0.78] * 6) / np.median([0.5] * 6 + [0.65] * 6))


def test_rounds_of_one_side_after_the_other_would_not_pair_the_conditions():
    """The fake machine itself: timing all of one side's steps before the other's (no rounds) puts the
    slow stretch on one side only, and the comparison reads 1.2 x 1.3 instead of 1.2."""
    fake = _FakeMachine({"jax": 0.5, "torch": 0.6}, slow=[0], steps_per_round=3)
    one_block = train_speed.alternate({"jax": fake.step("jax", 0)}, warmup=0, steps_per_round=6, rounds=1,
                                      clock=fake.clock)
    other_block = train_speed.alternate({"torch": fake.step("torch", 0)}, warmup=0, steps_per_round=6, rounds=1,
                                        clock=fake.clock)
    assert np.median(other_block["times"]["torch"]) / np.median(one_block["times"]["jax"]) == pytest.approx(1.2 / 1.3)


def test_alternate_rejects_empty_or_negative_protocols():
    with pytest.raises(ValueError, match="rounds=0"):
        train_speed.alternate({"jax": lambda: None}, warmup=1, steps_per_round=2, rounds=0)
    with pytest.raises(ValueError, match="steps_per_round=0"):
        train_speed.alternate({"jax": lambda: None}, warmup=1, steps_per_round=0, rounds=2)
    with pytest.raises(ValueError, match="sides=\\[\\]"):
        train_speed.alternate({}, warmup=1, steps_per_round=1, rounds=1)


def test_alternating_train_speed_times_both_real_steps(capsys):
    pytest.importorskip("torch")
    out = train_speed.alternating_train_speed("bisenetv1_x39", 2, 64, 64, num_classes=3, warmup=1, steps=2,
                                              rounds=2)
    jax_row, torch_row = out["results"]
    assert (jax_row["framework"], torch_row["framework"]) == ("jax", "torch")
    assert jax_row["steps"] == torch_row["steps"] == 4 and jax_row["compile_seconds"] > 0
    assert out["rounds"]["orders"] == [["jax", "torch"], ["torch", "jax"]]
    summary = out["summary"]
    medians = {side: np.median(np.ravel(out["rounds"]["times"][side])) for side in ("jax", "torch")}
    assert summary["ratio"] == pytest.approx(medians["torch"] / medians["jax"])
    per_round = [np.median(t) / np.median(j) for j, t in zip(out["rounds"]["times"]["jax"],
                                                            out["rounds"]["times"]["torch"])]
    assert summary["ratio_each_round"] == pytest.approx(per_round)
    assert jax_row["images_per_second"] == pytest.approx(2 / medians["jax"])
    assert torch_row["images_per_second"] == pytest.approx(2 / medians["torch"])


def _fake_alternating(calls):
    """A stand-in for ``alternating_train_speed``: :func:`train_speed.alternate` on a :class:`_FakeMachine`
    (JAX 0.5 s, PyTorch 0.6 s a step, one slow stretch), recording each call's rounds, warm-up and steps."""
    def fake_alternating(model, batch_size, height, width, *, num_classes, dtype, warmup, steps, rounds):
        calls.append(("alternating", rounds, warmup, steps))
        fake = _FakeMachine({"jax": 0.5, "torch": 0.6}, slow=[1], steps_per_round=steps)
        out = train_speed.alternate({"jax": fake.step("jax", warmup), "torch": fake.step("torch", warmup)},
                                    warmup, steps, rounds, clock=fake.clock)
        rows = [{**train_speed._result(side, model, batch_size, height, width, dtype, np.ravel(out["times"][side]),
                                       1.0 if side == "jax" else 0.0), "xla_options": "XLA_FLAGS: (none)"}
                for side in ("jax", "torch")]
        return {"results": rows, "rounds": out, "summary": train_speed.ratio_summary(out)}

    return fake_alternating


def test_script_alternate_prints_every_round_and_the_paired_ratio(monkeypatch, capsys, tmp_path, load_script):
    pytest.importorskip("torch")  # the protocol line asks PyTorch for its device
    monkeypatch.setattr(train_speed, "alternating_train_speed", _fake_alternating([]))
    script = load_script("benchmark_train")
    json_path = tmp_path / "alt.json"
    assert script.main(["--model", "bisenetv2", "--batch-size", "2", "--crop", "32x32", "--warmup", "1",
                        "--steps", "2", "--alternate", "3", "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "3 rounds of 2 timed steps per side, JAX first in even rounds" in out
    round_lines = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [line[:2] for line in round_lines] == [["0", "jax"], ["1", "torch"], ["2", "jax"]]
    assert [line[-1] for line in round_lines] == ["1.20x"] * 3
    assert "1.20x over all timed steps; per round median 1.20x, 1.20-1.20x" in out
    import json

    saved = json.loads(json_path.read_text())
    assert saved["rounds"]["orders"] == [["jax", "torch"], ["torch", "jax"], ["jax", "torch"]]


def _record_benchmarks(monkeypatch):
    """Stand-ins for the three builders the script may call: each records its call and returns rows."""
    calls = []

    def row(side, model, batch_size, height, width, dtype, seconds):
        return {**train_speed._result(side, model, batch_size, height, width, dtype, [seconds] * 2,
                                      1.0 if side == "jax" else 0.0), "xla_options": "XLA_FLAGS: (none)"}

    def fake_jax(model, batch_size, height, width, *, num_classes, dtype, warmup, steps):
        calls.append(("jax", warmup, steps))
        return row("jax", model, batch_size, height, width, dtype, 0.5)

    def fake_torch(model, batch_size, height, width, *, num_classes, warmup, steps, precision):
        calls.append(("torch", warmup, steps))
        return row("torch", model, batch_size, height, width, precision, 0.6)

    monkeypatch.setattr(train_speed, "alternating_train_speed", _fake_alternating(calls))
    monkeypatch.setattr(train_speed, "jax_train_speed", fake_jax)
    monkeypatch.setattr(train_speed, "torch_train_speed", fake_torch)
    return calls


@pytest.mark.parametrize("extra, expected_calls, protocol", [
    ([], [("jax", 2, 5)], "2 warm-up + 5 timed steps, median"),
    (["--compare-torch"], [("alternating", 6, 2, 5)],
     "2 warm-up steps each, then 6 rounds of 5 timed steps per side, JAX first in even rounds"),
    (["--compare-torch", "--alternate", "3"], [("alternating", 3, 2, 5)], "then 3 rounds of 5 timed steps"),
    (["--compare-torch", "--alternate", "0"], [("jax", 2, 5), ("torch", 2, 5)], "2 warm-up + 5 timed steps, median"),
])
def test_compare_torch_times_the_sides_in_alternating_rounds_unless_told_otherwise(extra, expected_calls, protocol,
                                                                                   monkeypatch, capsys, tmp_path,
                                                                                   load_script):
    pytest.importorskip("torch")  # the protocol line asks PyTorch for its device
    calls = _record_benchmarks(monkeypatch)
    json_path = tmp_path / "out.json"
    assert load_script("benchmark_train").main(["--model", "bisenetv2", "--batch-size", "2", "--crop", "32x32",
                                                *extra, "--json", str(json_path)]) == 0
    assert calls == expected_calls
    import json

    saved = json.loads(json_path.read_text())
    if expected_calls[0][0] == "alternating":  # rounds: an object with the rows, the rounds and the ratios
        assert set(saved) == {"results", "rounds", "summary"} and len(saved["rounds"]["orders"]) == expected_calls[0][1]
    else:  # one block: the list of rows that scripts/gpu_benchmark.py reads
        assert [row["framework"] for row in saved] == [side for side, *_ in expected_calls]
    out = capsys.readouterr().out
    assert protocol in out
    if len(expected_calls) == 2:
        assert "JAX / PyTorch images/s: 1.20x vs torch" in out
    elif expected_calls[0][0] == "alternating":
        assert "1.20x over all timed steps" in out


@pytest.mark.parametrize("argv, message", [
    (["--alternate", "2", "--torch-compile"], "--alternate does not combine with --torch-compile"),
    (["--alternate", "-1"], "--alternate -1: ROUNDS must be >= 0"),
    (["--alternate", "2", "--steps", "0"], "--steps 0 --warmup 2: expected --steps >= 1"),
])
def test_script_refuses_bad_alternating_options_before_building_anything(argv, message, capsys, monkeypatch,
                                                                         load_script):
    def must_not_run(*args, **kwargs):
        raise AssertionError("a benchmark started despite bad options")

    monkeypatch.setattr(train_speed, "alternating_train_speed", must_not_run)
    monkeypatch.setattr(train_speed, "jax_train_speed", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        load_script("benchmark_train").main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
