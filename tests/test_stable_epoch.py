"""benchmarks/stable_epoch.py (issue 10, twenty-fourth round): keeping the best-scored epoch of
a run that passes a curved-valley screen, and default_variants.py --keep-epochs, which writes
the epochs it chooses from."""

import math

import pytest
import torch

from benchmark_scripts import load_benchmark

from learned_optim import WeightsBundle
from learned_optim.meta.presets import DEFAULT_NET

TINY = dict(epochs=2, tasks_per_epoch=2, validation_tasks=1, horizon=30, net=DEFAULT_NET,
            meta_objective="log_loss", weight_average_decay=0.5, meta_lr=0.05)


@pytest.fixture(scope="module")
def stable_epoch():
    return load_benchmark("stable_epoch")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch run of a tiny variant on curved valleys with every epoch kept."""
    variants = load_benchmark("default_variants")
    variants.VARIANTS["tiny-valleys"] = ("curved-valley", "curved-valley", TINY)
    root = tmp_path_factory.mktemp("tiny-run")
    provenance = variants.train_variant("tiny-valleys", root / "out", seed=3,
                                        keep_epochs=root / "epochs")
    return root, provenance


def test_keep_epochs_writes_every_epoch_and_the_kept_one_is_among_them(tiny_run):
    root, provenance = tiny_run
    folders = sorted(p.name for p in (root / "epochs").iterdir())
    assert folders == ["epoch-01", "epoch-02"]
    best = provenance["metrics"]["best_epoch"]
    kept = WeightsBundle.from_pretrained(root / "out")
    chosen = WeightsBundle.from_pretrained(root / "epochs" / f"epoch-{best:02d}")
    assert chosen.fingerprint() == kept.fingerprint()
    assert chosen.provenance["epoch_kept"] == best


def test_epoch_score_is_the_trainer_s_own_score_of_that_epoch(tiny_run, stable_epoch):
    root, provenance = tiny_run
    history = {entry["epoch"]: entry["score"] for entry in provenance["history"]}
    for epoch in (1, 2):
        assert stable_epoch.epoch_score(root / "epochs" / f"epoch-{epoch:02d}") == \
            (epoch, history[epoch])


def test_a_runs_final_bundle_is_scored_as_the_best_epoch_it_holds(tiny_run, stable_epoch,
                                                                   tmp_path):
    """The trainer's output folder holds its best epoch's weights but records every epoch's
    history: it is that epoch, with that epoch's score, not the last one."""
    root, provenance = tiny_run
    best = provenance["metrics"]["best_epoch"]
    history = {entry["epoch"]: entry["score"] for entry in provenance["history"]}
    assert "epoch_kept" not in provenance
    assert stable_epoch.epoch_score(root / "out") == (best, history[best])
    bundle = WeightsBundle.from_pretrained(root / "out")  # the same run, had epoch 1 been best
    WeightsBundle(bundle.nets, name="first", provenance={
        **bundle.provenance, "metrics": {**bundle.provenance["metrics"], "best_epoch": 1}}
    ).save_pretrained(tmp_path / "first")
    assert stable_epoch.epoch_score(tmp_path / "first") == (1, history[1])


def test_a_bundle_without_history_is_refused_with_the_fix(tiny_run, stable_epoch, tmp_path):
    root, _ = tiny_run
    bundle = WeightsBundle.from_pretrained(root / "out")
    WeightsBundle(bundle.nets, name="plain").save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="--keep-epochs"):
        stable_epoch.epoch_score(tmp_path / "plain")


@pytest.mark.parametrize("peaks, limit, expected", [
    ([1.0, 2.9], 3.0, True), ([1.0, 3.0], 3.0, True), ([1.0, 3.1], 3.0, False),
    ([math.inf], 3.0, False), ([math.nan, 1.0], 3.0, False)])
def test_passes_needs_every_peak_finite_and_within_the_limit(stable_epoch, peaks, limit,
                                                             expected):
    assert stable_epoch.passes(peaks, limit) is expected


def _overshooting_epoch_9(good_folder, out):
    """Write to ``out`` the epoch ``good_folder`` holds with a step 1,000x too large, recorded
    as epoch 9 with the best score of the run (-1)."""
    good = WeightsBundle.from_pretrained(good_folder)
    history = [*good.provenance["history"], {"epoch": 9, "score": -1.0, "final_loss": 0.0}]
    good.with_net_config(
        name="overshoots", provenance={**good.provenance, "history": history, "epoch_kept": 9},
        output_scale=good.nets["fc"].config.output_scale * 1000).save_pretrained(out)


def test_a_better_scored_epoch_that_overshoots_is_passed_over(tiny_run, stable_epoch,
                                                              tmp_path):
    """An epoch given the best score but a step 1,000x too large (so the valleys' losses shoot
    far above their starts) is screened first and rejected; the run's own best epoch is kept.
    The screen runs for real, on real curved valleys."""
    root, provenance = tiny_run
    best = provenance["metrics"]["best_epoch"]
    _overshooting_epoch_9(root / "epochs" / f"epoch-{best:02d}", tmp_path / "epoch-09")
    folders = [tmp_path / "epoch-09", root / "epochs" / "epoch-01", root / "epochs" / "epoch-02"]
    report = stable_epoch.choose_epoch(folders, tasks=2, horizon=60, limit=3.0,
                                       log=lambda line: None)
    assert [e["epoch"] for e in report["epochs"]][0] == 9
    assert not report["epochs"][0]["passes"]
    assert max(report["epochs"][0]["peaks"]) > 3.0
    assert report["kept_epoch"] == best and report["horizon"] == 60
    assert len(report["epochs"]) == 2  # stops at the first epoch that passes
    everything = stable_epoch.choose_epoch(folders, tasks=2, horizon=60, limit=math.inf,
                                           screen_all=True, log=lambda line: None)
    assert everything["kept_epoch"] == 9 and len(everything["epochs"]) == 3


def test_the_panel_screen_stops_an_epoch_at_its_first_function_that_blows_up(
        tiny_run, stable_epoch, tmp_path, monkeypatch):
    """``--screen panel``: the panel's functions (shortened here to 60 steps) from the screen's
    own starts, worst first; an epoch whose step is 1,000x too large blows up (above 10x its
    start) on the first function, which ends its screen, and the run's best epoch is kept."""
    probe = load_benchmark("step_scale_probe")
    short = tuple(probe._FunctionFamily(f.name, f.loss, f.centre.tolist(), f.spread, 60)
                  for f in probe.PANEL)
    monkeypatch.setattr(stable_epoch, "PANEL", short)
    root, provenance = tiny_run
    best = provenance["metrics"]["best_epoch"]
    _overshooting_epoch_9(root / "epochs" / f"epoch-{best:02d}", tmp_path / "epoch-09")
    folders = [tmp_path / "epoch-09", root / "epochs" / f"epoch-{best:02d}"]
    report = stable_epoch.choose_epoch(folders, tasks=3, horizon=0, limit=10.0,
                                       screen="panel", log=lambda line: None)
    first, second = report["epochs"]
    assert first["epoch"] == 9 and not first["passes"]
    assert list(first["peaks_by_function"]) == ["sine-valley-1000"]  # stopped there
    assert max(first["peaks"]) > 10.0 and len(first["peaks"]) == 3
    assert second["passes"] and report["kept_epoch"] == best
    assert report["horizon"] is None  # each function ran for its own, not the argument
    assert list(second["peaks_by_function"]) == list(stable_epoch.PANEL_SCREEN_ORDER)
    assert sorted(stable_epoch.PANEL_SCREEN_ORDER) == sorted(f.name for f in probe.PANEL)


def test_screen_starts_counts_each_start_s_failures_and_summarises_a_run():
    """benchmarks/screen_starts.py: per start index, how many screened epochs rose above the
    limit on one function (epochs that stopped before it are not counted); and one run's
    peak, first step above the limit, step of the peak and final loss."""
    import torch
    starts = load_benchmark("screen_starts")
    reports = [{"epochs": [
        {"peaks_by_function": {"sine-valley-1000": [1.0, 12.0, 30.0]}},
        {"peaks_by_function": {"sine-valley-1000": [1.0, 9.0, 11.0], "beale": [99.0]}},
        {"peaks_by_function": {"cubic-valley": [50.0]}}]}]
    assert starts.failing_starts(reports, "sine-valley-1000", 10.0) == (2, {1: 1, 2: 2})
    curve = torch.tensor([[2.0, 10.0, 25.0, 40.0, 3.0]], dtype=torch.float64)
    assert starts.run_summary(curve, 10.0) == [
        "peak 20x  first above 10x: 2  largest at 3  final 3"]
    assert starts.run_summary(curve, 50.0)[0].startswith("peak 20x  first above 50x: -")


def test_screen_starts_trace_prints_every_nth_step_the_scale_and_the_height_above_the_floor():
    """screen_starts.py trace: the lines of steps 0, N, 2N, ... (and of any step above the
    limit) with the loss over its start, the step scale after that step (1.00 after the
    first, whose cosine is 0), the point before the step and its height above the floor."""
    import math

    starts = load_benchmark("screen_starts")
    family = next(f for f in starts.PANEL if f.name == "sine-valley-1000")
    seed = starts.SCREEN_SEED + 5
    lines = starts.trace_lines(family, seed, "default", steps=25, every=10, peak=1e9)
    assert [line.split()[1] for line in lines] == ["0", "10", "20"]
    (start,) = family.sample(seed).params.values()
    x, y = start.tolist()
    assert f"point ({x:+.4f}, {y:+.4f})" in lines[0]
    assert f"above floor {y - math.sin(2 * x):+.2e}" in lines[0]
    assert "(   1.00x start)  scale   1.00" in lines[0]
    # a limit below the losses prints every step
    assert len(starts.trace_lines(family, seed, "default", steps=5, every=10, peak=0.5)) == 5


def test_step_scale_probe_rule_copies_keep_the_tensors_and_set_the_rule():
    probe = load_benchmark("step_scale_probe")
    default = WeightsBundle.from_pretrained("default")
    copy = probe.with_step_scale_rule(default, 2.0, 3.0)
    config = copy.nets["fc"].config
    assert (copy.name, config.step_scale_bound, config.hypergradient_shrink) == \
        ("default-B2-k3", 2.0, 3.0)
    assert all(torch.equal(copy.tensors()[k], v) for k, v in default.tensors().items())
