r"""One line per learned optimizer from ``evaluate`` results: how it compares with tuned Adam.

    python benchmarks/summarize_validation.py runs/evaluate-validation-*/results.json

For each learned optimizer found in the given ``results.json`` files: wins / ties / losses
against tuned Adam on final loss (the paired verdicts of the table), and the geometric means
over rows of its final loss and of its mean loss divided by tuned Adam's (below 1: better
than tuned Adam on average; every row counts the same, whatever its loss scale), and on how
many rows its final loss is below untuned Adam's (lr=1e-3, where the suite runs it). This is
the criterion `default` was chosen by (README, "How `default` was made").

From the ninth round on, the criterion is the geometric mean with every row's ratio clipped
to [1/10, 10] (:data:`CLIP`), so that a few very deep wins (a ratio of 0.006 on one row) no
longer outweigh losses on the others; it is printed as its own column.

``--rows`` prints instead, per row and learned optimizer, what the verdict can and cannot
say (thirty-sixth round). A win needs the whole paired 95% CI of (learned - tuned Adam)
below 0. An optimizer whose final loss is 0 on every test seed has differences
:math:`-A_i` (tuned Adam's final losses), whose mean and CI are tuned Adam's own
``final_loss`` and ``final_ci``; it wins the row only if :math:`\bar A > t\,s_A/\sqrt n`.
Where tuned Adam's spread is wider than its mean (one seed stuck far above the rest) no
optimizer that is at least as good as zero loss on every seed can win the row: the
verdict's ceiling. The looser reading, a lower mean final loss than tuned Adam's, is
printed beside it.

    python benchmarks/summarize_validation.py --rows docs/evidence/heldout/results.json

``--best-of`` prints, per row, the best verdict and the smallest ratio that any of the given
learned optimizers reaches: what an oracle choosing among them per problem would get
(thirty-ninth round, on the five sizes of `default`'s departure).

    python benchmarks/summarize_validation.py --best-of \
        docs/evidence/validation/run{77,78,79,80,81}/results.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from learned_optim.evaluation.stats import paired_difference, verdict

TUNED_ADAM = "Adam (tuned)"
UNTUNED_ADAM = "Adam (lr=1e-3)"
#: a row's final-loss ratio counts at most this far from 1 in the clipped geometric mean
CLIP = 10.0


def clipped_geometric_mean(ratios: list[float], clip: float = CLIP) -> float:
    """:math:`\\exp(\\frac1n \\sum_i \\log \\operatorname{clip}(r_i, 1/c, c))`."""
    if not ratios:
        raise ValueError("no ratios to average")
    logs = [math.log(min(max(r, 1.0 / clip), clip)) for r in ratios]
    return math.exp(sum(logs) / len(logs))


def tuned_adam_lrs(path: str) -> dict[str, float]:
    """The lr tuned Adam used on each row of the validation ``results.json`` at ``path``.

    Raises:
        SystemExit: ``path`` is a run of another suite.
    """
    with open(path) as handle:
        results = json.load(handle)
    if results.get("suite") != "validation":
        raise SystemExit(f"{path} is a {results.get('suite')!r} run; give a validation one")
    return {row["row"]: next(o["lr"] for o in row["optimizers"] if o["label"] == TUNED_ADAM)
            for row in results["rows"]}


def against_tuned_adam(finals: list[float], adam_finals: list[float]) -> dict:
    """One optimizer's final losses on a row's test seeds against tuned Adam's on the same
    seeds: ``{"final", "ratio", "verdict"}``, the ratio of their means and the paired verdict
    of the evaluation tables (what the probes of issue 10 record per row and setting)."""
    return {"final": finals, "ratio": sum(finals) / sum(adam_finals),
            "verdict": verdict(paired_difference(finals, adam_finals))}


def learned_entries(paths: list[str]) -> Iterator[tuple[str, dict, dict, str, dict]]:
    """``(path, row, {label: optimizer entry}, learned label, its comparison with tuned
    Adam)`` for every learned optimizer of every row of the ``results.json`` files at
    ``paths``."""
    for path in paths:
        with open(path) as handle:
            results = json.load(handle)
        for row in results["rows"]:
            by_label = {o["label"]: o for o in row["optimizers"]}
            for label, comparison in row["learned_vs_tuned_adam"].items():
                yield path, row, by_label, label, comparison


def summarize(paths: list[str]) -> list[str]:
    ratios: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    verdicts: dict[str, dict[str, str]] = defaultdict(dict)
    below_untuned: dict[str, dict[str, bool]] = defaultdict(dict)
    for _, row, by_label, label, comparison in learned_entries(paths):
        adam, mine = by_label[TUNED_ADAM], by_label[label]
        ratios[label][row["row"]] = (mine["final_loss"] / adam["final_loss"],
                                     mine["mean_loss"] / adam["mean_loss"])
        verdicts[label][row["row"]] = comparison["verdict"]
        if UNTUNED_ADAM in by_label:
            below_untuned[label][row["row"]] = \
                mine["final_loss"] < by_label[UNTUNED_ADAM]["final_loss"]
    lines = ["| learned optimizer | wins / ties / losses vs tuned Adam | geometric mean of final "
             "loss / tuned Adam's | same for mean loss | rows | final loss below Adam "
             "(lr=1e-3) | same as column 3, each ratio clipped to [0.1, 10] |",
             "|---|---|---|---|---|---|---|"]
    for label, rows in ratios.items():
        counts = [sum(v == kind for v in verdicts[label].values())
                  for kind in ("wins", "tie", "loses")]
        finals, means = ([math.log(r[k]) if r[k] > 0 else -math.inf for r in rows.values()]
                         for k in (0, 1))
        lines.append(f"| {label} | {counts[0]} / {counts[1]} / {counts[2]} | "
                     f"{math.exp(sum(finals) / len(finals)):.3g} | "
                     f"{math.exp(sum(means) / len(means)):.3g} | {len(rows)} | "
                     f"{sum(below_untuned[label].values())} / {len(below_untuned[label])} | "
                     f"{clipped_geometric_mean([r[0] for r in rows.values()]):.3g} |")
    return lines


def zero_loss_wins(adam: dict) -> bool:
    """Whether an optimizer with final loss 0 on every test seed would win against tuned Adam
    (``adam``: its entry in a row of ``results.json``): the paired differences are then
    :math:`-A_i`, with tuned Adam's mean and CI half-width, so the verdict is a win exactly
    when that whole interval lies above 0."""
    return math.isfinite(adam["final_loss"]) and adam["final_loss"] > adam["final_ci"]


def row_lines(paths: list[str]) -> list[str]:
    """Per row and learned optimizer: the verdict, final loss over tuned Adam's, whether it is
    lower, and whether a zero-loss optimizer could win the row (:func:`zero_loss_wins`);
    then per learned optimizer the counts of each."""
    lines = ["| row | learned optimizer | verdict | final loss / tuned Adam's | lower mean "
             "final loss | a zero-loss optimizer would win |", "|---|---|---|---|---|---|"]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for _, row, by_label, label, comparison in learned_entries(paths):
        adam = by_label[TUNED_ADAM]
        ratio = by_label[label]["final_loss"] / adam["final_loss"]
        lower, winnable = ratio < 1.0, zero_loss_wins(adam)
        tally = counts[label]
        tally[0] += comparison["verdict"] == "wins"
        tally[1] += lower
        tally[2] += winnable
        tally[3] += 1
        lines.append(f"| {row['row']} | {label} | {comparison['verdict']} | {ratio:.3g} | "
                     f"{'yes' if lower else 'no'} | {'yes' if winnable else '**no**'} |")
    for label, (wins, lower, winnable, rows) in counts.items():
        lines.append(f"\n{label}: wins {wins} / {rows} rows; lower mean final loss on "
                     f"{lower} / {rows}; a zero-loss optimizer would win {winnable} / {rows}")
    return lines


_VERDICT_ORDER = {"wins": 0, "tie": 1, "both diverge": 2, "loses": 3}


def best_of_lines(paths: list[str]) -> list[str]:
    """Per row, the best of every learned optimizer in ``paths``: an oracle that picks per row
    (thirty-ninth round). Its best verdict, with the optimizer that has it (named
    ``folder/label``, the folder holding its ``results.json``), and its smallest final loss /
    tuned Adam's, with the optimizer that has that (the first one, on equal values); then the oracle's counts of
    verdicts and the clipped geometric mean of the smallest ratios (:data:`CLIP`)."""
    best: dict[str, dict[str, tuple]] = {}
    for path, row, by_label, label, comparison in learned_entries(paths):
        ratio = by_label[label]["final_loss"] / by_label[TUNED_ADAM]["final_loss"]
        entry = best.setdefault(row["row"], {})
        name = f"{Path(path).parent.name}/{label}"
        candidate = (_VERDICT_ORDER[comparison["verdict"]], comparison["verdict"], name)
        if "verdict" not in entry or candidate[0] < entry["verdict"][0]:
            entry["verdict"] = candidate
        if "ratio" not in entry or ratio < entry["ratio"][0]:
            entry["ratio"] = (ratio, name)
    lines = ["| row | best verdict | by | smallest final loss / tuned Adam's | by |",
             "|---|---|---|---|---|"]
    for name, entry in best.items():
        (_, verdict, verdict_by), (ratio, ratio_by) = entry["verdict"], entry["ratio"]
        lines.append(f"| {name} | {verdict} | {verdict_by} | {ratio:.3g} | {ratio_by} |")
    counts = [sum(e["verdict"][1] == kind for e in best.values())
              for kind in ("wins", "tie", "loses")]
    score = clipped_geometric_mean([e["ratio"][0] for e in best.values()])
    lines.append(f"\nbest of the learned optimizers, row by row: wins / ties / losses "
                 f"{counts[0]} / {counts[1]} / {counts[2]} of {len(best)} rows; clipped "
                 f"geometric mean of the smallest ratios {score:.3g}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files written by evaluate")
    parser.add_argument("--rows", action="store_true",
                        help="per row: verdict, lower mean, and whether zero loss could win")
    parser.add_argument("--best-of", action="store_true",
                        help="per row, the best verdict and ratio of any learned optimizer given")
    args = parser.parse_args()
    if args.rows and args.best_of:
        parser.error("--rows and --best-of are two views; give one")
    view = row_lines if args.rows else best_of_lines if args.best_of else summarize
    print("\n".join(view(args.results)))


if __name__ == "__main__":
    main()
