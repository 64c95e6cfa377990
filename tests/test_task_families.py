"""The meta-training task families added for the ninth round of issue 10: recurrent models,
autoencoders on sample-image patches and regressions with an irreducible loss."""

import importlib.util
from pathlib import Path

import pytest
import torch

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
    spec = importlib.util.spec_from_file_location(
        "summarize_validation", ROOT / "benchmarks" / "summarize_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mean = module.clipped_geometric_mean
    assert mean([1.0, 4.0]) == pytest.approx(2.0)
    # 0.001 counts as 0.1: one deep win no longer outweighs a 5x loss
    assert mean([0.001, 5.0]) == pytest.approx((0.1 * 5.0) ** 0.5)
    assert mean([1e6]) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        mean([])


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


def test_score_epochs_reads_adam_lrs_from_a_validation_run_and_refuses_other_suites():
    spec = importlib.util.spec_from_file_location(
        "score_epochs", ROOT / "benchmarks" / "score_epochs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lrs = module.tuned_adam_lrs(str(ROOT / "docs/evidence/validation/run23/results.json"))
    assert list(lrs) == [row.name for row in SUITES["validation"]]
    assert lrs["val-digits-relu"] == pytest.approx(10 ** -1.5)  # the table's Adam (tuned) lr
    with pytest.raises(SystemExit, match="'heldout' run; give a validation one"):
        module.tuned_adam_lrs(str(ROOT / "docs/evidence/heldout/results.json"))
