r"""Probe: the shipped `default` with a target cosine in its step-scale rule, on the validation
suite and the stability panel (issue 10, twenty-seventh round; nothing here is shipped).

`default` scales each tensor's step by :math:`e^{\ell_t}` and moves the log scale by the
hypergradient rule of :func:`learned_optim.update.tensor_step_scale` (Baydin et al. 2018),
:math:`\ell_t = \operatorname{clip}(\ell_{t-1} - \beta c_t, \pm B)` with
:math:`c_t = \cos(\nabla_t, g_{t-1})`. In expectation the scale stops moving where
successive gradients are uncorrelated with the previous step: the step size that is best for
the next step alone. On minibatch problems that greedy size is smaller than the one that is
best over the whole run, the short-horizon bias of Wu et al. (2018), "Understanding
short-horizon bias in stochastic meta-optimization"; on the validation suite's RNN row most of
`default`'s tensor scales do fall from 1 to well below it over 1,000 steps (``trace``). This
probe asks whether a scale
that settles at a target cosine :math:`c_0` instead of 0,

.. math::
    \ell_t = \operatorname{clip}\big(\ell_{t-1} - \beta\,(c_t - c_0),\ \pm B\big),

helps: :math:`c_0 > 0` keeps a larger step (it settles where steps overshoot a little),
:math:`c_0 < 0` a smaller one; :math:`c_0 = 0` is `default` itself. The LSTM is not
retrained (the same weights φ under every rule, so each comparison is paired). The rule is
swapped in for the probe's runs only (:func:`step_scale_target`), not added to the package.

    python benchmarks/hypergradient_target_probe.py validation -0.05 0 0.05 0.1 0.2 --out V.json
    python benchmarks/hypergradient_target_probe.py panel 0.05 --out P.json
    python benchmarks/hypergradient_target_probe.py trace 0 --out T.json

``validation``: every validation row on its 5 test seeds, tuned Adam re-run at the lr the
validation suite tuned (read from ``docs/evidence/validation/run36``, the same grid and tuning
seeds as every validation run); prints per row and target the verdict against tuned Adam, the
mean final loss over tuned Adam's and the worst peak / start, then per target the clipped
geometric mean and wins / ties / losses (the figures of ``summarize_validation.py``).
``panel``: the stability panel of ``step_scale_probe.py`` (10 seeds per function; a seed
blows up when its loss exceeds 10x its start).
``trace``: on the validation RNN row (``val-teacher-rnn``), each test seed's smallest and
largest tensor scale :math:`e^{\ell_t}` after 250, 500 and 1,000 steps.
"""
import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

import learned_optim.update as update_rule
from learned_optim.evaluation import select_rows
from learned_optim.evaluation.evaluate import peak_over_start
from learned_optim.evaluation.runner import OptimizerSpec, final_loss, leaf_copies, run_losses
from learned_optim.evaluation.suites import protocol_for
from step_scale_probe import PANEL, panel_runs, summary
from summarize_validation import against_tuned_adam, clipped_geometric_mean, tuned_adam_lrs

TUNED = Path(__file__).resolve().parents[1] / "docs/evidence/validation/run36/results.json"


@contextlib.contextmanager
def step_scale_target(target: float):
    r"""Within the block, every per-tensor log step scale moves by
    :math:`-\beta (c_t - c_0)` instead of :math:`-\beta c_t` (``target`` = :math:`c_0`).

    The package's rule is called on a copy of the state whose stored log scale is raised by
    :math:`\beta c_0` first, so the clip applies once, to the sum, as in the formula above."""
    shipped = update_rule.tensor_step_scale

    def with_target(accumulators, grad, config, *, maximize=False):
        if target and accumulators.shape[0]:
            accumulators = accumulators.detach().clone()
            accumulators[0, config.step_scale_column] += config.hypergradient_rate * target
        return shipped(accumulators, grad, config, maximize=maximize)

    update_rule.tensor_step_scale = with_target  # write_step_scale_ looks it up at call time
    try:
        yield
    finally:
        update_rule.tensor_step_scale = shipped


def _validation(targets, weights) -> dict:
    protocol, adam_lrs, results = protocol_for("validation", False), tuned_adam_lrs(TUNED), {}
    for row in select_rows("validation"):
        family, started = row.family(), time.time()
        adam = run_losses(family, protocol.test_seeds, row.horizon,
                          OptimizerSpec("adam", "adam"), (adam_lrs[row.name],))[0]
        entry = {"adam_final": final_loss(adam).tolist()}
        for target in targets:
            with step_scale_target(target):
                curves = run_losses(family, protocol.test_seeds, row.horizon,
                                    OptimizerSpec(f"c0={target:g}", "learned", weights))[0]
            entry[f"{target:g}"] = dict(
                against_tuned_adam(final_loss(curves).tolist(), entry["adam_final"]),
                peak_over_start=peak_over_start(curves))
        results[row.name] = entry
        print(row.name, f"({time.time() - started:.0f} s)", {
            f"{t:g}": (entry[f"{t:g}"]["verdict"], round(entry[f"{t:g}"]["ratio"], 3),
                       round(max(entry[f"{t:g}"]["peak_over_start"]), 2)) for t in targets},
            flush=True)
    for target in targets:
        rows = [results[name][f"{target:g}"] for name in results]
        verdicts = [r["verdict"] for r in rows]
        print(f"c0={target:g}: clipped {clipped_geometric_mean([r['ratio'] for r in rows]):.3f}, "
              f"W/T/L {verdicts.count('wins')}/{verdicts.count('tie')}/{verdicts.count('loses')}")
    return results


def _panel(targets, weights) -> dict:
    results = {}
    for target in targets:
        for family in PANEL:
            started = time.time()
            with step_scale_target(target):
                entry = panel_runs(family, OptimizerSpec(f"c0={target:g}", "learned", weights))
            results.setdefault(family.name, {})[f"{target:g}"] = entry
            print(f"{family.name:16s} c0={target:g}  {summary(entry)}  "
                  f"({time.time() - started:.0f} s)", flush=True)
    return results


def _trace(targets, weights, row_name="val-teacher-rnn", at=(250, 500, 1000)) -> dict:
    row = select_rows("validation", names=[row_name])[0]
    family, results = row.family(), {}
    for target in targets:
        for seed in protocol_for("validation", False).test_seeds:
            task = family.sample(seed)
            leaves = leaf_copies(task.params)
            optimizer = OptimizerSpec("trace", "learned", weights).build(
                [leaves], [1.0], task.routes, total_steps=row.horizon)
            entry = {}
            with step_scale_target(target):
                for step in range(1, max(at) + 1):
                    optimizer.zero_grad(set_to_none=True)
                    task.loss(leaves, step - 1).backward()
                    optimizer.step()
                    if step in at:
                        scales = [optimizer.step_scale(p) for p in leaves.values()]
                        entry[step] = (min(scales), max(scales))
            results.setdefault(f"{target:g}", {})[seed] = entry
            print(f"c0={target:g} seed {seed}: tensor scales (min-max) " + ", ".join(
                f"step {k}: {lo:.2g}-{hi:.2g}" for k, (lo, hi) in entry.items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", choices=("validation", "panel", "trace"))
    parser.add_argument("targets", type=float, nargs="+", help="target cosines c0 (0: default)")
    parser.add_argument("--weights", default="default", help="bundled name or bundle folder")
    parser.add_argument("--out", required=True, help="JSON file for every seed's figures")
    args = parser.parse_args()
    if any(not -1.0 < t < 1.0 for t in args.targets):
        parser.error(f"target cosines must lie in (-1, 1), got {args.targets}")
    torch.set_num_threads(1)
    probe = {"validation": _validation, "panel": _panel, "trace": _trace}[args.where]
    results = {"command": f"python benchmarks/hypergradient_target_probe.py {args.where} "
                          + " ".join(f"{t:g}" for t in args.targets) + f" --weights {args.weights}",
               "results": probe(args.targets, args.weights)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
