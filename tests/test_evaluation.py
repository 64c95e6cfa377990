"""The evidence machinery: statistics, side-by-side runs, tuning, and the evaluate command."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from learned_optim.evaluation import evaluate_row, select_rows
from learned_optim.evaluation.baselines import LR_GRID
from learned_optim.evaluation.runner import (OptimizerSpec, _SeedStack, final_loss, mean_loss,
                                             run_losses)
from learned_optim.evaluation.stats import mean_ci, paired_difference, t_critical, verdict
from learned_optim.evaluation.suites import SUITES, Protocol, Row
from learned_optim.meta.presets import PRESETS
from learned_optim.tasks import QuadraticFamily, Task, TaskFamily, get_task_family
from learned_optim.tasks.digits import DigitsCNNFamily, DigitsMLPFamily
from learned_optim.tasks.heldout import (AddingRNNFamily, DigitsAutoencoderFamily,
                                         RosenbrockFamily, TabularFamily)
from learned_optim.tasks.transfer import (IrisFamily, LinnerudFamily, SequenceAttentionFamily,
                                          SyntheticClassificationFamily,
                                          SyntheticRegressionFamily)

ROOT = Path(__file__).resolve().parents[1]
BATCHED_FAMILIES = [QuadraticFamily, lambda: DigitsMLPFamily(split="test"),
                    lambda: DigitsCNNFamily(split="test"), IrisFamily, LinnerudFamily,
                    SyntheticClassificationFamily, SyntheticRegressionFamily,
                    SequenceAttentionFamily, DigitsAutoencoderFamily, AddingRNNFamily,
                    RosenbrockFamily,
                    lambda: TabularFamily("diabetes", hidden=8, raw_targets=True),
                    lambda: TabularFamily("moons", hidden=8, layers=2, batch_size=16)]


# -- statistics ---------------------------------------------------------------------------

def test_mean_ci_is_students_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert t_critical(9) == 2.262 and t_critical(1000) == 1.960


def test_a_diverged_run_makes_the_mean_infinite():
    assert mean_ci([1.0, math.inf])[0] == math.inf


@pytest.mark.parametrize("a, b, expected", [
    ([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "wins"),
    ([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], "loses"),
    ([1.0, 2.0, 0.5], [1.5, 1.0, 1.2], "tie"),
    ([math.inf, 1.0, 1.0], [1.0, 1.0, 1.0], "loses"),
    ([1.0, 1.0, 1.0], [1.0, math.nan, 1.0], "wins"),
    ([math.inf], [math.inf], "both diverge"),
])
def test_paired_verdict(a, b, expected):
    assert verdict(paired_difference(a, b)) == expected


def test_final_and_mean_loss_definitions():
    curves = torch.arange(20, dtype=torch.float64).reshape(1, 20)  # last 10% = steps 18, 19
    assert final_loss(curves).item() == 18.5
    assert mean_loss(curves).item() == 9.5
    curves[0, 5] = math.nan
    assert final_loss(curves).item() == 18.5 and mean_loss(curves).item() == math.inf


# -- tasks run side by side ----------------------------------------------------------------

@pytest.mark.parametrize("make_family", BATCHED_FAMILIES)
def test_side_by_side_losses_equal_each_tasks_own_loss(make_family):
    """batched_seeds families must not hide per-seed data in a closure the vmap would share."""
    family = make_family()
    assert family.batched_seeds
    tasks = [family.sample(seed) for seed in (3, 4, 5)]
    stack = _SeedStack(tasks, copies=2)
    params = {k: torch.stack([v, v]) for k, v in stack.initial.items()}
    for step in (0, 7):
        losses = stack.losses(params, step)
        assert losses.shape == (2, 3)
        for j, task in enumerate(tasks):
            expected = task.loss({k: v.clone() for k, v in task.params.items()}, step)
            torch.testing.assert_close(losses[:, j], expected.expand(2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec, lrs", [(OptimizerSpec("Adam", "adam"), (1e-2, 1e-1)),
                                       (OptimizerSpec("Nesterov", "nesterov"), (1e-3, 1e-2)),
                                       (OptimizerSpec("l2l", "learned", "l2l-quadratic"), (1.0,))])
def test_side_by_side_run_matches_separate_runs(spec, lrs):
    family = QuadraticFamily()
    stacked = run_losses(family, [1, 2, 3], 15, spec, lrs, side_by_side=True)
    separate = run_losses(family, [1, 2, 3], 15, spec, lrs, side_by_side=False)
    assert stacked.shape == (len(lrs), 3, 15)
    torch.testing.assert_close(stacked, separate, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("side_by_side", [True, False])
def test_a_learned_optimizer_is_told_the_rows_horizon(tmp_path, side_by_side):
    """A net that reads the progress t / T gets T = the row's horizon, side by side or one run
    at a time: its curves equal the MetaTrainer's unroll of that horizon, not of another."""
    from learned_optim import LSTMOptimizerConfig, LSTMOptimizerNet, WeightsBundle
    from learned_optim.meta.unroll import evaluate as unroll_evaluate
    net = LSTMOptimizerNet(LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                               output_scale=0.01, progress_feature=True), seed=0)
    with torch.no_grad():
        net.head.weight[1, -1] = 3.0  # the step grows e^3-fold over the run
    WeightsBundle({"fc": net}, name="progress").save_pretrained(tmp_path / "b")
    family = QuadraticFamily()
    curves = run_losses(family, [1, 2], 12, OptimizerSpec("p", "learned", str(tmp_path / "b")),
                        side_by_side=side_by_side)
    for j, seed in enumerate([1, 2]):
        told = torch.tensor(unroll_evaluate(family.sample(seed), {"fc": net}, 12)[:12],
                            dtype=torch.float64)
        torch.testing.assert_close(curves[0, j], told, rtol=1e-5, atol=1e-6)
        longer = torch.tensor(unroll_evaluate(family.sample(seed), {"fc": net}, 24)[:12],
                              dtype=torch.float64)
        assert not torch.allclose(curves[0, j], longer, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("option", [dict(tensor_feature=True),
                                    dict(tensor_feature=True, tensor_statistic="gradient_change"),
                                    dict(hypergradient_rate=0.5)],
                         ids=["signal_to_noise", "gradient_change", "step_scale"])
def test_a_net_with_per_tensor_inputs_runs_each_seed_alone(tmp_path, option):
    """A tensor_feature net reads one statistic per parameter tensor, a hypergradient_rate net
    scales each tensor's steps; stacked, a tensor holds every seed and the statistic or the
    scale would be pooled over them. Each seed's curve must be that seed's own run (the
    MetaTrainer's unroll of the task alone), as a user would get."""
    from learned_optim import LSTMOptimizerConfig, LSTMOptimizerNet, WeightsBundle
    from learned_optim.evaluation import runner
    from learned_optim.meta.unroll import evaluate as unroll_evaluate
    net = LSTMOptimizerNet(LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                               output_scale=0.01, **option), seed=0)
    if net.config.tensor_feature:
        with torch.no_grad():
            net.head.weight[1, -1] = -0.5  # the step size follows the tensor's statistic
    WeightsBundle({"fc": net}, name="tensor").save_pretrained(tmp_path / "b")
    spec = OptimizerSpec("t", "learned", str(tmp_path / "b"))
    assert not spec.coordinatewise and OptimizerSpec("Adam", "adam").coordinatewise
    family, seeds = QuadraticFamily(), [1, 2, 3]
    curves = run_losses(family, seeds, 20, spec)  # batched family, default mode
    alone = torch.stack([torch.tensor(unroll_evaluate(family.sample(seed), {"fc": net}, 20)[:20],
                                      dtype=torch.float64) for seed in seeds])
    torch.testing.assert_close(curves[0], alone, rtol=1e-5, atol=1e-6)
    pooled = runner._run_side_by_side(family, seeds, 20, spec, (1.0,))[0]
    assert not torch.allclose(pooled, alone, rtol=1e-3, atol=1e-4)  # what stacking would give
    with pytest.raises(ValueError, match="side_by_side=False"):
        run_losses(family, seeds, 20, spec, side_by_side=True)


def test_a_diverging_learning_rate_does_not_leak_into_the_other_copies():
    family, spec = QuadraticFamily(), OptimizerSpec("SGD", "sgd")
    alone = run_losses(family, [1, 2], 30, spec, (1e-3,))
    together = run_losses(family, [1, 2], 30, spec, (1e-3, 10.0))
    assert torch.isinf(together[1, :, -1]).all()  # lr=10 diverges on these quadratics
    torch.testing.assert_close(together[0], alone[0], rtol=1e-6, atol=1e-6)


class _PoisonedFamily(TaskFamily):
    """Linear regressions; seed 2's batches hold inf from step 3 on (its run diverges)."""

    batched_seeds = True

    def sample(self, seed):
        torch.manual_seed(seed)
        model = torch.nn.Linear(2, 1)

        def batch(step):
            x = torch.randn(8, 2, generator=torch.Generator().manual_seed(step))
            return (x * math.inf if seed == 2 and step >= 3 else x), x.sum(1, keepdim=True)
        return Task(model=model, sample_batch=batch,
                    loss_fn=lambda out, y: (out - y).square().mean())


def test_learned_run_is_redone_seed_by_seed_when_one_seed_diverges(monkeypatch):
    """Stacked, the learned optimizer would freeze every seed's tensor (non-finite grad in one
    seed): the run is redone one seed at a time, so the healthy seed trains as if alone."""
    from learned_optim.evaluation import runner

    calls = []
    real = runner._run_one_at_a_time
    monkeypatch.setattr(runner, "_run_one_at_a_time", lambda *a: calls.append(a) or real(*a))
    spec = OptimizerSpec("l2l", "learned", "l2l-quadratic")
    both = run_losses(_PoisonedFamily(), [1, 2], 12, spec, side_by_side=True)
    assert calls, "the stacked run hit a non-finite gradient but was not redone"
    alone = run_losses(_PoisonedFamily(), [1], 12, spec, side_by_side=True)
    torch.testing.assert_close(both[0, 0], alone[0, 0])
    assert torch.isinf(both[0, 1, 3:]).all() and torch.isfinite(both[0, 0]).all()


# -- tuning and the row protocol -----------------------------------------------------------

def test_tuning_picks_the_lr_with_the_lowest_mean_final_loss_on_tuning_seeds():
    protocol = Protocol(lr_grid=(1e-3, 1e-2, 1e-1), tuning_seeds=(7, 8), test_seeds=(9, 10),
                        timing_steps=2)
    row = Row("q", QuadraticFamily, 20, (OptimizerSpec("l2l", "learned", "l2l-quadratic"),),
              "test row")
    result = evaluate_row(row, protocol)
    adam = result.by_label("Adam (tuned)")
    scores = {lr: final_loss(run_losses(QuadraticFamily(), (7, 8), 20,
                                        OptimizerSpec("a", "adam"), (lr,))[0]).mean().item()
              for lr in protocol.lr_grid}
    assert adam.lr == min(scores, key=scores.get)
    assert adam.tuning_scores == pytest.approx(scores, rel=1e-5)
    assert adam.curves.shape == (2, 20)
    labels = [r.label for r in result.results]
    assert labels == ["SGD (tuned)", "Nesterov (tuned)", "RMSprop (tuned)", "Adam (tuned)",
                      "Adam (lr=1e-3)", "l2l"]
    assert set(result.against_tuned_adam()) == {"l2l"}


def test_blow_ups_and_the_wins_tally():
    from learned_optim.evaluation.evaluate import OptimizerResult, RowResult
    from learned_optim.evaluation.report import markdown_tables

    curves = torch.tensor([[1.0, 0.5, 0.1], [1.0, 11.0, 0.1], [1.0, math.inf, math.inf]],
                          dtype=torch.float64)
    assert OptimizerResult("x", 1.0, curves, 0.0).blow_ups == 2
    good = torch.tensor([[1.0, 0.1, 0.01]] * 3, dtype=torch.float64)
    bad = torch.tensor([[1.0, 0.5, 0.4], [1.0, 0.6, 0.5], [1.0, 0.5, 0.45]], dtype=torch.float64)
    row = Row("r", QuadraticFamily, 3, (OptimizerSpec("mine", "learned", "default"),), "row")
    win = RowResult(row, [OptimizerResult("Adam (tuned)", 0.1, bad, 0.0),
                          OptimizerResult("mine", 1.0, good, 0.0)])
    lose = RowResult(row, [OptimizerResult("Adam (tuned)", 0.1, good, 0.0),
                           OptimizerResult("mine", 1.0, bad, 0.0)])
    table = markdown_tables([win, lose, win])
    assert "- mine vs tuned Adam (final loss): wins 2 / 3 rows, ties 0, loses 1" in table


def test_lr_grid_spans_1e4_to_1_in_half_decades():
    assert len(LR_GRID) == 9 and LR_GRID[0] == 1e-4 and LR_GRID[-1] == 1.0
    ratios = [b / a for a, b in zip(LR_GRID, LR_GRID[1:])]
    assert all(r == pytest.approx(10 ** 0.5) for r in ratios)


def test_suites_have_every_row_the_evidence_needs():
    names = {suite: [row.name for row in rows] for suite, rows in SUITES.items()}
    assert {"quadratic", "digits-mlp", "digits-mlp-200", "digits-mlp-40", "digits-mlp-2layer",
            "digits-mlp-relu", "digits-cnn", "digits-cnn-5", "digits-cnn-2", "neural-art",
            "neural-art-128-stripes"} <= set(names["paper"])
    assert {"digits-mlp-1000", "digits-mlp-10000", "iris", "linnerud", "make-classification",
            "make-regression", "sequence-attention"} <= set(names["transfer"])
    assert len(names["heldout"]) >= 8 and {"rosenbrock", "adding-rnn", "digits-autoencoder",
                                           "diabetes-regression"} <= set(names["heldout"])
    assert not set(names["heldout"]) & set(names["validation"])
    assert max(row.horizon for row in SUITES["heldout"]) == 10_000
    assert [r.name for r in select_rows("paper", quick=True)] == ["quadratic", "digits-mlp"]
    with pytest.raises(ValueError, match="no rows"):
        select_rows("paper", names=["nope"])


def test_evaluation_only_data_is_never_meta_trained_on():
    def flagged(description):  # a mixture lists its members' descriptions
        return "evaluation_only" in description or any(
            flagged(member) for member in description.get("members", ()))

    for preset in PRESETS.values():
        for name in filter(None, (preset.task, preset.validation_task)):
            assert not flagged(get_task_family(name).describe()), name
    assert flagged(IrisFamily().describe())
    assert flagged({"name": "mix", "members": [IrisFamily().describe()]})


def test_learned_weights_replace_every_rows_own(tmp_path):
    rows = select_rows("validation", learned_weights=["default", str(tmp_path / "variant-a")])
    assert len(rows) == len(SUITES["validation"])
    for row in rows:
        assert [spec.label for spec in row.learned] == ["default", "variant-a"]
        assert row.learned[1].weights == str(tmp_path / "variant-a")
    with pytest.raises(ValueError, match="distinct"):
        select_rows("validation", learned_weights=["a/x", "b/x"])


# -- the command ---------------------------------------------------------------------------

def test_evaluate_quick_writes_its_table_plots_and_curves(tmp_path):
    """CI's smoke run of ``evaluate --quick``: it completes and writes its files."""
    out = tmp_path / "quick"
    done = subprocess.run([sys.executable, "-m", "learned_optim", "evaluate", "--quick",
                           "--no-progress", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| quadratic | 100 |" in done.stdout
    assert (out / "table.md").read_text() in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in results["rows"]] == ["quadratic", "digits-mlp"]
    assert results["protocol"]["test_seeds"] == [2000, 2001, 2002]
    for row in ("quadratic", "digits-mlp"):
        assert (out / "plots" / f"{row}.png").stat().st_size > 1000
    with safe_open(str(out / "curves.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("digits-mlp/Adam (tuned)").shape == (3, 100)


def _per_tensor_net_weights(tmp_path):
    """A bundle whose net reads a per-tensor statistic and scales each tensor's step."""
    from learned_optim import LSTMOptimizerConfig, LSTMOptimizerNet, WeightsBundle
    net = LSTMOptimizerNet(LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                               output_scale=0.01, tensor_feature=True,
                                               hypergradient_rate=0.5), seed=0)
    with torch.no_grad():
        net.head.weight[1, -1] = -0.5  # the step size follows the tensor's statistic
    WeightsBundle({"fc": net}, name="tensor").save_pretrained(tmp_path / "b")
    return OptimizerSpec("t", "learned", str(tmp_path / "b"))


@pytest.mark.parametrize("make_family", [QuadraticFamily, RosenbrockFamily,
                                         lambda: DigitsMLPFamily(split="test")],
                         ids=["quadratic", "rosenbrock", "digits-mlp"])
def test_seeds_as_separate_tensors_of_one_optimizer_are_each_seeds_own_run(tmp_path,
                                                                           make_family):
    """run_losses_as_tensors (the stability panel's runner) gives every seed the curve it gets
    run alone, per-tensor statistic and step scale included, while stacking the seeds into one
    tensor would pool them."""
    from learned_optim.evaluation import runner
    spec = _per_tensor_net_weights(tmp_path)
    family, seeds = make_family(), [1, 2, 3]
    together = runner.run_losses_as_tensors(family, seeds, 25, spec)
    alone = run_losses(family, seeds, 25, spec, side_by_side=False)
    assert together.shape == (1, 3, 25)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-9)
    if family.batched_seeds:
        pooled = runner._run_side_by_side(family, seeds, 25, spec, (1.0,))
        assert not torch.allclose(pooled, alone, rtol=1e-3, atol=1e-4)


class _BreaksAt(TaskFamily):
    """x² from x = seed; seed 2's loss turns non-finite at step 4."""
    batched_seeds = False

    def sample(self, seed):
        from learned_optim.tasks.heldout import _Point

        def loss(x, _targets):
            return (x.square().sum() * (math.inf if seed == 2 and x.detach().abs().sum() < 1.9
                                        else 1.0))
        return Task(model=_Point(torch.tensor([float(seed)])),
                    sample_batch=lambda step: (None, None), loss_fn=loss)


def test_a_seed_that_diverges_among_separate_tensors_stops_alone():
    """Seed 2's loss goes non-finite once SGD has moved it below 1.9: its curve is inf from
    there on, as in a run of its own, and seeds 1 and 3 go on exactly as they would alone."""
    from learned_optim.evaluation import runner
    spec, family = OptimizerSpec("SGD", "sgd"), _BreaksAt()
    together = runner.run_losses_as_tensors(family, [1, 2, 3], 10, spec, lr=0.01)
    alone = run_losses(family, [1, 2, 3], 10, spec, (0.01,), side_by_side=False)
    broke = int(torch.isinf(alone[0, 1]).nonzero()[0])
    assert 0 < broke < 10
    assert torch.isinf(together[0, 1, broke:]).all()
    torch.testing.assert_close(together, alone, rtol=0, atol=0)
    assert torch.isfinite(together[0, [0, 2]]).all()


def test_peak_over_start_is_how_far_each_run_climbed():
    from learned_optim.evaluation.evaluate import peak_over_start
    curves = torch.tensor([[2.0, 5.0, 1.0], [-4.0, -1.0, 8.0], [1.0, math.nan, 0.5]],
                          dtype=torch.float64)
    assert peak_over_start(curves) == [2.5, 2.0, math.inf]
