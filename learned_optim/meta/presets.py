"""The recipes that produced every bundled optimizer in ``pretrained/``.

``python -m learned_optim meta-train --preset NAME --out pretrained/NAME`` re-runs one;
``--preset all`` re-runs them all. Budgets are sized for 2 CPU cores (see the README for the
measured wall times).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..tasks import get_task_family
from ..weights import WeightsBundle
from .config import MetaTrainConfig
from .trainer import CHECKPOINT_FILE, MetaTrainer

__all__ = ["Preset", "PRESETS", "ADAPTIVE_NET", "DEFAULT_NET", "run_preset", "preset_command",
           "keep_every_epoch"]


@dataclass(frozen=True)
class Preset:
    """Task family, validation family and config overrides of one bundled optimizer."""

    task: str
    validation_task: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""


#: The base net of issue 10's recipes: the paper's 2 x 20 LSTM reading scale-free momentum
#: features, stepping direction x exp(magnitude), started at Adam(lr=0.01).
ADAPTIVE_NET = dict(hidden_size=20, num_layers=2, preprocessing="log_sign", p=10.0,
                    output_scale=0.01, features="adaptive", update="direction_magnitude",
                    magnitude_scale=1.0)

#: The net of ``default`` since issue 10's nineteenth round: that net plus a fixed Adam step
#: (``nominal_step``) and each tensor's step scaled by a factor adapted online by hypergradient
#: descent (``hypergradient_rate``, Baydin et al. 2018; eighteenth round), bounded to [1/30, 30]
#: (``step_scale_bound``; nineteenth round).
DEFAULT_NET = dict(ADAPTIVE_NET, nominal_step=True, hypergradient_rate=0.03,
                   step_scale_bound=math.log(30.0))

PRESETS: dict[str, Preset] = {
    "l2l-quadratic": Preset(
        "quadratic", config=dict(epochs=10, tasks_per_epoch=20, validation_tasks=8, meta_lr=3e-3),
        description="paper Section 3.1: random 10-d quadratics"),
    "l2l-digits-mlp": Preset(
        "digits-mlp", config=dict(epochs=15, tasks_per_epoch=20, validation_tasks=4, meta_lr=1e-2),
        description="paper Section 3.2 (MNIST) on 8x8 digits: 64-20-10 sigmoid MLP"),
    "l2l-digits-cnn": Preset(
        "digits-cnn", config=dict(epochs=8, tasks_per_epoch=10, validation_tasks=3, meta_lr=1e-2),
        description="paper Section 3.3 (CIFAR) on digits: conv and fc LSTMs"),
    "l2l-digits-cnn-sub": Preset(
        "digits-cnn-sub", config=dict(epochs=8, tasks_per_epoch=10, validation_tasks=3,
                                      meta_lr=1e-2),
        description="paper Section 3.3's LSTM-sub: the digits CNN on labels 5-9 only, for "
                    "transfer to labels 0-4 (digits-cnn-5)"),
    "l2l-neural-art": Preset(
        "neural-art", config=dict(epochs=6, tasks_per_epoch=8, validation_tasks=3, meta_lr=3e-3),
        description="paper Section 3.4: style transfer on 64x64 images"),
    "default": Preset(
        "mixture-wide", validation_task="digits-mlp-tanh-1000",
        config=dict(epochs=12, tasks_per_epoch=16, validation_tasks=4, meta_lr=3e-3,
                    horizon=800, meta_objective="log_loss", net=DEFAULT_NET,
                    weight_average_decay=0.998),
        description="adaptive features, a fixed Adam(lr=0.01) step plus a learned direction x "
                    "exp(magnitude) one, each tensor's step scaled by a factor adapted by "
                    "hypergradient descent (rate 0.03) within [1/30, 30]; wide mixture: "
                    "quadratics, digits MLPs (sigmoid/tanh/ReLU, widths 10-80, depth 1-2, batch "
                    "32-256) and synthetic teacher-student regressions at random target and "
                    "initialisation scales, 800-step runs, log-loss meta-objective, the epoch kept "
                    "chosen on 1,000-step tanh digits MLPs, Polyak-averaged (beta 0.998); the "
                    "best variant of benchmarks/default_variants.py on --suite validation"),
}


def preset_command(name: str, out: str | Path) -> str:
    return f"python -m learned_optim meta-train --preset {name} --out {out}"


def keep_every_epoch(directory: str | Path | None
                     ) -> Callable[[MetaTrainer], None] | None:
    """An ``on_epoch_end`` for :meth:`MetaTrainer.train` that writes the weights validation
    just scored to ``directory/epoch-NN`` (rank 0 only), for choosing among epochs later;
    ``None`` when ``directory`` is ``None``."""
    if directory is None:
        return None

    def save(trainer: MetaTrainer) -> None:
        if trainer.rank == 0:
            trainer.epoch_bundle().save_pretrained(Path(directory) / f"epoch-{trainer.epoch:02d}")
    return save


def run_preset(name: str, out: str | Path, *, seed: int = 0, progress: bool = True,
               checkpoint_dir: str | Path | None = None, resume: bool = False,
               keep_epochs: str | Path | None = None,
               device: str | None = None) -> WeightsBundle:
    """Meta-train preset ``name`` and write its bundle to ``out`` (with provenance);
    with ``keep_epochs``, also every epoch's scored weights (:func:`keep_every_epoch`);
    ``device`` as in :class:`MetaTrainer` (default the CPU)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[name]
    config = MetaTrainConfig(**{**preset.config, "seed": seed})
    validation = get_task_family(preset.validation_task) if preset.validation_task else None
    trainer = MetaTrainer(get_task_family(preset.task), config, validation_family=validation,
                          checkpoint_dir=checkpoint_dir, name=name,
                          command=preset_command(name, out) + (f" --seed {seed}" if seed else "")
                          + (f" --device {device}" if device else ""),
                          device=device)
    if resume and checkpoint_dir and (Path(checkpoint_dir) / CHECKPOINT_FILE).exists():
        trainer.load_checkpoint(checkpoint_dir)
    started = time.perf_counter()
    bundle = trainer.train(progress=progress, on_epoch_end=keep_every_epoch(keep_epochs))
    bundle.provenance["preset"] = name
    bundle.provenance["task_family"] = preset.task
    bundle.provenance["description"] = preset.description
    bundle.provenance["total_wall_time_s"] = round(time.perf_counter() - started, 1)
    bundle.save_pretrained(out)
    return bundle
