"""The CamVid benchmark: both sides end to end on a tiny CamVid, and the PyTorch recipe's parts against JAX's."""
from __future__ import annotations

import json
import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bisenet_jax.benchmarks import camvid, torch_reference  # noqa: E402
from bisenet_jax.train.losses import ohem_cross_entropy  # noqa: E402
from bisenet_jax.train.optim import warmup_poly_schedule  # noqa: E402

NUM_CLASSES = 11


def tiny_config(root, model="v1_r18"):
    """The real CPU-budget recipe with crops, batch and evaluation shrunk to seconds."""
    config = camvid.load_config(model, root)
    config.data.crop_size = (32, 32)
    config.data.num_threads = 1
    config.train.batch_size = 2
    config.train.num_steps = 40
    config.train.eval_every = 20  # two points on the learning curve, the last at the end
    config.train.log_every = 1
    config.train.progress_bar = False
    config.optimizer.warmup_steps = 2
    return config


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One PyTorch thread: with two, the tiny steps here take seconds each whenever another job keeps
    the cores busy (OpenMP threads wait for each other at every parallel region)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def both_sides(tiny_camvid, tmp_path_factory):
    """Both sides for 4 steps, weights saved at steps 2 and 4 and evaluated after training."""
    workdir = tmp_path_factory.mktemp("bench")
    result = camvid.run_benchmark(tiny_config(tiny_camvid), workdir, model="v1_r18", budget_minutes=30.0,
                                  sides=("jax", "torch"), steps=4, torch_threads=1, log=lambda _: None)
    return result, workdir


def test_both_sides_train_the_planned_steps_and_evaluate(both_sides):
    result, _ = both_sides
    for side in ("jax", "torch"):
        run = result[side]
        assert (run["step"], run["num_steps"], run["stop_reason"]) == (4, 4, "done")
        assert run["warmup_steps"] == 1 and run["curve_every"] == 2  # 40 -> 4 steps keeps 2 curve points
        assert 0.0 <= run["miou"] <= 1.0 and run["num_images"] == 3
        assert len(run["iou"]) == NUM_CLASSES == len(run["class_names"])
        assert np.asarray(run["confusion_matrix"]).sum() == 3 * 48 * 64 - 3 * 6 * 8  # every labelled val pixel
        assert [p["step"] for p in run["curve"]] == [2, 4]
        assert 0 < run["curve"][0]["minutes"] <= run["curve"][1]["minutes"] <= run["train_seconds"] / 60 + 1e-6
        assert run["curve"][-1]["val_miou"] == pytest.approx(run["miou"])


def test_results_json_holds_both_sides_and_the_report_prints_them(both_sides):
    result, workdir = both_sides
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["model"] == "v1_r18" and saved["budget_minutes"] == 30.0 and saved["num_val_images"] == 3
    assert saved["jax"]["miou"] == pytest.approx(result["jax"]["miou"])
    assert saved["torch"]["framework"] == "torch" and saved["torch"]["num_threads"] == 1
    assert all(0.0 <= saved[side]["others_cpu_percent"] <= 100.0 for side in ("jax", "torch"))
    report = camvid.format_report(result)
    assert "JAX (bisenet_jax)" in report and "PyTorch reference" in report
    assert f"{100 * result['torch']['miou']:.2f}" in report and "Bicyclist" in report
    assert re.search(r"steps done / planned +4 / 4 +4 / 4\n", report), report
    # Each side's final weights also on frames padded to multiples of 32 (the tiny val frames have 48 rows).
    assert all(0.0 <= saved[side]["padded_miou"] <= 1.0 and len(saved[side]["padded_iou"]) == NUM_CLASSES
               for side in ("jax", "torch"))
    padded_row = re.search(r"  padded to /32 \(%\) +([\d.]+) +([\d.]+)\n", report)
    assert padded_row and padded_row.groups() == (f"{100 * result['jax']['padded_miou']:.2f}",
                                                  f"{100 * result['torch']['padded_miou']:.2f}"), report
    # On the time clock the budget ends the run: the fitted count is what the schedule expected.
    on_time = {**result, **{side: {**result[side], "schedule_clock": "time"} for side in ("jax", "torch")}}
    assert "steps done / expected" in camvid.format_report(on_time)


def test_the_report_names_the_order_the_sides_ran_in(both_sides):
    result, _ = both_sides
    assert result["order"] == ["jax", "torch"]
    assert "ran JAX (bisenet_jax) then PyTorch reference" in camvid.format_report(result)
    reversed_order = {**result, "order": ["torch", "jax"]}
    assert "ran PyTorch reference then JAX (bisenet_jax)" in camvid.format_report(reversed_order)


def test_race_sides_orders_the_two_sides_and_refuses_contradictions():
    assert camvid.race_sides() == ("jax",)
    assert camvid.race_sides(compare_torch=True) == ("jax", "torch")
    assert camvid.race_sides(compare_torch=True, torch_first=True) == ("torch", "jax")
    assert camvid.race_sides(torch_only=True) == ("torch",)
    with pytest.raises(ValueError, match="add --compare-torch"):
        camvid.race_sides(torch_first=True)
    with pytest.raises(ValueError, match="--torch-only runs the PyTorch side alone"):
        camvid.race_sides(compare_torch=True, torch_only=True)


def test_torch_first_runs_the_pytorch_side_before_the_jax_side(tiny_camvid, tmp_path, monkeypatch):
    """The orchestration only (each side's run is replaced by a recorder): the calibrations and runs go in
    the order given, each side's calibration right before its own run, and the order is recorded."""
    calls = []

    def side_config(config, side, *args, **kwargs):
        calls.append(("calibrate", side))
        return config, None

    def fake_run(side):
        def run(config, workdir, *args, **kwargs):
            calls.append(("run", side))
            return {"framework": side, "load_average_before": [0.0, 0.0, 0.0]}
        return run

    monkeypatch.setattr(camvid, "_side_config", side_config)
    monkeypatch.setattr(camvid, "run_jax", fake_run("jax"))
    monkeypatch.setattr(camvid, "run_torch", fake_run("torch"))
    result = camvid.run_benchmark(tiny_config(tiny_camvid), tmp_path / "race", sides=camvid.race_sides(True, False, True),
                                  log=lambda _: None)
    assert calls == [("calibrate", "torch"), ("run", "torch"), ("calibrate", "jax"), ("run", "jax")]
    assert result["order"] == ["torch", "jax"]
    assert json.loads((tmp_path / "race" / "results.json").read_text())["order"] == ["torch", "jax"]
    with pytest.raises(ValueError, match="names a side twice"):
        camvid.run_benchmark(tiny_config(tiny_camvid), tmp_path / "twice", sides=("jax", "jax"))


def test_a_busy_machine_is_flagged_in_the_report():
    result = {"environment": {"cpus": 2}, "torch": {"load_average_before": [3.5, 3.0, 2.0]},
              "jax": {"load_average_before": [0.4, 0.3, 0.2]}}
    warning = camvid.busy_machine_warning(result)
    assert "torch: 1-minute load average 3.5" in warning and "jax" not in warning and "idle machine" in warning
    result["torch"]["load_average_before"][0] = 0.9
    assert camvid.busy_machine_warning(result) == ""
    # The measured share of other processes during the run wins over the lagging load average.
    result["torch"].update(load_average_before=[1.8, 1.9, 2.0], others_cpu_percent=1.5)
    assert camvid.busy_machine_warning(result) == ""
    result["jax"]["others_cpu_percent"] = 35.0
    warning = camvid.busy_machine_warning(result)
    assert "jax: other processes used 35% of the CPUs" in warning and "torch" not in warning.split("(")[1].split(")")[0]


def test_a_used_workdir_is_refused(both_sides, tiny_camvid):
    _, workdir = both_sides
    with pytest.raises(FileExistsError, match="--overwrite"):
        camvid.run_benchmark(tiny_config(tiny_camvid), workdir, sides=("torch",), steps=2)


def test_torch_run_stops_at_the_budget_with_its_weights_saved(tiny_camvid, tmp_path):
    config = tiny_config(tiny_camvid).copy_and_resolve_references()
    config.train.time_budget_minutes = 1e-6  # over budget after the first step
    result = torch_reference.train(config, tmp_path, num_threads=1, log=lambda _: None)
    assert result["step"] == 1 and "budget" in result["stop_reason"] and list(result["checkpoints"]) == [1]
    model = torch_reference.load_checkpoint(config, result["checkpoints"][1])
    metrics = torch_reference.evaluate(model, config.data, "val", 1, NUM_CLASSES)
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["num_images"] == 3


def test_torch_evaluation_pads_frames_as_the_jax_evaluator_does(tiny_camvid):
    """``torch_reference.evaluate(size_divisor=32)`` against the JAX evaluator's ``eval.size_divisor`` on
    the same weights (converted), on val frames of 48x64 rows padded to 64x64; and the padding
    changes the result, so both really padded."""
    from bisenet_jax.convert.state_dict import from_torch_state_dict
    from bisenet_jax.data import create_eval_dataset
    from bisenet_jax.evaluation import evaluator
    from bisenet_jax.models import create_model

    config = tiny_config(tiny_camvid)
    torch.manual_seed(3)
    model = torch_reference.build_torch_model("bisenetv1_r18", NUM_CLASSES, aux_heads=False).eval()
    variables = from_torch_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, "bisenetv1_r18",
                                      aux_heads=False)
    flax_model = create_model("bisenetv1_r18", NUM_CLASSES, aux_heads=False)
    info = torch_reference.data_lib.get_dataset_info(config.data)
    results = {}
    for divisor in (0, 32):
        eval_config = evaluator.default_eval_config()
        eval_config.size_divisor = divisor
        jax_side = evaluator.evaluate(flax_model, variables, create_eval_dataset(config.data, "val", 1), NUM_CLASSES,
                                      info.ignore_label, eval_config, progress=False)
        torch_side = torch_reference.evaluate(model, config.data, "val", 1, NUM_CLASSES, size_divisor=divisor)
        assert torch_side["size_divisor"] == divisor
        np.testing.assert_allclose(np.asarray(torch_side["confusion_matrix"]), np.asarray(jax_side["confusion_matrix"]),
                                   atol=3)  # a few pixels may flip between two frameworks' float32 logits
        results[divisor] = np.asarray(torch_side["confusion_matrix"])
    assert np.abs(results[32] - results[0]).sum() > 20
    with pytest.raises(ValueError, match="size_divisor"):
        torch_reference.evaluate(model, config.data, "val", 1, NUM_CLASSES, size_divisor=-1)


def test_torch_loss_decreases_on_a_fixed_batch(tiny_camvid):
    config = tiny_config(tiny_camvid)
    torch.manual_seed(0)
    model = torch_reference.build_torch_model("bisenetv1_r18", NUM_CLASSES).train()
    optimizer = torch_reference.create_optimizer(model, config.optimizer)
    torch_reference.set_learning_rate(optimizer, 0.01)
    batch = next(torch_reference.data_lib.create_train_iterator(config.data, 4, seed=0))
    images, labels = torch_reference.to_torch(batch)
    losses = []
    for _ in range(10):
        logits, aux = model(images)
        loss, _ = torch_reference.segmentation_loss(logits, aux, labels, config.loss, 255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("scale", [1.0, 10.0])  # scale 10: few pixels below the threshold, the mean of the hard ones
def test_torch_ohem_equals_the_jax_loss(scale):
    rng = np.random.default_rng(0)
    logits = (scale * rng.normal(size=(2, 5, 8, 8))).astype(np.float32)  # NCHW
    labels = rng.integers(0, 5, (2, 8, 8))
    labels[0, :4] = 255
    expected = ohem_cross_entropy(jnp.asarray(logits.transpose(0, 2, 3, 1)), jnp.asarray(labels), 255, 0.7)
    got = torch_reference.ohem_cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), 255, 0.7)
    assert got.item() == pytest.approx(float(expected), rel=1e-5)


def test_torch_ohem_keeps_the_n_min_largest_when_few_pixels_are_hard():
    logits = torch.zeros(1, 2, 4, 8)
    logits[0, 0] = 10.0  # class 0 predicted everywhere with certainty
    labels = torch.zeros(1, 4, 8, dtype=torch.int64)
    labels[0, 0, :1] = 1  # one hard pixel (loss ~10) of 32: n_min = 2 keeps it and the largest easy one
    expected = (torch.nn.functional.cross_entropy(logits, labels, reduction="none").flatten().topk(2).values.mean())
    assert torch_reference.ohem_cross_entropy(logits, labels).item() == pytest.approx(expected.item())


def test_param_groups_put_weight_decay_on_conv_weights_and_10x_on_the_head_modules(tiny_camvid):
    config = tiny_config(tiny_camvid)
    model = torch_reference.build_torch_model("bisenetv1_r18", NUM_CLASSES)
    groups = {g["name"]: g for g in torch_reference.param_groups(model, config.optimizer)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert set(groups) == {"base/decay", "base/no_decay", "head/decay", "head/no_decay"}
    assert groups["head/decay"]["lr_scale"] == 10.0 and groups["base/decay"]["lr_scale"] == 1.0
    assert groups["base/no_decay"]["weight_decay"] == 0.0 and groups["base/decay"]["weight_decay"] == 5e-4
    assert all(p.ndim == 4 for p in groups["base/decay"]["params"])
    assert all(p.ndim < 4 for p in groups["base/no_decay"]["params"])
    heads = {names[id(p)].split(".")[0] for g in ("head/decay", "head/no_decay") for p in groups[g]["params"]}
    assert heads == {"ffm", "conv_out", "conv_out16", "conv_out32"}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_param_groups_without_a_head_multiplier_have_no_head_group(tiny_camvid):
    config = tiny_config(tiny_camvid, "v2")
    groups = torch_reference.param_groups(torch_reference.build_torch_model("bisenetv2", NUM_CLASSES), config.optimizer)
    assert {g["name"] for g in groups} == {"base/decay", "base/no_decay"}


def test_torch_learning_rates_are_the_jax_schedule(tiny_camvid):
    config = tiny_config(tiny_camvid).optimizer
    lrs = torch_reference.learning_rates(config, 40)
    schedule = warmup_poly_schedule(config.lr, 40, 2, config.warmup_start_factor, config.poly_power, config.warmup)
    np.testing.assert_allclose(lrs, [float(schedule(s)) for s in range(40)], rtol=1e-6)
    assert lrs[0] == pytest.approx(0.1 * config.lr) and lrs[2] == pytest.approx(config.lr * (1 - 0 / 38) ** 0.9)


def test_scale_schedule_keeps_warmup_and_curve_points_in_proportion(tiny_camvid):
    config = tiny_config(tiny_camvid)  # 40 steps, warmup 2, a curve point every 20
    scaled = camvid.scale_schedule(config, 400)
    assert (scaled.train.num_steps, scaled.optimizer.total_steps, scaled.optimizer.warmup_steps) == (400, 400, 20)
    assert scaled.train.eval_every == scaled.train.checkpoint_every == 200
    assert camvid.scale_schedule(config, 401).train.num_steps == 400  # the last step is a curve point
    assert config.train.num_steps == 40  # a copy


def test_fit_num_steps_spends_the_budget_left_after_compilation(tiny_camvid):
    calibration = {"step_seconds": 2.0, "startup_seconds": 30.0}
    assert camvid.fit_num_steps(calibration, budget_minutes=10.0) == math.floor(camvid.SAFETY * (600 - 30) / 2.0)
    with pytest.raises(ValueError, match="budget"):
        camvid.fit_num_steps(calibration, budget_minutes=0.5)


def test_calibration_reads_the_median_whole_window_after_the_warmup_from_the_loops_log():
    # A JAX loop's log, batch 8, windows of 10 steps: the compile (30 s) logged at step 1, windows before
    # the 40 warm-up steps slow (a heap still growing), one busy window (step 60, 4 s per step) and a
    # final partial window (step 85, the save). The step time is the median whole window after the warm-up.
    records = [{"step": 1, "time": 0.0, "train/compile_seconds": 30.0}]
    seconds = {10: 2.0, 20: 2.0, 30: 1.5, 40: 1.5, 50: 1.0, 60: 4.0, 70: 1.2, 80: 1.1, 85: 9.0}
    records += [{"step": step, "time": 0.0, "train/loss": 1.0, "train/images_per_second": 8 / s}
                for step, s in seconds.items()]
    result = camvid.calibration_from_records(records, batch_size=8, warmup_steps=40)
    assert result["step_seconds_each"] == pytest.approx([1.0, 4.0, 1.2, 1.1])
    assert result["step_seconds"] == pytest.approx(1.15) and result["step_seconds_mean"] == pytest.approx(1.825)
    assert result["startup_seconds"] == 30.0 and result["calibration_steps"] == 40
    # PyTorch's loop logs no compile: the startup is the first window's excess over as many steady steps.
    torch_records = [r for r in records if "train/compile_seconds" not in r]
    torch_records[0] = {**torch_records[0], "train/images_per_second": 10 * 8 / (10 * 1.15 + 3.0)}
    assert camvid.calibration_from_records(torch_records, 8, 40)["startup_seconds"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no whole window of 10 logged steps after the 80 warm-up steps"):
        camvid.calibration_from_records(records, 8, warmup_steps=80)


def test_calibration_config_runs_the_warmup_and_timed_steps_with_a_record_per_window(tiny_camvid):
    config = camvid.calibration_config(tiny_config(tiny_camvid), warmup_steps=40, steps=40)
    assert (config.train.num_steps, config.optimizer.total_steps, config.train.log_every) == (80, 80, 10)
    assert (config.train.eval_every, config.train.checkpoint_every, config.train.time_budget_minutes) == (-1, 80, 0.0)
    with pytest.raises(ValueError, match="steps >= window"):
        camvid.calibration_config(tiny_config(tiny_camvid), warmup_steps=40, steps=5)


@pytest.mark.parametrize("side", ["jax", "torch"])
def test_calibration_runs_the_sides_own_training_loop(tiny_camvid, side, monkeypatch):
    from bisenet_jax.train import loop

    calls = []
    for module, name in ((loop, "train_and_evaluate"), (torch_reference, "train")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    config = tiny_config(tiny_camvid)
    result = camvid.calibrate(side, config, steps=20, warmup_steps=10, torch_threads=1)
    assert calls == [{"jax": "train_and_evaluate", "torch": "train"}[side]]  # that side's loop, once
    assert result["calibration_steps"] == 20 and len(result["step_seconds_each"]) == 2  # windows ending at 20, 30
    assert 0.0 < min(result["step_seconds_each"]) <= result["step_seconds"] <= max(result["step_seconds_each"])
    assert result["startup_seconds"] >= 0.0 and result["cpu_step_seconds"] > 0.0
    if side == "jax":  # the loop logged its compilation, which takes longer than a tiny step
        assert result["startup_seconds"] > result["step_seconds"]
    with pytest.raises(ValueError, match="side must be 'jax' or 'torch'"):
        camvid.calibrate("tf", config)


def test_seed_sweep_runs_each_seed_in_its_own_folder_and_reports_the_spread(tiny_camvid, tmp_path, monkeypatch):
    seen = []

    def fake_run(config, workdir, **options):
        seen.append((config.train.seed, workdir.name, options["sides"]))
        miou = {0: 0.40, 1: 0.44, 2: 0.39}[config.train.seed]
        return {"jax": {"miou": miou}, "torch": {"miou": miou - 0.01}}

    monkeypatch.setattr(camvid, "run_benchmark", fake_run)
    config = tiny_config(tiny_camvid)
    result = camvid.run_seeds(config, tmp_path, [0, 1, 2], sides=("jax", "torch"))
    assert seen == [(0, "seed_0", ("jax", "torch")), (1, "seed_1", ("jax", "torch")), (2, "seed_2", ("jax", "torch"))]
    assert config.train.seed == 0  # the caller's config is not changed
    jax_spread = result["spread"]["jax"]
    assert jax_spread["mean"] == pytest.approx(0.41)
    assert jax_spread["std"] == pytest.approx(np.std([0.40, 0.44, 0.39], ddof=1))
    assert (jax_spread["min"], jax_spread["max"]) == (0.39, 0.44)
    assert result["spread"]["torch"]["mean"] == pytest.approx(0.40)
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and saved["spread"]["jax"]["max"] == 0.44
    report = camvid.format_seed_spread(result["spread"])
    assert "jax val mIoU over 3 seeds: mean 41.00, std 2.65 points, min 39.00, max 44.00" in report


def test_seed_sweep_refuses_repeated_seeds(tiny_camvid, tmp_path):
    with pytest.raises(ValueError, match="distinct seeds"):
        camvid.run_seeds(tiny_config(tiny_camvid), tmp_path, [1, 1])


def test_same_init_gives_both_sides_the_reference_initialisation_of_the_seed(tiny_camvid, tmp_path, monkeypatch):
    """``same_init``: ``workdir/init.pth`` holds the PyTorch reference's initialisation with the recipe's seed
    and both sides' configs start from it (``train.init_checkpoint``); the caller's config is unchanged."""
    seen = {}

    def fake_run(side):
        def run(config, workdir, *args):
            seen[side] = config.train.init_checkpoint
            return {"load_average_before": [0.0, 0.0, 0.0]}
        return run

    monkeypatch.setattr(camvid, "run_jax", fake_run("jax"))
    monkeypatch.setattr(camvid, "run_torch", fake_run("torch"))
    config = tiny_config(tiny_camvid)
    config.train.seed = 3
    result = camvid.run_benchmark(config, tmp_path / "race", sides=("jax", "torch"), steps=4, same_init=True,
                                  log=lambda _: None)
    path = tmp_path / "race" / "init.pth"
    assert seen == {"jax": str(path), "torch": str(path)} and result["init_checkpoint"] == str(path)
    assert config.train.init_checkpoint == ""
    saved = torch.load(path, weights_only=True)
    torch.manual_seed(3)
    fresh = torch_reference.reference_model(config).state_dict()
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[k], fresh[k]) for k in fresh)
    torch.manual_seed(4)  # another seed draws other weights: the file is the seed's draw, not any draw
    other = torch_reference.reference_model(config).state_dict()
    assert not all(torch.equal(saved[k], other[k]) for k in other)
    # The reference loads it into a model of another draw: every weight (and statistic) becomes the file's.
    model = torch_reference.reference_model(config)
    torch_reference.load_initial_weights(model, path)
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    # A run without same_init records no shared start.
    assert camvid.run_benchmark(config, tmp_path / "plain", sides=("torch",), steps=4,
                                log=lambda _: None)["init_checkpoint"] == ""


def test_same_init_is_refused_over_an_init_checkpoint_and_the_reference_refuses_foreign_weights(tiny_camvid, tmp_path):
    config = tiny_config(tiny_camvid)
    config.train.init_checkpoint = "/some/model.pth"
    with pytest.raises(ValueError, match="already starts from train.init_checkpoint='/some/model.pth'"):
        camvid.run_benchmark(config, tmp_path / "race", sides=("jax", "torch"), steps=4, same_init=True)
    # A run with the PyTorch side refuses a start it cannot load before the JAX side trains (and nothing is written).
    config.train.init_checkpoint = str(tmp_path / "jax_workdir")
    with pytest.raises(ValueError, match="jax_workdir'.*PyTorch file .*only"):
        camvid.run_benchmark(config, tmp_path / "race", sides=("jax", "torch"), steps=4)
    assert not (tmp_path / "race").exists()
    model = torch_reference.reference_model(tiny_config(tiny_camvid))
    with pytest.raises(ValueError, match="PyTorch file .*only"):
        torch_reference.load_initial_weights(model, tmp_path / "workdir_of_a_jax_run")
    other_classes = tiny_config(tiny_camvid)
    other_classes.model.num_classes = 5
    torch.save(torch_reference.reference_model(other_classes).state_dict(), tmp_path / "five.pth")
    with pytest.raises(ValueError, match="five.pth: not the weights of the reference's .* with these classes"):
        torch_reference.load_initial_weights(model, tmp_path / "five.pth")


def test_the_torch_loop_starts_from_its_init_checkpoint(tiny_camvid, tmp_path):
    """``train.init_checkpoint`` in the reference loop: a run whose learning rate is zero ends with the
    file's weights (and statistics moved by its one step), not with its own seed's draw."""
    config = tiny_config(tiny_camvid).copy_and_resolve_references()
    config.train.seed = 5
    torch.manual_seed(9)
    start = torch_reference.reference_model(config).state_dict()
    torch.save(start, tmp_path / "start.pth")
    config.train.init_checkpoint = str(tmp_path / "start.pth")
    config.train.num_steps, config.optimizer.lr, config.optimizer.weight_decay = 1, 0.0, 0.0
    config.optimizer.warmup_steps = 0
    lines = []
    result = torch_reference.train(config, tmp_path / "run", num_threads=1, log=lines.append)
    assert any(f"initialised from {tmp_path / 'start.pth'}" in line for line in lines)
    trained = torch.load(result["checkpoints"][1], weights_only=True)
    weights = [k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(trained[k], start[k]) for k in weights)


def test_torch_records_average_the_loss_and_its_terms_over_the_steps_since_the_last(tiny_camvid, tmp_path,
                                                                                   monkeypatch):
    """As the JAX loop's: each record's loss and loss terms are means over its window of steps, so the
    terms add up to the loss (a record once paired the window's mean loss with its last step's terms)."""
    config = tiny_config(tiny_camvid).copy_and_resolve_references()
    config.train.num_steps, config.train.log_every = 6, 3
    config.train.eval_every = 6
    returned = []
    real_step = torch_reference.train_step

    def recording_step(*args, **kwargs):
        returned.append(real_step(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(torch_reference, "train_step", recording_step)
    torch_reference.train(config, tmp_path, num_threads=1, log=lambda _: None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in records] == [3, 6] and len(returned) == 6
    weight = config.loss.aux_weight
    for record, window in zip(records, (returned[:3], returned[3:])):
        np.testing.assert_allclose(record["train/loss"], np.mean([loss for loss, _ in window]), rtol=1e-6)
        for key in ("loss_main", "loss_aux1", "loss_aux2"):
            np.testing.assert_allclose(record[f"train/{key}"], np.mean([terms[key] for _, terms in window]), rtol=1e-6)
        terms_sum = record["train/loss_main"] + weight * (record["train/loss_aux1"] + record["train/loss_aux2"])
        np.testing.assert_allclose(record["train/loss"], terms_sum, rtol=1e-5)


def test_torch_time_clock_follows_the_budget_until_it_ends(tiny_camvid, tmp_path, monkeypatch):
    """A fake wall clock that each PyTorch step advances by budget / 6: positions 0, 1, ... so the rates
    are the JAX schedule's over 6 steps, and the budget, not the step cap, ends the run at the seventh."""
    import functools

    from bisenet_jax.train import optim

    config = tiny_config(tiny_camvid).copy_and_resolve_references()
    config.train.num_steps, config.optimizer.total_steps = 40, 6
    config.train.time_budget_minutes = 0.5
    config.optimizer.schedule_clock = "time"
    fake = {"now": 50.0}
    real_step = torch_reference.train_step

    def advancing_step(*args, **kwargs):
        fake["now"] += 30.0 / 6
        return real_step(*args, **kwargs)

    monkeypatch.setattr(torch_reference, "train_step", advancing_step)
    monkeypatch.setattr(torch_reference, "BudgetClock", functools.partial(optim.BudgetClock, now=lambda: fake["now"]))
    result = torch_reference.train(config, tmp_path, num_threads=1, log=lambda _: None)
    assert result["step"] == 7 and "budget" in result["stop_reason"] and 7 in result["checkpoints"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["train/lr"] for r in records if "train/lr" in r]
    schedule = warmup_poly_schedule(config.optimizer.lr, 6, 2, config.optimizer.warmup_start_factor,
                                    config.optimizer.poly_power, config.optimizer.warmup)
    np.testing.assert_allclose(lrs, [float(schedule(k)) for k in range(7)], rtol=1e-6)
    assert lrs[-1] == 0.0


def test_time_clock_race_fits_the_schedule_and_lets_the_budget_end_the_run(tiny_camvid, monkeypatch):
    seen = {}

    def fake_calibrate(side, config, steps, torch_threads=0):
        seen["calibration_config"] = camvid.calibration_config(config, 10, steps)
        return {"step_seconds": 2.0, "startup_seconds": 30.0, "cpu_step_seconds": 2.0}

    monkeypatch.setattr(camvid, "calibrate", fake_calibrate)
    config = tiny_config(tiny_camvid)
    side_config, _ = camvid._side_config(config, "jax", 10.0, "fit", 20, 1, lambda _: None, "time")
    fitted = camvid.scale_schedule(config, camvid.fit_num_steps({"step_seconds": 2.0, "startup_seconds": 30.0}, 10.0))
    assert side_config.optimizer.schedule_clock == "time" and side_config.train.time_budget_minutes == 10.0
    assert side_config.optimizer.total_steps == fitted.optimizer.total_steps  # the schedule's steps: the fit
    assert side_config.train.num_steps == camvid.TIME_CLOCK_STEP_CAP * fitted.optimizer.total_steps  # a cap
    assert side_config.optimizer.warmup_steps == fitted.optimizer.warmup_steps
    # The calibration runs the race's loop (time clock) under a budget it never reaches.
    calibration = seen["calibration_config"]
    assert calibration.optimizer.schedule_clock == "time" and calibration.train.time_budget_minutes > 1e5
    with pytest.raises(ValueError, match="schedule_clock='days'"):
        camvid.run_benchmark(config, "unused", schedule_clock="days")
