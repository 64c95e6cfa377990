r"""Probe: would a per-problem step size let `default` beat tuned Adam? (issue 10; validation
suite only, nothing shipped)

`default` takes one step size for every problem; tuned Adam gets the best lr of a grid per
row. This runs `default` with its whole step multiplied by a constant :math:`c` (the param
group's ``lr``, :math:`\theta_{t+1} = \theta_t + c\,g_t`) for each :math:`c` of a grid, on the
validation suite's test seeds, and compares each against tuned Adam (lr read from
``docs/evidence/validation/run36``, re-run here on the same seeds). The best :math:`c` per row
is an oracle: it bounds what any way of setting the step from outside the net (a
hypergradient, a relative or distance-based step, a schedule) could gain, and separates rows
lost on the step size (some :math:`c` wins) from rows lost on the direction (none does).

    python benchmarks/step_multiplier_probe.py --out /tmp/sm/probe.json

Prints per row the verdict and final-loss ratio (mean over seeds, learned / tuned Adam) at
each :math:`c`, then per :math:`c` the clipped geometric mean and wins / ties / losses, and
the same for the per-row best :math:`c` (chosen on these seeds, so optimistic).
"""
import argparse
import json
import time
from pathlib import Path

import torch

from learned_optim.evaluation import select_rows
from learned_optim.evaluation.runner import OptimizerSpec, final_loss, run_losses
from learned_optim.evaluation.suites import protocol_for
from summarize_validation import against_tuned_adam, clipped_geometric_mean, tuned_adam_lrs

TUNED = Path(__file__).resolve().parents[1] / "docs/evidence/validation/run36/results.json"
MULTIPLIERS = (0.1, 0.3, 1.0, 3.0, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default", help="bundled name or bundle folder")
    parser.add_argument("--multipliers", type=float, nargs="+", default=list(MULTIPLIERS))
    parser.add_argument("--out", required=True, help="JSON file for every seed's final loss")
    args = parser.parse_args()
    torch.set_num_threads(1)
    protocol = protocol_for("validation", False)
    adam_lrs = tuned_adam_lrs(TUNED)
    spec = OptimizerSpec("learned", "learned", args.weights)
    results = {}
    for row in select_rows("validation"):
        family, start = row.family(), time.time()
        adam = final_loss(run_losses(family, protocol.test_seeds, row.horizon,
                                     OptimizerSpec("adam", "adam"), (adam_lrs[row.name],))[0])
        learned = final_loss(run_losses(family, protocol.test_seeds, row.horizon, spec,
                                        tuple(args.multipliers)))
        res = {"adam_lr": adam_lrs[row.name], "adam_final": adam.tolist()}
        for c, finals in zip(args.multipliers, learned):
            res[str(c)] = against_tuned_adam(finals.tolist(), res["adam_final"])
        results[row.name] = res
        print(row.name, round(time.time() - start), "adam lr", adam_lrs[row.name],
              {c: (res[str(c)]["verdict"], round(res[str(c)]["ratio"], 3))
               for c in args.multipliers}, flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        json.dump(results, open(args.out, "w"), indent=1)
    rows = list(results)
    best = {r: min(args.multipliers, key=lambda c: results[r][str(c)]["ratio"]) for r in rows}
    for label, pick in [(f"c={c}", {r: c for r in rows}) for c in args.multipliers] + [
            ("best c per row", best)]:
        verdicts = [results[r][str(pick[r])]["verdict"] for r in rows]
        score = clipped_geometric_mean([results[r][str(pick[r])]["ratio"] for r in rows])
        print(label, "clipped", round(score, 3), "W/T/L", verdicts.count("wins"),
              verdicts.count("tie"), verdicts.count("loses"))
    print("best c per row:", best)


if __name__ == "__main__":
    main()
