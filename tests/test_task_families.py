"""The meta-training task families added for the ninth round of issue 10: recurrent models,
autoencoders on sample-image patches and regressions with an irreducible loss."""

import json
import math
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark

from learned_optim.evaluation.suites import SUITES
from learned_optim.tasks import (PatchAutoencoderFamily, TeacherRegressionFamily,
                                 TeacherRNNFamily, get_task_family)
from learned_optim.tasks.image_patches import grey_patches

ROOT = Path(__file__).resolve().parents[1]
NEW_FAMILIES = [TeacherRNNFamily, PatchAutoencoderFamily,
                lambda: get_task_family("teacher-regression-noisy")]


def adam_losses(task, steps=150, lr=1e-2):
    params = {name: value.clone().requires_grad_() for name, value in task.params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    losses = []
    for step in range(steps):
        loss = task.loss(params, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("make_family", NEW_FAMILIES)
def test_new_families_are_seeded_and_learnable(make_family):
    family = make_family()
    first, again, other = family.sample(3), family.sample(3), family.sample(4)
    for name, value in first.params.items():
        assert torch.equal(value, again.params[name]), name
    assert [torch.equal(a, b) for a, b in zip(first.sample_batch(5), again.sample_batch(5))] \
        == [True, True]
    assert not all(torch.equal(a, b) for a, b in zip(first.sample_batch(5),
                                                     other.sample_batch(5)))
    losses = adam_losses(first)
    assert all(torch.isfinite(torch.tensor(losses)))
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert end < 0.7 * start, (family.name, start, end)


def test_teacher_rnn_targets_depend_on_the_start_of_the_sequence():
    """A recurrent task: the target needs memory of the first input, not just the last."""
    family = TeacherRNNFamily()
    for seed in range(4):
        task = family.sample(seed)
        x, y = task.sample_batch(0)
        assert x.dim() == 3 and x.shape[1] in (4, 8, 12) and y.shape == (x.shape[0], 1)
        teacher = task.sample_batch.__closure__  # the teacher lives in the sampler's closure
        teachers = [c.cell_contents for c in teacher if isinstance(c.cell_contents,
                                                                   torch.nn.Module)]
        (teacher,) = teachers
        changed = x.clone()
        changed[:, 0] += 1.0
        with torch.no_grad():
            change = (teacher(changed) - teacher(x)).abs().mean() / teacher(x).std()
        assert change > 0.01, (seed, float(change))
        assert abs(float(y.mean())) < 1.0 and 0.3 < float(y.std()) < 3.0, seed


def test_patch_autoencoder_reconstructs_real_image_patches():
    patches = grey_patches(0, count=256)
    assert patches.shape == (256, 64)
    assert 0.0 <= float(patches.min()) and float(patches.max()) <= 1.0
    assert float(patches.std()) > 0.05  # not a flat crop
    assert torch.equal(patches, grey_patches(0, count=256))
    family = PatchAutoencoderFamily()
    codes = set()
    for seed in range(12):
        task = family.sample(seed)
        x, target = task.sample_batch(0)
        assert torch.equal(x, target)
        codes.add(task.params["encode.weight"].shape[0])
    # every code width is drawn, and never the held-out digits autoencoder's 16
    assert codes == {8, 24, 32}


def test_label_noise_scales_only_the_noise():
    """y = s (teacher(x) + sigma eps): the same seed at sigma 0.1, 0.5 and 1.0 differs by a
    multiple of one noise vector."""
    def targets(level):
        task = TeacherRegressionFamily(noise_levels=(level,)).sample(7)
        return task.sample_batch(0)[1]

    low, middle, high = targets(0.1), targets(0.5), targets(1.0)
    torch.testing.assert_close((high - low) / 0.9, (middle - low) / 0.4, rtol=1e-3,
                               atol=1e-3)
    assert float((high - low).abs().max()) > 0.1
    drawn = {TeacherRegressionFamily(noise_levels=(0.3, 1.0)).sample(seed).sample_batch(0)[1]
             .sum().item() for seed in range(3)}
    assert len(drawn) == 3
    with pytest.raises(ValueError, match="noise_levels"):
        TeacherRegressionFamily(noise_levels=())


def test_default_noise_leaves_existing_regressions_as_they_were():
    """The `default` bundle was meta-trained on these draws. Sums of the step-0 minibatch's
    targets printed by the code before noise_levels existed (commit 0d5cb0e)."""
    expected = {0: (18.05815840512514, 126.79524777676389),
                7: (8.154796928167343, 67.9041763073149)}
    for seed, (total, squares) in expected.items():
        y = TeacherRegressionFamily().sample(seed).sample_batch(0)[1].double()
        assert float(y.sum()) == pytest.approx(total, rel=1e-6)
        assert float(y.square().sum()) == pytest.approx(squares, rel=1e-6)


def test_wider_mixture_adds_recurrent_autoencoder_and_noisy_members():
    wide = get_task_family("mixture-wide").describe()["members"]
    wider = get_task_family("mixture-wider").describe()["members"]
    assert wider[:len(wide)] == wide
    added = {member["name"] for member in wider[len(wide):]}
    assert added == {"teacher-rnn", "patch-autoencoder", "teacher-regression-noisy"}
    assert not any("evaluation_only" in member for member in wider)


def test_validation_suite_has_the_ninth_round_rows():
    names = [row.name for row in SUITES["validation"]]
    assert names[-3:] == ["val-teacher-rnn", "val-patch-autoencoder", "val-teacher-noisy"]


def test_clipped_geometric_mean_caps_each_row():
    module = load_benchmark("summarize_validation")
    mean = module.clipped_geometric_mean
    assert mean([1.0, 4.0]) == pytest.approx(2.0)
    # 0.001 counts as 0.1: one deep win no longer outweighs a 5x loss
    assert mean([0.001, 5.0]) == pytest.approx((0.1 * 5.0) ** 0.5)
    assert mean([1e6]) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        mean([])


def test_rows_view_says_which_rows_a_zero_loss_optimizer_could_win(tmp_path):
    module = load_benchmark("summarize_validation")

    def adam(final, ci):
        return {"label": "Adam (tuned)", "final_loss": final, "final_ci": ci}

    # a zero-loss optimizer's paired differences are -A_i: it wins only if A's mean > its CI
    assert module.zero_loss_wins(adam(0.05, 0.01))
    assert not module.zero_loss_wins(adam(0.008, 0.0225))  # one stuck seed: the held-out wine
    assert not module.zero_loss_wins(adam(math.inf, math.nan))
    rows = [{"row": "spread", "learned_vs_tuned_adam": {"L": {"verdict": "tie"}},
             "optimizers": [adam(0.008, 0.0225), {"label": "L", "final_loss": 0.0001}]},
            {"row": "tight", "learned_vs_tuned_adam": {"L": {"verdict": "loses"}},
             "optimizers": [adam(0.05, 0.01), {"label": "L", "final_loss": 0.1}]}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": rows}))
    lines = module.row_lines([str(path)])
    assert lines[2] == "| spread | L | tie | 0.0125 | yes | **no** |"
    assert lines[3] == "| tight | L | loses | 2 | no | yes |"
    assert lines[-1].strip() == ("L: wins 0 / 2 rows; lower mean final loss on 1 / 2; "
                                 "a zero-loss optimizer would win 1 / 2")


def test_best_of_view_takes_per_row_the_best_verdict_and_the_smallest_ratio(tmp_path):
    module = load_benchmark("summarize_validation")

    def row(name, verdict, learned_loss):
        return {"row": name, "learned_vs_tuned_adam": {"L": {"verdict": verdict}},
                "optimizers": [{"label": "Adam (tuned)", "final_loss": 0.1, "final_ci": 0.01},
                               {"label": "L", "final_loss": learned_loss}]}

    paths = []
    for folder, rows in (("runA", [row("r1", "wins", 0.05), row("r2", "loses", 0.3)]),
                         ("runB", [row("r1", "tie", 0.02), row("r2", "tie", 0.15)])):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "results.json")
        paths[-1].write_text(json.dumps({"rows": rows}))
    lines = module.best_of_lines([str(p) for p in paths])
    assert lines[2:4] == ["| r1 | wins | runA/L | 0.2 | runB/L |",
                          "| r2 | tie | runB/L | 1.5 | runB/L |"]
    # the clipped geometric mean of 0.2 and 1.5 is sqrt(0.3)
    assert lines[-1].strip() == ("best of the learned optimizers, row by row: wins / ties / "
                                 "losses 1 / 1 / 0 of 2 rows; clipped geometric mean of the "
                                 "smallest ratios 0.548")


def test_against_tuned_adam_gives_the_ratio_of_means_and_the_paired_verdict():
    compare = load_benchmark("summarize_validation").against_tuned_adam
    adam = [1.0, 1.1, 0.9, 1.05, 0.95]
    lower = compare([0.5, 0.55, 0.45, 0.52, 0.48], adam)
    assert lower["ratio"] == pytest.approx(2.5 / 5.0)
    assert lower["verdict"] == "wins" and lower["final"] == [0.5, 0.55, 0.45, 0.52, 0.48]
    assert compare([2.0, 2.2, 1.8, 2.1, 1.9], adam)["verdict"] == "loses"
    # one seed far off either way: the paired CI spans 0
    mixed = compare([0.1, 1.1, 0.9, 1.05, 2.0], adam)
    assert mixed["verdict"] == "tie" and mixed["ratio"] == pytest.approx(5.15 / 5.0)


def test_selection_panel_runs_four_allowed_families_for_1000_steps():
    panel = get_task_family("selection-panel-1000")
    assert [m.name for m in panel.members] == [
        "digits-mlp-tanh-1000", "teacher-regression-noisy-1000", "patch-autoencoder-1000",
        "teacher-rnn-1000"]
    assert [m.horizon for m in panel.members] == [1000] * 4
    # task i comes from member i mod 4; none of them is evaluation-only data
    assert [panel.member(i).name for i in (0, 5, 10, 15)] == [m.name for m in panel.members]
    assert not any("evaluation_only" in m for m in panel.describe()["members"])
    assert isinstance(panel.members[1], TeacherRegressionFamily) \
        and panel.members[1].noise_levels == (0.3, 1.0)


def test_an_empty_panel_is_refused():
    from learned_optim.tasks import TaskPanel
    with pytest.raises(ValueError, match="at least one member"):
        TaskPanel([])


@pytest.mark.parametrize("script", ["score_epochs", "summarize_validation"])
def test_tuned_adam_lrs_are_read_from_a_validation_run_and_other_suites_refused(script):
    module = load_benchmark(script)  # score_epochs uses summarize_validation's
    lrs = module.tuned_adam_lrs(str(ROOT / "docs/evidence/validation/run35/results.json"))
    assert list(lrs) == [row.name for row in SUITES["validation"]]
    assert lrs["val-digits-relu"] == pytest.approx(10 ** -1.5)  # the table's Adam (tuned) lr
    with pytest.raises(SystemExit, match="'heldout' run; give a validation one"):
        module.tuned_adam_lrs(str(ROOT / "docs/evidence/heldout/results.json"))


# --- ReparamFamily: the same problem in rescaled coordinates (thirteenth round) ---

def _sgd_params(task, lr_of, steps, scale_of=lambda name: 1.0):
    """``steps`` of plain gradient descent on ``task`` from its θ₀, at lr ``lr_of(name)`` per
    tensor, returned as ``scale_of(name) * θ`` (the original coordinates when ``scale_of``
    gives α)."""
    params = {name: value.clone().requires_grad_() for name, value in task.params.items()}
    for step in range(steps):
        grads = torch.autograd.grad(task.loss(params, step), list(params.values()))
        with torch.no_grad():
            for name, value, grad in zip(params, params.values(), grads):
                value -= lr_of(name) * grad
    return {name: value.detach() * scale_of(name) for name, value in params.items()}


@pytest.mark.parametrize("level", ["global", "tensor"])
def test_a_rescaled_task_is_the_same_problem_with_steps_scaled_by_alpha_squared(level):
    from learned_optim.tasks import ReparamFamily
    family = ReparamFamily(get_task_family("digits-mlp"), levels=(level,))
    seed = 5
    inner, task = family.family.sample(seed), family.sample(seed)
    _, scales = family.draw(seed, list(inner.params))
    assert len(set(scales.values())) == (1 if level == "global" else len(scales))
    assert all(0.1 <= s <= 10.0 for s in scales.values()) and set(scales.values()) != {1.0}
    # same losses at θ' = θ₀ / α; gradients α ∇f
    assert torch.allclose(task.loss(task.params, 0), inner.loss(inner.params, 0), rtol=1e-5)
    # gradient descent at lr in θ' is gradient descent at lr α² in θ (per tensor)
    lr, steps = 0.05, 5
    rescaled = _sgd_params(task, lambda name: lr, steps, scale_of=lambda name: scales[name])
    params = _sgd_params(inner, lambda name: lr * scales[name] ** 2, steps)
    for name, value in params.items():
        assert torch.allclose(rescaled[name], value, rtol=1e-4, atol=1e-6), name
    # and not gradient descent at lr in θ: the rescaling changes the run
    plain = _sgd_params(inner, lambda name: lr, steps)
    assert any(not torch.allclose(plain[n], rescaled[n], rtol=1e-3) for n in plain)


def test_reparam_family_draws_every_level_per_seed_and_keeps_none_unchanged():
    from learned_optim.tasks import ReparamFamily, ReparamTask
    family = get_task_family("mixture-wide-reparam")
    assert isinstance(family, ReparamFamily) and family.scale_range == (0.1, 10.0)
    names = ["a", "b", "c"]
    levels = [family.draw(seed, names)[0] for seed in range(60)]
    assert set(levels) == {"none", "global", "tensor"}
    assert family.draw(7, names) == family.draw(7, names)
    seed = levels.index("none")
    assert not isinstance(family.sample(seed), ReparamTask)
    plain, same = family.family.sample(seed), family.sample(seed)
    assert all(torch.equal(plain.params[n], same.params[n]) for n in plain.params)
    seed = levels.index("tensor")
    rescaled, inner = family.sample(seed), family.family.sample(seed)
    assert isinstance(rescaled, ReparamTask)
    assert rescaled.routes == inner.routes
    log_scales = [math.log(s) for s in family.draw(seed, names)[1].values()]
    assert all(-math.log(10) <= v <= math.log(10) for v in log_scales)
    assert family.describe()["family"]["name"] == "mixture-wide"


def test_reparam_refuses_bad_ranges_levels_and_scales():
    from learned_optim.tasks import ReparamFamily, ReparamTask
    base = get_task_family("quadratic")
    for bad in [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0), (1.0, float("inf"))]:
        with pytest.raises(ValueError, match="scale_range"):
            ReparamFamily(base, scale_range=bad)
    for bad in [(), ("tensor", "parameter")]:
        with pytest.raises(ValueError, match="levels"):
            ReparamFamily(base, levels=bad)
    task = base.sample(0)
    with pytest.raises(ValueError, match="no scale"):
        ReparamTask(task, {})
    with pytest.raises(ValueError, match="finite and positive"):
        ReparamTask(task, {"theta": 0.0})
