r"""Which starts of the panel screen fail, and how (issue 10, thirty-second round).

``stable_epoch.py --screen panel`` runs the stability panel's functions from 20 starts each
(seeds :math:`10^8 + i`). In the thirty-second and thirty-third rounds every failure was on
the steep sine valley, :math:`f = (1 - x)^2 + 1000 (y - \sin 2x)^2`. This prints

* ``counts JSON...``: for screen reports written by ``stable_epoch.py --out``, how many of
  the screened epochs rose above ``--peak`` times its start from each start of one function;
* ``starts``: that function's starting loss from each screen start and each panel start
  (5000-5009);
* ``runs WEIGHTS...``: for bundles (folders or bundled names) and for Adam at ``--adam-lrs``,
  from ``--starts`` (screen start indices), each run's largest loss over its start, the first
  step above ``--peak`` times its start, the step of the largest loss and the final loss;
* ``trace WEIGHTS``: one bundle's run from one screen start (``--starts``' first), every
  ``--every`` steps and at every step above ``--peak`` times its start (up to ``--steps``):
  the loss over its start, the tensor's step scale :math:`e^{\ell_t}`
  (:meth:`LearnedLSTMOptim.step_scale`), the point, its height above the valley floor
  :math:`y - \sin 2x` (sine valleys) and the step taken. Thirty-sixth round: how fast the
  scale grows along a steep floor, and what it is when the loss jumps.

    python benchmarks/screen_starts.py counts docs/evidence/step-scale-probe/round32/pscreen-s{0,2,3}.json \
        docs/evidence/step-scale-probe/round33/pscreen-s3.json
    python benchmarks/screen_starts.py starts
    python benchmarks/screen_starts.py runs default /tmp/r30/epochs-s0/VARIANT/epoch-04 \
        --starts 5 10 15 19 3 11 --adam-lrs 0.001 0.01 0.1
    python benchmarks/screen_starts.py trace /tmp/r35/epochs-s1/VARIANT/epoch-06 --starts 5 \
        --steps 700 --every 20
"""
import argparse
import collections
import json

import torch

from learned_optim import LearnedLSTMOptim
from learned_optim.evaluation.runner import (OptimizerSpec, run_losses,
                                             run_losses_as_tensors)
from stable_epoch import SCREEN_SEED
from step_scale_probe import PANEL, SEEDS as PANEL_SEEDS


def failing_starts(reports: list[dict], function: str, peak: float) -> tuple[int, dict]:
    """How many screened epochs of ``reports`` ran ``function``, and per start index how many
    of them rose above ``peak`` times its start there."""
    counts, epochs = collections.Counter(), 0
    for report in reports:
        for entry in report["epochs"]:
            peaks = entry.get("peaks_by_function", {}).get(function)
            if peaks is None:
                continue
            epochs += 1
            counts.update(i for i, value in enumerate(peaks) if value > peak)
    return epochs, dict(sorted(counts.items()))


def run_summary(curves: torch.Tensor, peak: float) -> list[str]:
    """Per run of ``curves`` ``(runs, steps)``: peak / start, the first step above ``peak``
    times the start (``-`` if none), the step of the largest loss and the final loss."""
    lines = []
    for curve in curves:
        ratio = curve / curve[0]
        above = (ratio > peak).nonzero()
        first = int(above[0]) if len(above) else "-"
        lines.append(f"peak {float(ratio.max()):.3g}x  first above {peak:g}x: {first}  "
                     f"largest at {int(ratio.argmax())}  final {float(curve[-1]):.2g}")
    return lines


def trace_lines(family, seed: int, weights: str, steps: int, every: int,
                peak: float) -> list[str]:
    """:func:`main`'s ``trace`` mode: one line per ``every`` steps and per step whose loss is
    above ``peak`` times the start, for ``weights`` on ``family``'s task of ``seed``."""
    task = family.sample(seed)
    (name, start), = task.params.items()
    point = start.clone().requires_grad_(True)
    optimizer = LearnedLSTMOptim([point], weights=weights)
    lines, first = [], None
    for step in range(steps):
        optimizer.zero_grad()
        loss = task.loss({name: point}, step)
        loss.backward()
        value = float(loss.detach())
        first = value if first is None else first
        before = point.detach().clone()
        optimizer.step()
        if step % every and value <= peak * first:
            continue
        line = (f"step {step:5d}  loss {value:9.3g} ({value / first:7.2f}x start)  "
                f"scale {optimizer.step_scale(point):6.2f}  point "
                f"({', '.join(f'{v:+.4f}' for v in before.tolist())})")
        if family.name.startswith("sine-valley") and before.numel() == 2:
            line += f"  above floor {float(before[1] - torch.sin(2 * before[0])):+.2e}"
        step_taken = (point.detach() - before).tolist()
        lines.append(line + f"  step ({', '.join(f'{v:+.2e}' for v in step_taken)})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("counts", "starts", "runs", "trace"))
    parser.add_argument("inputs", nargs="*", help="screen reports (counts) or weights (runs)")
    parser.add_argument("--function", default="sine-valley-1000")
    parser.add_argument("--peak", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=20, help="screen starts (starts mode)")
    parser.add_argument("--starts", type=int, nargs="+", default=[5, 10, 15, 19])
    parser.add_argument("--adam-lrs", type=float, nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=1000, help="trace: steps to run")
    parser.add_argument("--every", type=int, default=20, help="trace: print every N steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    family = next(f for f in PANEL if f.name == args.function)
    if args.mode == "counts":
        reports = [json.load(open(path)) for path in args.inputs]
        epochs, counts = failing_starts(reports, args.function, args.peak)
        print(f"{epochs} epochs ran {args.function}; epochs above {args.peak:g}x per start: "
              f"{counts}")
    elif args.mode == "starts":
        for label, seeds in (("screen", [SCREEN_SEED + i for i in range(args.tasks)]),
                             ("panel", list(PANEL_SEEDS))):
            for index, seed in enumerate(seeds):
                task = family.sample(seed)
                print(f"{label} {index:2d} (seed {seed}) start loss "
                      f"{float(task.loss(task.params, 0)):.4g}")
    elif args.mode == "trace":
        for weights in args.inputs:
            print(f"{weights}, {args.function} from screen start {args.starts[0]}")
            print("\n".join(trace_lines(family, SCREEN_SEED + args.starts[0], weights,
                                         args.steps, args.every, args.peak)))
    else:
        seeds = [SCREEN_SEED + i for i in args.starts]
        for lr in args.adam_lrs:
            curves = run_losses(family, seeds, family.horizon, OptimizerSpec("Adam", "adam"),
                                (lr,), side_by_side=False)[0]
            for start, line in zip(args.starts, run_summary(curves, args.peak)):
                print(f"Adam lr={lr:g} start {start:2d}: {line}")
        for weights in args.inputs:
            curves = run_losses_as_tensors(family, seeds, family.horizon,
                                           OptimizerSpec("learned", "learned", weights))[0]
            for start, line in zip(args.starts, run_summary(curves, args.peak)):
                print(f"{weights} start {start:2d}: {line}")


if __name__ == "__main__":
    main()
