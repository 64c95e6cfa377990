r"""How much faster than tuned Adam must an optimizer be to win each row? (issue 10,
thirty-ninth round; only Adam runs, so nothing is chosen by it)

A learned optimizer "wins" a row of ``evaluate --suite heldout`` (or ``validation``) when the
whole paired 95% CI of its final loss minus tuned Adam's, over the suite's test seeds, is
below 0 (:func:`learned_optim.evaluation.stats.verdict`). This asks the same question of
Adam itself given :math:`K` times the steps: for each row, Adam's lr is tuned again (same
grid, same tuning seeds, :func:`learned_optim.evaluation.evaluate.tune_lr`) for runs of
:math:`K T` steps, and its final loss at step :math:`K T` is compared, seed by seed, with
tuned Adam's at the row's horizon :math:`T`:

.. math::
    \Delta_i = F_i(\text{Adam}, K T) - F_i(\text{Adam}, T), \qquad
    \text{wins} \iff \bar\Delta + t_{n-1}\, s_\Delta / \sqrt{n} < 0,

with :math:`F_i` the mean loss over the last 10% of steps on test seed :math:`i`. An
optimizer that reaches at step :math:`T` what tuned Adam reaches at :math:`K T` is a
:math:`K`-fold speedup. A row that Adam given :math:`K` times the steps does not win is
a row that an optimizer with that speedup over tuned Adam, on every seed, need not win
either: the row is at its floor (a noise level, or a minimum reached within :math:`T`
steps), or tuned Adam's own spread hides the gain (``summarize_validation.py --rows``).

    python benchmarks/speedup_needed.py --suite heldout --factors 3 10 \
        --out docs/evidence/speedup-needed/heldout.json

Prints one markdown row per task and, per factor, on how many rows Adam with that many
times the steps wins. With ``--results`` (an ``evaluate`` results.json of the same suite),
also each learned optimizer's mean final loss over Adam's at T and at each K x T; with
``--report`` the figures are read back from a JSON written by ``--out`` instead of run:

    python benchmarks/speedup_needed.py \
        --report docs/evidence/speedup-needed/heldout.json \
        --results docs/evidence/heldout/results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from learned_optim.evaluation import select_rows
from learned_optim.evaluation.evaluate import TUNED_ADAM, tune_lr
from learned_optim.evaluation.runner import OptimizerSpec, final_loss, run_losses
from learned_optim.evaluation.stats import paired_difference, verdict
from learned_optim.evaluation.suites import Protocol, Row, protocol_for
from summarize_validation import learned_entries  # its sibling: the results.json reader


def tuned_adam_final_losses(family, horizon: int, protocol: Protocol
                            ) -> tuple[float, list[float]]:
    """``(lr, final loss per test seed)`` of Adam tuned for runs of ``horizon`` steps."""
    lr, _ = tune_lr(family, horizon, protocol, "adam")
    curves = run_losses(family, protocol.test_seeds, horizon, OptimizerSpec(TUNED_ADAM, "adam"),
                        (lr,))[0]
    return lr, final_loss(curves).tolist()


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _ratio(longer: Sequence[float], base: Sequence[float]) -> float:
    mean_base, mean_longer = _mean(base), _mean(longer)
    if not math.isfinite(mean_base) or not math.isfinite(mean_longer):
        return math.nan
    return mean_longer / mean_base if mean_base > 0 else math.nan


def row_speedups(row: Row, protocol: Protocol, factors: Sequence[int]) -> dict[str, Any]:
    """Tuned Adam at the row's horizon, and per factor K, Adam tuned for K times as many steps
    compared with it seed by seed."""
    family = row.family()
    started = time.perf_counter()
    lr, base = tuned_adam_final_losses(family, row.horizon, protocol)
    longer = []
    for factor in factors:
        factor_lr, losses = tuned_adam_final_losses(family, factor * row.horizon, protocol)
        difference = paired_difference(losses, base)
        longer.append({"factor": factor, "lr": factor_lr, "final_losses": losses,
                       "ratio": _ratio(losses, base), "difference": difference[0],
                       "ci": difference[1], "verdict": verdict(difference)})
    return {"row": row.name, "horizon": row.horizon, "lr": lr, "final_losses": base,
            "longer": longer, "seconds": round(time.perf_counter() - started, 1)}


def table_lines(report: list[dict[str, Any]]) -> list[str]:
    """A markdown table (one line per row) and one line per factor with the count of wins."""
    factors = [entry["factor"] for entry in report[0]["longer"]] if report else []
    lines = ["| row | horizon | tuned Adam lr | "
             + " | ".join(f"{k}x steps: lr, final loss / tuned Adam's, verdict" for k in factors)
             + " |",
             "|---|---|---|" + "---|" * len(factors)]
    for row in report:
        cells = [f"{e['lr']:.3g}, {e['ratio']:.3g}, {e['verdict']}" for e in row["longer"]]
        lines.append(f"| {row['row']} | {row['horizon']} | {row['lr']:.3g} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    for i, factor in enumerate(factors):
        wins = sum(row["longer"][i]["verdict"] == "wins" for row in report)
        lines.append(f"Adam with {factor}x the steps wins {wins} / {len(report)} rows")
    return lines


def _quotient(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, inf over a loss of exactly 0 (nan for 0 over 0)."""
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.inf
    return numerator / denominator


def learned_lines(report: list[dict[str, Any]], results_path: str) -> list[str]:
    """Each learned optimizer of an ``evaluate`` ``results.json`` (same suite) against Adam
    given K times the steps: its mean final loss over Adam's at the horizon and at each
    K x T. Below 1 at K: it reaches at T what Adam, re-tuned, reaches only after K x T steps,
    a speedup of at least K (on the mean). Refuses a results file whose tuned Adam differs
    from the probe's own run at T (another suite, seeds or code)."""
    report_rows = {row["row"]: row for row in report}
    factors = [entry["factor"] for entry in report[0]["longer"]] if report else []
    lines = ["| row | learned optimizer | final loss / tuned Adam's at T | "
             + " | ".join(f"/ Adam's at {k}T" for k in factors) + " |",
             "|---|---|---|" + "---|" * len(factors)]
    for _, row, by_label, label, _ in learned_entries([results_path]):
        probe_row = report_rows.get(row["row"])
        if probe_row is None:
            continue
        adam = _mean(probe_row["final_losses"])
        recorded = by_label[TUNED_ADAM]["final_loss"]
        if not math.isclose(adam, recorded, rel_tol=1e-4):
            raise ValueError(f"{results_path}: tuned Adam's final loss on {probe_row['row']} is "
                             f"{recorded:.6g}, this probe's is {adam:.6g}; compare results of "
                             f"the same suite, test seeds and code")
        mine = by_label[label]["final_loss"]
        cells = [f"{_quotient(mine, _mean(e['final_losses'])):.3g}" for e in probe_row["longer"]]
        lines.append(f"| {probe_row['row']} | {label} | {_quotient(mine, adam):.3g} | "
                     + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("heldout", "validation"),
                        help="the suite whose rows to run (not with --report)")
    parser.add_argument("--factors", type=int, nargs="+", default=(3, 10))
    parser.add_argument("--rows", nargs="+", help="only these rows (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--report", help="read the figures from this JSON (written by --out) "
                        "instead of running Adam")
    parser.add_argument("--results", help="an evaluate results.json of the same suite: also "
                        "compare its learned optimizers with Adam given K times the steps")
    args = parser.parse_args()
    if bool(args.suite) == bool(args.report):
        parser.error("give --suite (run Adam) or --report (read a JSON written by --out)")
    if args.report:
        with open(args.report) as handle:
            report = json.load(handle)["rows"]
        print("\n".join(table_lines(report)))
        if args.results:
            print("\n" + "\n".join(learned_lines(report, args.results)))
        return
    if any(k < 2 for k in args.factors):
        parser.error(f"--factors must be integers >= 2, got {args.factors}")
    torch.set_num_threads(args.threads)
    protocol = protocol_for(args.suite, quick=False)
    report = []
    for row in select_rows(args.suite, names=args.rows):
        report.append(row_speedups(row, protocol, args.factors))
        print(f"{row.name}: {report[-1]['seconds']} s", flush=True)
    print("\n".join(table_lines(report)))
    if args.results:
        print("\n" + "\n".join(learned_lines(report, args.results)))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/speedup_needed.py " + " ".join(
            ["--suite", args.suite, "--factors", *map(str, args.factors)]
            + (["--rows", *args.rows] if args.rows else []) + ["--out", args.out])
        Path(args.out).write_text(json.dumps({
            "command": command, "suite": args.suite, "factors": list(args.factors),
            "protocol": dataclasses.asdict(protocol), "torch_threads": args.threads,
            "rows": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
