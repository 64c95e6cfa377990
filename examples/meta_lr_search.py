"""A small search over the meta-optimizer's learning rate (the paper used random search).

For each task family and each Adam learning rate for φ, meta-train briefly and report the best
validation final loss. The presets in learned_optim/meta/presets.py use the outcome.

    python examples/meta_lr_search.py
"""

import time

from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.tasks import get_task_family

FAMILIES = {"quadratic": dict(epochs=4, tasks_per_epoch=10, validation_tasks=4),
            "digits-mlp": dict(epochs=3, tasks_per_epoch=10, validation_tasks=4)}
META_LRS = (1e-3, 3e-3, 1e-2, 3e-2)


def main() -> None:
    print("| task family | meta_lr | best validation final loss | untrained | seconds |")
    print("|---|---|---|---|---|")
    for family, budget in FAMILIES.items():
        for meta_lr in META_LRS:
            started = time.perf_counter()
            trainer = MetaTrainer(get_task_family(family),
                                  MetaTrainConfig(meta_lr=meta_lr, seed=0, **budget))
            metrics = trainer.train(progress=False).provenance["metrics"]
            print(f"| {family} | {meta_lr:g} | {metrics['validation_final_loss']:.4g} | "
                  f"{metrics['untrained_validation_final_loss']:.4g} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
