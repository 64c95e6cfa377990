"""Score every epoch a meta-training run kept (``meta-train --keep-epochs DIR``) on the
validation suite, against tuned Adam, without re-tuning Adam for each epoch.

    python benchmarks/score_epochs.py --reference docs/evidence/validation/run35/results.json \\
        /tmp/r11/epochs0/epoch-* --out /tmp/r11/epochs0.json

Adam's lr per row is read from a ``results.json`` that ``evaluate --suite validation`` wrote
(the same rows, tuned the same way); Adam runs once per row at that lr on the suite's test
seeds, and each epoch's weights run on the same seeds. For each epoch it prints the suite's
criterion (the clipped geometric mean over rows of final loss / tuned Adam's, see
``summarize_validation.py``) and the paired wins / ties / losses. This shows how much the
choice of the kept epoch can change the validation score of one training run (issue 10,
eleventh round); the held-out suite is never run here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from learned_optim.evaluation import select_rows
from learned_optim.evaluation.runner import OptimizerSpec, final_loss, run_losses
from learned_optim.evaluation.suites import learned, protocol_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_validation import (TUNED_ADAM, against_tuned_adam,  # noqa: E402
                                  clipped_geometric_mean, tuned_adam_lrs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("epochs", nargs="+", help="weights folders (e.g. DIR/epoch-*)")
    parser.add_argument("--reference", required=True,
                        help="results.json of evaluate --suite validation (Adam's tuned lrs)")
    parser.add_argument("--out", default=None, help="write every ratio and verdict as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lrs = tuned_adam_lrs(args.reference)
    protocol = protocol_for("validation", quick=False)
    rows = [row for row in select_rows("validation") if row.name in lrs]
    adam = {}
    for row in rows:
        curves = run_losses(row.family(), protocol.test_seeds, row.horizon,
                            OptimizerSpec(TUNED_ADAM, "adam"), (lrs[row.name],))[0]
        adam[row.name] = final_loss(curves).tolist()
    report = {"reference": args.reference, "test_seeds": list(protocol.test_seeds),
              "tuned_adam_lr": lrs, "epochs": {}}
    print("| weights | wins / ties / losses | clipped geo. mean final / tuned Adam | per row |")
    print("|---|---|---|---|")
    for folder in args.epochs:
        ratios, verdicts = {}, {}
        for row in rows:
            curves = run_losses(row.family(), protocol.test_seeds, row.horizon,
                                learned(folder))[0]
            entry = against_tuned_adam(final_loss(curves).tolist(), adam[row.name])
            ratios[row.name], verdicts[row.name] = entry["ratio"], entry["verdict"]
        counts = [sum(v == kind for v in verdicts.values()) for kind in ("wins", "tie", "loses")]
        score = clipped_geometric_mean(list(ratios.values()))
        report["epochs"][folder] = {"score": score, "ratios": ratios, "verdicts": verdicts}
        print(f"| {folder} | {counts[0]} / {counts[1]} / {counts[2]} | {score:.3g} | "
              + ", ".join(f"{name.removeprefix('val-')} {r:.2g}" for name, r in ratios.items())
              + " |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
