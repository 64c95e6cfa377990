r"""Choose which epoch of a meta-training run to keep, for stability as well as speed (issue 10,
twenty-fourth round).

:class:`~learned_optim.meta.MetaTrainer` keeps the epoch with the best validation score, which
for issue 10's recipes is measured on 1,000-step tanh digits MLPs alone. In the nineteenth and
the curved-valley recipes every seed that kept an early epoch (2, 3, 3, 4) blew up on the
stability panel (``step_scale_probe.py``) and every seed that kept a late one did not. This
script takes every epoch's weights of one run (``default_variants.py --keep-epochs DIR`` or
``meta-train --keep-epochs DIR``), ranks the epochs by the trainer's own validation score
(each bundle's ``provenance["history"][-1]``), and keeps the best-ranked epoch that passes a
*screen*: on ``--tasks`` generated curved valleys
(:class:`~learned_optim.tasks.CurvedValleyFamily`, seeds :math:`10^8 + i`, never drawn for
meta-training, validation, the panel or the held-out suite) run for ``--horizon`` steps, every
task's loss stays at or below ``--peak`` times its start,

.. math::
    \max_t f_i(\theta_t) \le \rho\, f_i(\theta_0) \quad \text{for every screened task } i.

The panel's blow-up (above 10x) is too coarse for this: on 20 screened valleys at 3,000 steps
the early epoch 3 of the twenty-third round's seeds 2 and 3 (which blow up on the panel) peaks
at 7x and 5.3x its start, the same runs' epoch 12 (which do not) at 1.0x.

What it did (README, twenty-fourth and twenty-fifth rounds): on the curved-valley recipe it
moved seeds 2 and 3 from epoch 3 to epochs 2 and 4, neither of which blows up on the panel; on
``default``'s recipe it moved seed 1 from epoch 2 to epoch 7 but passed seed 2's epoch 4
(1.0x), which blows up on the panel's steep sine and cubic valleys. A screen of 20 valleys
catches some overshooting epochs, not all.

``--screen panel`` (thirty-second round) screens on the panel's own seven functions instead
(``step_scale_probe.PANEL``, each at its own horizon) from ``--tasks`` other starts each
(seeds :math:`10^8 + i`; the panel's are 5000-5009), the functions that blew up most often on
the panel first, stopping an epoch at its first function with a run above ``--peak``: over the
panels of rounds 19-31 the epochs that blow up differ from those that do not in near-misses
on those very functions (second-worst peaks of 9-12x on the steep sine and cubic valleys),
which curved valleys do not show. The seeds of a function run as separate tensors of one
optimizer (:func:`~learned_optim.evaluation.runner.run_losses_as_tensors`). What it did
(README, thirty-second to thirty-fourth rounds): it rejected all seven epochs that had blown
up on the panel and four that the panel passed (four of its steep sine valley starts lie on
the valley floor), and passed one that blows up on the panel's Dixon-Price function. The
report's ``horizon`` is ``null`` in this mode (each function runs for its own; the reports
of the thirty-second to forty-sixth rounds record the unused ``--horizon``).

    python benchmarks/stable_epoch.py /tmp/r24/epochs-s2/VARIANT/epoch-* --out /tmp/r24/s2.json
    python benchmarks/stable_epoch.py /tmp/r30/epochs-s0/VARIANT/epoch-* --screen panel \
        --tasks 20 --peak 10 --out /tmp/r32/pscreen-s0.json

Prints one line per screened epoch (score, worst peak / start, pass) and the kept epoch's
folder; ``--all`` screens every epoch, not just down to the first that passes. The panel and
the validation suite judge the kept epoch afterwards; nothing here reads them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from learned_optim import WeightsBundle
from learned_optim.evaluation.evaluate import peak_over_start
from learned_optim.evaluation.runner import OptimizerSpec, run_losses, run_losses_as_tensors
from learned_optim.meta import trainer  # its epoch_score: the trainer's own selection score
from learned_optim.tasks import CurvedValleyFamily
from step_scale_probe import PANEL  # the stability panel's functions

SCREEN_SEED = 10**8
# the panel's functions, those with the most blow-ups over the panels of rounds 19-31 first
PANEL_SCREEN_ORDER = ("sine-valley-1000", "cubic-valley", "beale", "sine-valley",
                      "dixon-price-10", "valley-1e4", "six-hump-camel")


def epoch_score(folder: str | Path) -> tuple[int, float]:
    """The epoch of a kept bundle and the validation score the trainer gave it (lower is
    better): for a folder written by ``--keep-epochs`` the last entry of its provenance
    history (``epoch_kept``); for a run's final bundle, which holds its best epoch
    (``metrics["best_epoch"]``) but records every epoch's history, that epoch's entry."""
    provenance = WeightsBundle.from_pretrained(folder).provenance
    history = provenance.get("history") or []
    if not history or "epoch" not in history[-1]:
        raise ValueError(f"{folder} has no meta-training history in its provenance; give "
                         "folders written by --keep-epochs")
    last = history[-1]
    if "epoch_kept" in provenance:
        if last["epoch"] != provenance["epoch_kept"]:
            raise ValueError(f"{folder}: its history ends at epoch {last['epoch']} but it was "
                             f"kept at epoch {provenance['epoch_kept']}")
        entry = last
    else:
        best = (provenance.get("metrics") or {}).get("best_epoch", last["epoch"])
        entry = next((e for e in history if e.get("epoch") == best), None)
        if entry is None:
            raise ValueError(f"{folder}: its best epoch {best} is not in its history")
    return int(entry["epoch"]), float(trainer.epoch_score(entry))


def screen_peaks(weights: str | Path, tasks: int, horizon: int) -> list[float]:
    """Per screened curved valley, the largest loss over the run divided by the start
    (``inf`` when the run went non-finite)."""
    seeds = [SCREEN_SEED + i for i in range(tasks)]
    return peak_over_start(run_losses(CurvedValleyFamily(), seeds, horizon,
                                      OptimizerSpec("screened", "learned", str(weights)))[0])


def panel_screen_peaks(weights: str | Path, tasks: int, limit: float) -> dict[str, list[float]]:
    """The panel's kinds of function (``step_scale_probe.PANEL``, each at its own horizon)
    from ``tasks`` other starts each (seeds :math:`10^8 + i`; the panel's are 5000-5009): per
    function, every run's largest loss over its start. Functions run in ``PANEL_SCREEN_ORDER``
    (those that blew up most often on the panel first) and stop after the first with a run
    above ``limit``, which already fails the epoch."""
    spec = OptimizerSpec("screened", "learned", str(weights))
    families = {family.name: family for family in PANEL}
    seeds = [SCREEN_SEED + i for i in range(tasks)]
    peaks = {}
    for name in PANEL_SCREEN_ORDER:
        family = families[name]
        peaks[name] = peak_over_start(
            run_losses_as_tensors(family, seeds, family.horizon, spec)[0])
        if not passes(peaks[name], limit):
            break
    return peaks


def passes(peaks: Sequence[float], limit: float) -> bool:
    """Whether every task's peak / start ratio is finite and at most ``limit``."""
    return all(math.isfinite(p) and p <= limit for p in peaks)


def choose_epoch(folders: Sequence[str | Path], *, tasks: int, horizon: int, limit: float,
                 screen_all: bool = False, screen: str = "valleys", log=print) -> dict:
    """Screen ``folders`` best validation score first; return a report whose ``"kept"`` is the
    folder of the first that passes (``None`` when none does). ``screen``: ``"valleys"``
    (generated curved valleys, ``horizon`` steps) or ``"panel"`` (the panel's functions from
    other starts, :func:`panel_screen_peaks`)."""
    ranked = sorted((epoch_score(f) + (str(f),) for f in folders), key=lambda e: (e[1], e[0]))
    # the panel's functions each run for their own horizon: none is recorded for them
    report = {"screen": screen, "tasks": tasks,
              "horizon": horizon if screen == "valleys" else None, "peak_limit": limit,
              "screen_seeds": [SCREEN_SEED, SCREEN_SEED + tasks - 1], "epochs": [],
              "kept": None, "kept_epoch": None}
    for epoch, score, folder in ranked:
        started = time.time()
        if screen == "panel":
            by_function = panel_screen_peaks(folder, tasks, limit)
            peaks = [p for values in by_function.values() for p in values]
        else:
            by_function, peaks = None, screen_peaks(folder, tasks, horizon)
        ok = passes(peaks, limit)
        entry = {"epoch": epoch, "score": score, "folder": folder, "peaks": peaks,
                 "passes": ok}
        if by_function is not None:
            entry["peaks_by_function"] = by_function
        report["epochs"].append(entry)
        log(f"epoch {epoch:2d}  score {score:.4g}  worst peak/start {max(peaks):.3g}  "
            f"{'passes' if ok else 'fails'}  ({time.time() - started:.0f} s)")
        if ok and report["kept"] is None:
            report["kept"], report["kept_epoch"] = folder, epoch
            if not screen_all:
                break
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("epochs", nargs="+", help="one run's epoch folders (DIR/epoch-*)")
    parser.add_argument("--tasks", type=int, default=20, help="curved valleys screened")
    parser.add_argument("--horizon", type=int, default=3000, help="steps per screened valley")
    parser.add_argument("--peak", type=float, default=2.0,
                        help="largest loss / start allowed on every screened valley")
    parser.add_argument("--screen", choices=("valleys", "panel"), default="valleys",
                        help="generated curved valleys (--horizon steps) or the panel's "
                        "functions from --tasks other starts each (their own horizons)")
    parser.add_argument("--all", action="store_true", help="screen every epoch")
    parser.add_argument("--out", default=None, help="write the report as JSON")
    args = parser.parse_args()
    if args.tasks < 1 or args.horizon < 2 or not args.peak >= 1:
        parser.error("--tasks must be >= 1, --horizon >= 2 and --peak >= 1")
    torch.set_num_threads(1)
    report = choose_epoch(args.epochs, tasks=args.tasks, horizon=args.horizon,
                          limit=args.peak, screen_all=args.all, screen=args.screen)
    print(f"kept: {report['kept']}" if report["kept"] else
          f"no epoch passes the screen (peak <= {args.peak:g}x start)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
