"""Write the weights of a default_variants.py run's *last* epoch, from its checkpoint, as a
bundle (issue 10, a probe after the twenty-third round; nothing is shipped from it).

A run keeps the epoch that scores best on its validation family; its checkpoint (written by
``--checkpoint-dir``) holds where the run ended: φ and the Polyak average φ̄ after the last
epoch. This writes what validation scored at that epoch (φ̄ when averaging), so the kept
epoch and the last one of the *same* run can be compared paired (no other seed in it):

    python benchmarks/last_epoch_weights.py --variant VARIANT --seed 2 \\
        --checkpoint-dir /tmp/r22/ck-s2/VARIANT --out /tmp/r22/last-s2

The bundle's provenance records ``epoch_kept`` (the last epoch) and this command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from default_variants import VARIANTS, variant_trainer  # noqa: E402


def last_epoch_bundle(variant: str, seed: int, checkpoint_dir: Path):
    """The bundle of the last epoch validation scored in ``checkpoint_dir``'s run."""
    trainer = variant_trainer(variant, seed)
    trainer.load_checkpoint(checkpoint_dir)
    return trainer.epoch_bundle()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--checkpoint-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    bundle = last_epoch_bundle(args.variant, args.seed, args.checkpoint_dir)
    bundle.provenance["command"] = " ".join(["python", "benchmarks/last_epoch_weights.py"]
                                            + sys.argv[1:])
    bundle.save_pretrained(args.out)
    print(f"{args.out}: epoch {bundle.provenance['epoch_kept']}, "
          f"fingerprint {bundle.fingerprint()}")


if __name__ == "__main__":
    main()
