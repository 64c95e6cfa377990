"""MetaTrainConfig: every knob of meta-training, JSON-serialisable and validated."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from ..network import LSTMOptimizerConfig

__all__ = ["MetaTrainConfig"]


@dataclass
class MetaTrainConfig:
    """Meta-training hyperparameters (Andrychowicz et al. 2016, Section 2 and 3)."""

    # Meta-training epochs; φ is validated and the best kept after each.
    epochs: int = 20
    # Optimizees sampled per epoch (the PyTorch reproduction used 20).
    tasks_per_epoch: int = 20
    # Optimizer steps per optimizee, T (paper: 100); with horizon_min, the longest T.
    horizon: int = 100
    # Randomised horizons (issue 10): if > 0, every meta-batch unrolls its own T drawn
    # log-uniformly from [horizon_min, horizon] (from its first task's seed, so a resumed run
    # draws the same). Log-uniform [200, 2000] costs what a fixed T = 782 costs. 0: always T.
    horizon_min: int = 0
    # Truncated BPTT length: a meta-update after every `unroll` steps (paper: 20).
    unroll: int = 20
    # Optimizees unrolled side by side per meta-update, whose meta-losses are averaged; split
    # across processes when meta-training with a process group. Divides tasks_per_epoch.
    meta_batch_size: int = 1
    # Adam learning rate for φ (see the README for how it was chosen).
    meta_lr: float = 3e-3
    # Clip the meta-gradient to this global norm (0 disables clipping).
    grad_clip: float = 1.0
    # Meta-loss weights w_t: "uniform" (w_t = 1, paper), "final" (last step only) or "linear"
    # (w_t = t / horizon: the end of the run counts most, the first steps barely; issue 10).
    loss_weights: str = "uniform"
    # What each weighted step contributes: "loss" (f(θ_t), paper) or "log_loss"
    # (log(f(θ_t) + 1e-8): every halving of the loss counts the same, early or late, so the
    # meta-gradient is not dominated by the first steps' large losses; scale-free across tasks).
    meta_objective: str = "loss"
    # Stability term (issue 10, twenty-sixth round): each weighted step whose loss is more than
    # stability_tolerance (τ ≥ 1) times the run's best loss so far adds
    # λ max(0, log((f(θ_t) + 1e-8) / (min_{s<t} f(θ_s) + 1e-8)) - log τ), λ = stability_penalty,
    # so a run that climbs back up out of where it got to costs more than its loss alone says
    # (scale-free, like "log_loss"). λ = 0: off (the paper).
    stability_penalty: float = 0.0
    stability_tolerance: float = 1.0
    # Polyak averaging of φ (issue 10): after every meta-update the average moves toward φ,
    # φ̄ ← β φ̄ + (1 - β) φ with β = weight_average_decay, starting from φ₀; validation scores
    # φ̄ and the kept weights are the best φ̄ (the unaveraged φ trains on unchanged). 0: off.
    weight_average_decay: float = 0.0
    # Fresh validation optimizees per epoch (seeds disjoint from training seeds); with a
    # TaskPanel as the validation family, task i comes from member i mod (number of members).
    validation_tasks: int = 8
    # How validation scores an epoch (lower is better; the best epoch's φ is kept):
    # "final_loss", the mean over validation tasks of the final loss (mean of the last 10% of
    # steps); or "log_final_loss" (issue 10), the mean of log(final loss + 1e-8), i.e. the log
    # of their geometric mean: a factor of 2 counts the same on every task, so a panel of
    # families with losses of different scales is scored fairly.
    validation_score: str = "final_loss"
    # Master seed: net initialisation and every sampled task derive from it.
    seed: int = 0
    # Consecutive non-finite meta-losses tolerated before the run stops.
    max_bad_updates: int = 20
    # Coordinates per block in the update rule (None: all at once).
    chunk_size: int | None = None
    # The LSTM optimizer net (same for every route).
    net: dict[str, Any] = field(default_factory=lambda: LSTMOptimizerConfig().to_dict())

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"MetaTrainConfig.{name} must be a positive integer, "
                                  f"got {value!r}")

        for name in ("epochs", "tasks_per_epoch", "horizon", "unroll", "meta_batch_size",
                     "validation_tasks", "max_bad_updates"):
            positive_int(name)
        if isinstance(self.horizon_min, bool) or not isinstance(self.horizon_min, int) \
                or not 0 <= self.horizon_min <= self.horizon:
            raise ConfigError("MetaTrainConfig.horizon_min must be an integer in [0, horizon] "
                              f"(0: every run is `horizon` steps), got {self.horizon_min!r} "
                              f"with horizon={self.horizon}")
        if self.tasks_per_epoch % self.meta_batch_size:
            raise ConfigError(f"MetaTrainConfig.tasks_per_epoch ({self.tasks_per_epoch}) must "
                              f"be a multiple of meta_batch_size ({self.meta_batch_size})")
        if self.chunk_size is not None:
            positive_int("chunk_size")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"MetaTrainConfig.seed must be an integer >= 0, got {self.seed!r}")
        for name in ("meta_lr", "grad_clip", "stability_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0 or (name == "meta_lr" and value == 0):
                raise ConfigError(f"MetaTrainConfig.{name} must be a finite number "
                                  f"{'> 0' if name == 'meta_lr' else '>= 0'}, got {value!r}")
        tolerance = self.stability_tolerance
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
                or not math.isfinite(tolerance) or tolerance < 1:
            raise ConfigError("MetaTrainConfig.stability_tolerance must be a finite number >= 1 "
                              f"(the rise over the best loss so far that costs nothing), got "
                              f"{tolerance!r}")
        decay = self.weight_average_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) \
                or not 0 <= decay < 1:
            raise ConfigError("MetaTrainConfig.weight_average_decay must be a number in [0, 1) "
                              f"(0 turns averaging off), got {decay!r}")
        if self.loss_weights not in ("uniform", "final", "linear"):
            raise ConfigError("MetaTrainConfig.loss_weights must be 'uniform', 'final' or "
                              f"'linear', got {self.loss_weights!r}")
        if self.validation_score not in ("final_loss", "log_final_loss"):
            raise ConfigError("MetaTrainConfig.validation_score must be 'final_loss' or "
                              f"'log_final_loss', got {self.validation_score!r}")
        if self.meta_objective not in ("loss", "log_loss"):
            raise ConfigError("MetaTrainConfig.meta_objective must be 'loss' or 'log_loss', "
                              f"got {self.meta_objective!r}")
        LSTMOptimizerConfig.from_dict(self.net)  # validates the net fields

    @property
    def net_config(self) -> LSTMOptimizerConfig:
        return LSTMOptimizerConfig.from_dict(self.net)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetaTrainConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"a MetaTrainConfig is built from a JSON object of fields, got "
                              f"{type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown MetaTrainConfig fields {unknown}; known: {sorted(names)}")
        return cls(**data)
