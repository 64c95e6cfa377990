r"""MetaTrainer: learn φ by truncated backpropagation through unrolled optimization.

Andrychowicz et al. 2016, Section 2: minimise over φ

.. math::
    \mathcal{L}(\phi) = \mathbb{E}_{f}\Big[\sum_{t=1}^{T} w_t\, f(\theta_t)\Big],
    \qquad \theta_{t+1} = \theta_t + g_t,\quad [g_t, h_{t+1}] = m(\nabla_t, h_t; \phi)

with :math:`\partial \nabla_t / \partial \phi = 0`, horizon T split into truncations of
``unroll`` steps (θ and h carried across, detached), one Adam meta-update per truncation from
the mean meta-loss of a meta-batch of optimizees unrolled side by side (one by default), and
after every epoch a validation on fresh optimizees that keeps the best φ. With a process
group, the optimizees of a meta-batch are split across processes (see :mod:`.distributed`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_dumps

from .. import __version__
from ..network import LSTMOptimizerNet
from ..routing import FC_ROUTE
from ..tasks.base import Task, TaskFamily
from ..update import fuse_weights
from ..weights import WeightsBundle, atomic_write_bytes, strip_prefix
from .config import MetaTrainConfig
from .distributed import all_reduce_gradients, all_reduce_sum, rank_and_world_size
from .unroll import apply_update, evaluate, start

__all__ = ["MetaTrainer", "CHECKPOINT_FILE"]

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.safetensors"
_VALIDATION_SEED_OFFSET = 1_000_000_007


def _task_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31)


class MetaTrainer:
    """Meta-train the LSTM optimizer on a task family.

    Args:
        task_family: training tasks (``TaskFamily.sample(seed) -> Task``).
        config: :class:`MetaTrainConfig`.
        validation_family: family for choosing the best φ (default: ``task_family``;
            validation seeds never overlap training seeds).
        routes: nets to train (default: the routes of a sampled task, e.g. conv + fc).
        checkpoint_dir: where to write ``checkpoint.safetensors`` after every epoch (atomic).
        name: name given to the resulting :class:`WeightsBundle`.
        command: the command line recorded in the provenance.
        process_group: a ``torch.distributed`` process group (e.g.
            ``torch.distributed.group.WORLD``) to meta-train across processes: each process
            unrolls ``config.meta_batch_size / world_size`` optimizees of every meta-batch, the
            meta-gradients are summed before each meta-update so every process holds the same
            φ, validation tasks are split the same way, and only rank 0 writes checkpoints,
            logs and shows progress. Results match one process with the same config (up to
            float rounding). ``None``: one process.

    Example:
        >>> from learned_optim.tasks import QuadraticFamily
        >>> trainer = MetaTrainer(QuadraticFamily(), MetaTrainConfig(epochs=1, tasks_per_epoch=2))
        >>> bundle = trainer.train(progress=False)
    """

    def __init__(self, task_family: TaskFamily, config: MetaTrainConfig | None = None, *,
                 validation_family: TaskFamily | None = None, routes: list[str] | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, name: str = "meta-trained",
                 command: str | None = None, process_group: Any = None):
        self.family = task_family
        self.validation_family = validation_family or task_family
        self.config = config or MetaTrainConfig()
        self.name = name
        self.command = command or " ".join([os.path.basename(sys.executable)] + sys.argv)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.process_group = process_group
        self.rank, self.world_size = rank_and_world_size(process_group)
        if self.config.meta_batch_size % self.world_size:
            raise ValueError(
                f"meta_batch_size {self.config.meta_batch_size} cannot be split over "
                f"{self.world_size} processes: make it a multiple of the world size (each "
                "process unrolls meta_batch_size / world_size optimizees per meta-update)")
        if routes is None:
            routes = sorted(set(task_family.sample(_task_seed(self.config.seed, 0, 0))
                                .routes.values()) | {FC_ROUTE})
        self.nets = {route: LSTMOptimizerNet(self.config.net_config,
                                             seed=self.config.seed + k)
                     for k, route in enumerate(sorted(routes))}
        self.meta_optimizer = torch.optim.Adam(self._meta_params(), lr=self.config.meta_lr)
        self.epoch = 0
        self.best_metric = math.inf
        self.best_state = self._net_state()
        self.history: list[dict[str, float]] = []
        self.bad_updates = 0
        self.skipped_updates = 0
        self.elapsed = 0.0

    # -- pieces ---------------------------------------------------------------------------

    def _meta_params(self) -> list[torch.nn.Parameter]:
        return [p for route in sorted(self.nets) for p in self.nets[route].parameters()]

    def _net_state(self) -> dict[str, torch.Tensor]:
        return {f"{route}.{k}": v.detach().clone() for route in sorted(self.nets)
                for k, v in self.nets[route].state_dict().items()}

    def _loss_weight(self, step: int) -> float:
        """w_t of the meta-loss."""
        if self.config.loss_weights == "final":
            return 1.0 if step == self.config.horizon else 0.0
        return 1.0

    def meta_loss(self, task: Task, state, steps: int):
        """Unroll ``steps`` steps from ``state`` keeping the graph; return (meta-loss, state)."""
        weights = {route: fuse_weights(net) for route, net in self.nets.items()}
        total, terms = 0.0, 0
        loss = task.loss(state.params, state.step)
        for k in range(steps):
            state = apply_update(task, state, loss, weights, chunk_size=self.config.chunk_size,
                                 keep_graph=k > 0)
            loss = task.loss(state.params, state.step)
            w = self._loss_weight(state.step)
            if w:
                total = total + w * loss
                terms += 1
        # A truncation with no weighted step (loss_weights="final") gives a constant: no update.
        return (total / terms if terms else loss.detach() * 0.0), state

    def train_task(self, task: Task) -> list[float]:
        """Unroll one optimizee over the horizon with a meta-update after each truncation."""
        return self.train_tasks([task])

    def train_tasks(self, tasks: list[Task]) -> list[float]:
        """Unroll ``tasks`` side by side over the horizon; after each truncation, one
        meta-update from the mean of their meta-losses (and of the other processes' tasks).
        Returns the mean meta-loss of each truncation."""
        states = [start(task, self.nets) for task in tasks]
        scale = 1.0 / (len(tasks) * self.world_size)
        losses = []
        while states[0].step < self.config.horizon:
            steps = min(self.config.unroll, self.config.horizon - states[0].step)
            self.meta_optimizer.zero_grad(set_to_none=True)
            values, differentiable = [], False
            for index, task in enumerate(tasks):
                meta_loss, state = self.meta_loss(task, states[index], steps)
                values.append(float(meta_loss.detach()))
                if meta_loss.requires_grad:
                    differentiable = True
                    if math.isfinite(values[-1]):
                        (meta_loss * scale).backward()  # frees this task's graph now
                states[index] = state.detach()
            losses.append(self._apply_meta_gradient(values, differentiable))
        return losses

    def _meta_update(self, meta_loss: torch.Tensor) -> None:
        """One meta-update from the meta-loss of one task (one process)."""
        self.meta_optimizer.zero_grad(set_to_none=True)
        value = float(meta_loss.detach())
        if meta_loss.requires_grad and math.isfinite(value):
            meta_loss.backward()
        self._apply_meta_gradient([value], meta_loss.requires_grad)

    def _apply_meta_gradient(self, values: list[float], differentiable: bool) -> float:
        """Sum the accumulated meta-gradients over processes, clip and step; return the mean
        meta-loss. Skipped on every process at once if any meta-loss or the meta-gradient is
        non-finite, and (no Adam step at all) if no meta-loss depends on φ."""
        stats = torch.tensor([sum(values), sum(not math.isfinite(v) for v in values)],
                             dtype=torch.float64)
        total, bad = all_reduce_sum(stats, self.process_group).tolist()
        mean_loss = total / (len(values) * self.world_size)
        if not differentiable:
            return mean_loss
        if not bad:
            params = self._meta_params()
            all_reduce_gradients(params, self.process_group)
            # max_norm=inf measures the norm without clipping (grad_clip=0 disables it)
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip or math.inf)
            if torch.isfinite(norm):
                self.meta_optimizer.step()
                self.bad_updates = 0
                return mean_loss
        self.bad_updates += 1
        self.skipped_updates += 1
        if self.rank == 0:
            log.warning("skipped a meta-update: non-finite meta-loss or meta-gradient "
                        "(%d in a row)", self.bad_updates)
        if self.bad_updates >= self.config.max_bad_updates:
            raise RuntimeError(
                f"meta-training stopped: {self.bad_updates} non-finite meta-updates in a row. "
                "Lower meta_lr or grad_clip, or check the task's loss; the best weights so far "
                "are kept (trainer.best_bundle(), and the last checkpoint)")

    def validate(self) -> dict[str, float]:
        """Mean over fresh validation tasks of the final loss (mean of the last 10% of steps)
        and of the loss over the whole run."""
        count = self.config.validation_tasks
        results = torch.zeros(2, count, dtype=torch.float64)  # final, mean loss of each task
        horizon = self.validation_family.horizon
        for index in range(self.rank, count, self.world_size):  # every process a share
            task = self.validation_family.sample(
                _task_seed(self.config.seed + _VALIDATION_SEED_OFFSET, 0, index))
            losses = evaluate(task, self.nets, horizon, chunk_size=self.config.chunk_size)
            tail = losses[-max(1, horizon // 10):]
            results[:, index] = torch.tensor([sum(tail) / len(tail), sum(losses) / len(losses)],
                                             dtype=torch.float64)
        finals, means = all_reduce_sum(results, self.process_group).tolist()
        finite = [f for f in finals if math.isfinite(f)]
        return {"final_loss": sum(finals) / len(finals) if len(finite) == len(finals) else math.inf,
                "mean_loss": sum(means) / len(means)}

    # -- the loop -------------------------------------------------------------------------

    def train(self, *, progress: bool = True,
              on_epoch_end: Callable[["MetaTrainer"], None] | None = None) -> WeightsBundle:
        """Run (or continue) meta-training; return the best weights found by validation."""
        from tqdm.auto import tqdm

        if self.epoch == 0 and not self.history:
            untrained = self.validate()
            self.history.append({"epoch": 0, **untrained, "meta_loss": None})
        total = self.config.epochs * self.config.tasks_per_epoch
        bar = tqdm(total=total, initial=self.epoch * self.config.tasks_per_epoch,
                   disable=not progress or self.rank != 0, desc=f"meta-train {self.family.name}",
                   unit="task")
        batch, share = self.config.meta_batch_size, self.config.meta_batch_size // self.world_size
        try:
            while self.epoch < self.config.epochs:
                started = time.perf_counter()
                meta_losses = []
                for first in range(0, self.config.tasks_per_epoch, batch):
                    # global task indices first..first+batch-1; this process takes its share
                    mine = range(first + self.rank * share, first + (self.rank + 1) * share)
                    meta_losses += self.train_tasks([
                        self.family.sample(_task_seed(self.config.seed, self.epoch + 1, index))
                        for index in mine])
                    bar.update(batch)
                    bar.set_postfix(meta_loss=f"{meta_losses[-1]:.4g}",
                                    best_val=f"{self.best_metric:.4g}")
                metrics = self.validate()
                self.epoch += 1
                finite = [m for m in meta_losses if math.isfinite(m)]
                self.history.append({"epoch": self.epoch, **metrics,
                                     "meta_loss": sum(finite) / max(len(finite), 1)})
                if metrics["final_loss"] < self.best_metric and self._nets_finite():
                    self.best_metric = metrics["final_loss"]
                    self.best_state = self._net_state()
                self.elapsed += time.perf_counter() - started
                if self.checkpoint_dir is not None and self.rank == 0:
                    self.save_checkpoint(self.checkpoint_dir)
                if on_epoch_end is not None:
                    on_epoch_end(self)
        finally:
            bar.close()
        return self.best_bundle()

    def _nets_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self._meta_params())

    def best_bundle(self) -> WeightsBundle:
        """The best φ so far as a bundle, with its provenance."""
        nets = {}
        for route in sorted(self.nets):
            net = LSTMOptimizerNet(self.config.net_config)
            net.load_state_dict(strip_prefix(self.best_state, f"{route}."))
            nets[route] = net.requires_grad_(False)
        return WeightsBundle(nets, name=self.name, provenance=self.provenance())

    def provenance(self) -> dict[str, Any]:
        untrained = self.history[0] if self.history else {}
        best = min(self.history[1:], key=lambda h: h["final_loss"], default={})
        return {
            "task": self.family.describe(),
            "validation_task": self.validation_family.describe(),
            "seed": self.config.seed,
            "epochs": self.epoch,
            "config": self.config.to_dict(),
            "command": self.command,
            "wall_time_s": round(self.elapsed, 1),
            "world_size": self.world_size,
            "metrics": {
                "validation_final_loss": best.get("final_loss"),
                "validation_mean_loss": best.get("mean_loss"),
                "untrained_validation_final_loss": untrained.get("final_loss"),
                "untrained_validation_mean_loss": untrained.get("mean_loss"),
                "best_epoch": best.get("epoch"),
                "skipped_meta_updates": self.skipped_updates,
            },
            "history": self.history,
            "learned_optim_version": __version__,
            "git_commit": _git_commit(),
            "torch_version": torch.__version__,
        }

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Write φ, the best φ, Adam's state and progress to one file, atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"current.{k}": v for k, v in self._net_state().items()}
        tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        adam = self.meta_optimizer.state_dict()
        for index, entry in adam["state"].items():
            for key, value in entry.items():
                tensors[f"adam.{index}.{key}"] = value.detach().clone().reshape(value.shape)
        progress = {"epoch": self.epoch, "best_metric": self.best_metric,
                    "history": self.history, "bad_updates": self.bad_updates,
                    "skipped_updates": self.skipped_updates, "elapsed": self.elapsed,
                    "config": self.config.to_dict(), "routes": sorted(self.nets)}
        metadata = {"format": "learned_optim.meta_checkpoint", "format_version": "1",
                    "progress": json.dumps(progress)}
        path = directory / CHECKPOINT_FILE
        atomic_write_bytes(path, safetensors_dumps(tensors, metadata))
        return path

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Continue a run from :meth:`save_checkpoint`'s file (same config required)."""
        path = Path(directory) / CHECKPOINT_FILE
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:
            raise RuntimeError(f"cannot read checkpoint {str(path)!r} ({exc}); delete it to "
                               "start over") from None
        if metadata.get("format") != "learned_optim.meta_checkpoint":
            raise RuntimeError(f"{str(path)!r} is not a MetaTrainer checkpoint")
        progress = json.loads(metadata["progress"])
        # fields added since the checkpoint was written take their defaults
        saved_config = {**MetaTrainConfig().to_dict(), **progress["config"],
                        "epochs": self.config.epochs}
        if saved_config != dict(self.config.to_dict(), epochs=self.config.epochs):
            raise RuntimeError(f"checkpoint {str(path)!r} was made with another config; resume "
                               "with the same config (only epochs may change) or start over")
        for route, net in self.nets.items():
            net.load_state_dict(strip_prefix(tensors, f"current.{route}."))
        self.best_state = strip_prefix(tensors, "best.")
        adam = copy.deepcopy(self.meta_optimizer.state_dict())
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("adam."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        adam["state"] = state
        self.meta_optimizer.load_state_dict(adam)
        self.epoch = progress["epoch"]
        self.best_metric = progress["best_metric"]
        self.history = progress["history"]
        self.bad_updates = progress["bad_updates"]
        self.skipped_updates = progress["skipped_updates"]
        self.elapsed = progress["elapsed"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
