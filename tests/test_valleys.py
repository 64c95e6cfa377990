"""Generated curved valleys (issue 10, twenty-second round): the meta-training family that
brings bending narrow valleys into ``default``'s mixture, kept apart from the held-out
Rosenbrock function and the stability panel."""

import math

import pytest
import torch
from benchmark_scripts import load_benchmark

from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.meta.presets import DEFAULT_NET
from learned_optim.tasks import CurvedValleyFamily, get_task_family


def reference_loss(valleys, theta):
    """The module docstring's formula, written again in plain floats."""
    total = 0.0
    for j in range(len(valleys.minimum_x)):
        x, y = float(theta[2 * j]), float(theta[2 * j + 1])
        floor = (float(valleys.bend[j]) * math.tanh(float(valleys.sharpness[j])
                                                    * (x - float(valleys.bend_at[j])))
                 + float(valleys.bump[j]) * math.exp(-(x - float(valleys.bump_at[j])) ** 2))
        total += (x - float(valleys.minimum_x[j])) ** 2 + float(valleys.wall[j]) * (y - floor) ** 2
    return total


def test_the_loss_is_the_documented_formula_with_minimum_zero_on_the_floor():
    family = CurvedValleyFamily()
    for seed in range(6):
        task = family.sample(seed)
        valleys = task.loss_fn  # a, A, omega, s, B, b, w per valley
        start = task.params["xy"].double()
        assert task.loss({"xy": start}, 0).item() == pytest.approx(
            reference_loss(valleys, start), rel=1e-12)
        x = valleys.minimum_x
        minimum = torch.stack([x, valleys.floor(x)], 1).reshape(-1)
        assert task.loss({"xy": minimum}, 0).item() == 0.0
        # a point off the floor costs the wall: w * distance^2
        off = minimum.clone()
        off[1] += 0.1
        assert task.loss({"xy": off}, 0).item() == pytest.approx(
            float(valleys.wall[0]) * 0.01, rel=1e-9)


def test_coefficients_and_starts_lie_in_their_documented_ranges():
    family = CurvedValleyFamily()
    counts = set()
    for seed in range(60):
        task = family.sample(seed)
        valleys = task.loss_fn  # a, A, omega, s, B, b, w per valley
        k = len(valleys.minimum_x)
        counts.add(k)
        assert task.params["xy"].shape == (2 * k,) and task.params["xy"].dtype == torch.float32
        assert ((valleys.wall >= 10) & (valleys.wall <= 1000)).all()
        assert ((valleys.bend.abs() >= 0.5) & (valleys.bend.abs() <= 2)).all()
        assert ((valleys.sharpness >= 0.5 - 1e-12) & (valleys.sharpness <= 3 + 1e-12)).all()
        x, y = task.params["xy"].double()[0::2], task.params["xy"].double()[1::2]
        along = (x - valleys.minimum_x).abs()
        assert ((along >= 2 - 1e-6) & (along <= 4 + 1e-6)).all()
        assert ((y - valleys.floor(x)).abs() <= 1 + 1e-5).all()
    assert counts == {1, 2, 4}


def test_tasks_are_seeded():
    family = CurvedValleyFamily()
    first, again, other = family.sample(7), family.sample(7), family.sample(8)
    assert torch.equal(first.params["xy"], again.params["xy"])
    assert first.loss(first.params, 0).item() == again.loss(again.params, 0).item()
    assert first.loss(first.params, 0).item() != other.loss(other.params, 0).item()


def test_adam_travels_the_valley_floor_to_the_minimum():
    task = CurvedValleyFamily(valleys=(2,)).sample(3)
    theta = task.params["xy"].clone().requires_grad_()
    optimizer = torch.optim.Adam([theta], lr=0.1)
    start = task.loss({"xy": theta}, 0).item()
    for step in range(800):
        optimizer.zero_grad()
        loss = task.loss({"xy": theta}, step)
        loss.backward()
        optimizer.step()
    assert math.isfinite(loss.item()) and loss.item() < 1e-3 * start


def test_float64_parameters_give_a_float64_loss():
    task = CurvedValleyFamily().sample(1)
    loss = task.loss({"xy": task.params["xy"].double()}, 0)
    assert loss.dtype == torch.float64


def test_bad_valley_counts_are_refused():
    for valleys in ((), (0, 2)):
        with pytest.raises(ValueError, match="valleys must be"):
            CurvedValleyFamily(valleys=valleys)


def test_valley_mixture_is_the_wide_mixture_plus_two_valley_members():
    wide = get_task_family("mixture-wide").describe()["members"]
    mixture = get_task_family("mixture-wide-valleys").describe()["members"]
    assert mixture[:len(wide)] == wide
    assert [member["name"] for member in mixture[len(wide):]] == ["curved-valley"] * 2
    assert mixture[-1]["valleys"] == [1, 2, 4]
    assert not any("evaluation_only" in member or member["name"] == "rosenbrock"
                   for member in mixture)


def test_wider_valley_mixture_is_the_wider_mixture_plus_three_valley_members():
    wider = get_task_family("mixture-wider").describe()["members"]
    mixture = get_task_family("mixture-wider-valleys").describe()["members"]
    assert mixture[:len(wider)] == wider
    assert [member["name"] for member in mixture[len(wider):]] == ["curved-valley"] * 3
    assert not any("evaluation_only" in member or member["name"] in
                   ("rosenbrock", "adding-rnn", "digits-autoencoder") for member in mixture)


def test_the_meta_trainer_trains_default_s_net_on_curved_valleys():
    config = MetaTrainConfig(epochs=1, tasks_per_epoch=2, validation_tasks=1, horizon=40,
                             net=DEFAULT_NET, meta_objective="log_loss")
    family = get_task_family("curved-valley")
    trainer = MetaTrainer(family, config, validation_family=family)
    before = [p.detach().clone() for p in trainer.nets["fc"].parameters()]
    bundle = trainer.train(progress=False)
    metrics = bundle.provenance["metrics"]
    assert math.isfinite(metrics["validation_final_loss"]) and metrics["skipped_meta_updates"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.nets["fc"].parameters()))



def test_last_epoch_weights_are_what_validation_scored_at_the_run_s_last_epoch(tmp_path,
                                                                             monkeypatch):
    """benchmarks/last_epoch_weights.py (the twenty-third round's probe): from a run's
    checkpoint, the averaged weights of its last epoch; they differ from the kept (best) ones
    unless the last epoch is the kept one."""
    module = load_benchmark("last_epoch_weights")
    fields = dict(epochs=2, tasks_per_epoch=2, validation_tasks=1, horizon=30, net=DEFAULT_NET,
                  meta_objective="log_loss", weight_average_decay=0.5, meta_lr=0.05)
    monkeypatch.setitem(module.VARIANTS, "tiny-valleys", ("curved-valley", "curved-valley",
                                                          fields))
    config = MetaTrainConfig(**{**fields, "seed": 3})  # keeps epoch 1 of 2
    family = get_task_family("curved-valley")
    trainer = MetaTrainer(family, config, validation_family=family, name="tiny-valleys",
                          checkpoint_dir=tmp_path)
    kept = trainer.train(progress=False)
    last = trainer.epoch_bundle()
    written = module.last_epoch_bundle("tiny-valleys", 3, tmp_path)
    assert kept.provenance["metrics"]["best_epoch"] == 1
    assert written.provenance["epoch_kept"] == 2
    assert written.fingerprint() == last.fingerprint() != kept.fingerprint()
    with pytest.raises(Exception, match="config|checkpoint"):
        module.last_epoch_bundle("tiny-valleys", 5, tmp_path)  # another seed's config


def test_floor_starts_put_that_share_of_starts_on_the_floor_and_change_nothing_else():
    """floor_starts = p: about p of the tasks start within 0.02 of their floor, at the x and
    on the valley they would have anyway; the others, and every task with p = 0, are the
    family's tasks without the option, bit for bit."""
    plain, none, half = (CurvedValleyFamily(), CurvedValleyFamily(floor_starts=0.0),
                         CurvedValleyFamily(floor_starts=0.5))
    on_floor = 0
    for seed in range(300):
        base, same, task = plain.sample(seed), none.sample(seed), half.sample(seed)
        assert torch.equal(base.params["xy"], same.params["xy"])
        assert torch.equal(base.params["xy"][0::2], task.params["xy"][0::2])
        assert torch.equal(base.loss_fn.wall, task.loss_fn.wall)
        if torch.equal(base.params["xy"], task.params["xy"]):
            continue
        on_floor += 1
        x, y = task.params["xy"].double()[0::2], task.params["xy"].double()[1::2]
        assert ((y - task.loss_fn.floor(x)).abs() <= 0.02 + 1e-6).all()
        base_y = base.params["xy"].double()[1::2]
        torch.testing.assert_close(y - task.loss_fn.floor(x),
                                   0.02 * (base_y - base.loss_fn.floor(x)), rtol=0, atol=1e-6)
    assert 120 <= on_floor <= 180  # 300 draws at p = 0.5: mean 150, sd 8.7
    assert half.describe()["floor_starts"] == 0.5 and "floor_starts" not in plain.describe()
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="floor_starts"):
            CurvedValleyFamily(floor_starts=bad)


def test_floor_valley_mixture_is_the_valley_mixture_with_floor_starting_valleys():
    valleys = get_task_family("mixture-wide-valleys").describe()["members"]
    mixture = get_task_family("mixture-wide-valleys-floor").describe()["members"]
    assert mixture[:-2] == valleys[:-2]
    assert [(m["name"], m["floor_starts"]) for m in mixture[-2:]] == [
        ("curved-valley-floor", 0.5)] * 2
    assert not any("evaluation_only" in member or member["name"] == "rosenbrock"
                   for member in mixture)
    variants = load_benchmark("default_variants").VARIANTS
    task, validation, config = variants[
        "adaptive-wide-valleys-floor-log-800-val1000-avg-nominal-hyper-b30"]
    assert (task, validation) == ("mixture-wide-valleys-floor", "digits-mlp-tanh-1000")
    assert config == variants["adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30"][2]
