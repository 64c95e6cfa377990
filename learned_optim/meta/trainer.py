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

With ``weight_average_decay`` β > 0 (Polyak averaging), an average of the iterates

.. math::
    \bar\phi_0 = \phi_0, \qquad \bar\phi_{k+1} = \beta\,\bar\phi_k + (1 - \beta)\,\phi_{k+1}

after every meta-update k is what validation scores and what is kept; φ itself trains on
unchanged.
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
from ..errors import CheckpointError, ConfigError, MetaTrainingError, TaskError
from ..network import LSTMOptimizerNet
from ..routing import FC_ROUTE
from ..tasks import TaskPanel
from ..tasks.base import Task, TaskFamily
from ..update import fuse_weights
from ..weights import _ROUTE_NAME, WeightsBundle, atomic_write_bytes, strip_prefix
from .config import MetaTrainConfig
from .distributed import all_reduce_gradients, all_reduce_sum, rank_and_world_size
from .unroll import apply_update, evaluate, start

__all__ = ["MetaTrainer", "CHECKPOINT_FILE", "epoch_score"]

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.safetensors"
_VALIDATION_SEED_OFFSET = 1_000_000_007
_HORIZON_SEED_OFFSET = 2_147_483_647


# Added to f inside the log of meta_objective="log_loss" (the losses here are >= 0).
_LOG_LOSS_FLOOR = 1e-8


def epoch_score(entry: dict[str, Any]) -> float:
    """The selection score of a history entry, lower is better: the trainer keeps the epoch
    with the lowest (histories written before validation_score existed have only the final
    loss, which was the score). Public so that tools that re-select an epoch
    (``benchmarks/stable_epoch.py``) rank epochs exactly as the trainer does."""
    return entry.get("score", entry["final_loss"])


def _task_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31)


class MetaTrainer:
    """Meta-train the LSTM optimizer on a task family.

    Args:
        task_family: training tasks (``TaskFamily.sample(seed) -> Task``).
        config: :class:`MetaTrainConfig`.
        validation_family: family for choosing the best φ (default: ``task_family``;
            validation seeds never overlap training seeds). A
            :class:`~learned_optim.tasks.TaskPanel` validates task ``i`` on its member
            ``i mod n``, each for its own horizon; ``config.validation_score`` says how the
            tasks' final losses make one score.
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
        device: where the nets and the unrolled optimizees live, e.g. ``"cuda"`` (default
            ``"cpu"``). Tasks are still sampled on the CPU, then copied (:meth:`Task.to`); the
            kept weights, checkpoints and bundles are on the CPU either way, so a run can
            resume on another device. Results match the CPU's up to float rounding.

    Raises:
        TaskError: a sampled task's loss is not a finite real scalar that depends on its
            parameters, or it routes to a net the trainer does not have (checked before a task
            is trained or validated on, so φ is never touched by it).
        MetaTrainingError: ``max_bad_updates`` non-finite meta-updates in a row; each one is
            skipped and logged before that, and the best φ is kept.
        CheckpointError: :meth:`load_checkpoint` cannot resume from the file.

    Example:
        >>> from learned_optim.tasks import QuadraticFamily
        >>> trainer = MetaTrainer(QuadraticFamily(), MetaTrainConfig(epochs=1, tasks_per_epoch=2))
        >>> bundle = trainer.train(progress=False)
    """

    def __init__(self, task_family: TaskFamily, config: MetaTrainConfig | None = None, *,
                 validation_family: TaskFamily | None = None, routes: list[str] | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, name: str = "meta-trained",
                 command: str | None = None, process_group: Any = None,
                 device: torch.device | str | None = None):
        for role, family in (("task_family", task_family),
                             ("validation_family", validation_family)):
            if family is not None and not callable(getattr(family, "sample", None)):
                raise TypeError(
                    f"{role} must be a TaskFamily (with .sample(seed) -> Task), got "
                    f"{type(family).__name__}; wrap a function seed -> Task in "
                    "learned_optim.tasks.FunctionTaskFamily(name, make_task)")
        if config is not None and not isinstance(config, MetaTrainConfig):
            raise TypeError(f"config must be a MetaTrainConfig, got {type(config).__name__}; "
                            "build one with MetaTrainConfig(...) or MetaTrainConfig.from_dict()")
        self.family = task_family
        self.validation_family = validation_family or task_family
        self.config = config or MetaTrainConfig()
        self.name = name
        self.command = command or " ".join([os.path.basename(sys.executable)] + sys.argv)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.process_group = process_group
        if process_group is not None and _device_type(device) != "cpu":
            raise ConfigError(f"device={str(device)!r} with a process group: meta-training "
                              "across processes runs on the CPU only; drop device= or the "
                              "process group")
        self.device = _checked_device(device)
        self.rank, self.world_size = rank_and_world_size(process_group)
        if self.config.meta_batch_size % self.world_size:
            raise ValueError(
                f"meta_batch_size {self.config.meta_batch_size} cannot be split over "
                f"{self.world_size} processes: make it a multiple of the world size (each "
                "process unrolls meta_batch_size / world_size optimizees per meta-update)")
        if routes is None:
            seed = _task_seed(self.config.seed, 0, 0)
            routes = sorted(set(_checked_task(task_family, seed).routes.values()) | {FC_ROUTE})
        if not all(isinstance(r, str) and _ROUTE_NAME.match(r) for r in routes) \
                or FC_ROUTE not in routes:
            raise ConfigError(f"routes={routes!r}: expected route names (lowercase letters, "
                              f"digits, '_') that include {FC_ROUTE!r}, the route every "
                              "weights bundle needs, e.g. ['conv', 'fc']")
        self.nets = {route: LSTMOptimizerNet(self.config.net_config,
                                             seed=self.config.seed + k).to(self.device)
                     for k, route in enumerate(sorted(routes))}
        self.meta_optimizer = torch.optim.Adam(self._meta_params(), lr=self.config.meta_lr)
        self.epoch = 0
        self.best_metric = math.inf
        self.best_state = self._net_state()
        # φ̄, the Polyak average of φ (None: averaging off)
        self.average_state = self._net_state() if self.config.weight_average_decay else None
        self.history: list[dict[str, float]] = []
        self.bad_updates = 0
        self.skipped_updates = 0
        self.elapsed = 0.0
        # {"name", "fingerprint"} of the bundle start_from loaded (None: a fresh φ₀)
        self.initial_weights: dict[str, str] | None = None

    def start_from(self, bundle: WeightsBundle) -> None:
        r"""Meta-train from ``bundle``'s weights instead of a fresh :math:`\phi_0`
        (fine-tuning), before any training. The nets (and the Polyak average, and the kept
        best state) become copies of ``bundle``'s; the meta-optimizer starts afresh. The
        provenance records the bundle's name and fingerprint under ``initial_weights``, and
        so do the run's checkpoints (a resumed run keeps the record).

        Raises:
            RuntimeError: the trainer has already trained or resumed an epoch.
            ConfigError: ``bundle`` has other routes, or a net config other than this
                trainer's ``net`` (fine-tuning cannot change the architecture or rule).
        """
        if self.epoch or self.history:
            raise RuntimeError("start_from: call it before train() or load_checkpoint(); this "
                               f"trainer is at epoch {self.epoch}")
        if sorted(bundle.nets) != sorted(self.nets):
            raise ConfigError(f"start_from: the bundle {bundle.name!r} has routes "
                              f"{sorted(bundle.nets)}, this trainer {sorted(self.nets)}; pass "
                              "the trainer the bundle's routes")
        for route, net in bundle.nets.items():  # every route checked before any is loaded
            if net.config.identity_dict() != self.config.net_config.identity_dict():
                raise ConfigError(
                    f"start_from: route {route!r} of {bundle.name!r} has net config "
                    f"{net.config.identity_dict()}, the trainer's is "
                    f"{self.config.net_config.identity_dict()}; set MetaTrainConfig.net to "
                    "the bundle's config to fine-tune it")
        for route, net in bundle.nets.items():
            self.nets[route].load_state_dict(net.state_dict())
        self.meta_optimizer = torch.optim.Adam(self._meta_params(), lr=self.config.meta_lr)
        self.best_state = self._net_state()
        self.average_state = self._net_state() if self.config.weight_average_decay else None
        self.initial_weights = {"name": bundle.name, "fingerprint": bundle.fingerprint()}

    # -- pieces ---------------------------------------------------------------------------

    def _meta_params(self) -> list[torch.nn.Parameter]:
        return [p for route in sorted(self.nets) for p in self.nets[route].parameters()]

    def _net_state(self) -> dict[str, torch.Tensor]:
        """φ by ``route.name``, copied to the CPU (where kept and averaged states live)."""
        return {f"{route}.{k}": v.detach().to("cpu", copy=True) for route in sorted(self.nets)
                for k, v in self.nets[route].state_dict().items()}

    def _scored_state(self) -> dict[str, torch.Tensor]:
        """The weights validation scores and the run keeps: φ̄ when averaging, else φ."""
        if self.average_state is None:
            return self._net_state()
        return {k: v.clone() for k, v in self.average_state.items()}

    def _update_average(self) -> None:
        r""":math:`\bar\phi \leftarrow \beta\bar\phi + (1 - \beta)\phi` after a meta-update."""
        if self.average_state is None:
            return
        weight = 1.0 - self.config.weight_average_decay
        for key, value in self._net_state().items():
            self.average_state[key].lerp_(value, weight)

    def _load_nets(self, state: dict[str, torch.Tensor]) -> None:
        for route, net in self.nets.items():
            net.load_state_dict(strip_prefix(state, f"{route}."))

    def _loss_weight(self, step: int, horizon: int) -> float:
        r"""w_t of the meta-loss: 1 (``"uniform"``), :math:`[t = T]` (``"final"``) or
        :math:`t / T` (``"linear"``), for step :math:`t` of a horizon :math:`T`."""
        if self.config.loss_weights == "final":
            return 1.0 if step == horizon else 0.0
        if self.config.loss_weights == "linear":
            return step / horizon
        return 1.0

    def sample_horizon(self, seed: int) -> int:
        r"""The horizon of the meta-batch whose first task has ``seed``: ``config.horizon``, or
        with ``horizon_min`` = :math:`a > 0` and ``horizon`` = :math:`b`,

        .. math::
            T = \operatorname{round}\big(a\,(b / a)^{u}\big), \qquad u \sim U[0, 1)

        drawn from a generator seeded by ``seed`` plus a constant (log-uniform: each factor of
        2 in T is as likely as any other; mean :math:`(b - a) / \ln(b / a)`)."""
        low, high = self.config.horizon_min, self.config.horizon
        if not low or low == high:
            return high
        # offset: the task family draws from a generator seeded with the task's own seed
        generator = torch.Generator().manual_seed(seed + _HORIZON_SEED_OFFSET)
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return min(high, max(low, round(low * (high / low) ** u)))

    def _objective(self, loss: torch.Tensor, best_loss: torch.Tensor) -> torch.Tensor:
        r"""One step's term of the meta-loss: :math:`f_t = f(\theta_t)` or
        :math:`\log(f_t + \epsilon)`, plus with ``stability_penalty`` :math:`\lambda > 0` and
        ``stability_tolerance`` :math:`\tau \ge 1` the stability term

        .. math::
            \lambda \max\Big(0,\ \log\frac{f_t + \epsilon}{m_{t-1} + \epsilon} - \log\tau\Big),
            \qquad m_{t-1} = \min_{s < t} f_s, \quad \epsilon = 10^{-8},

        with :math:`m_{t-1}` the run's best loss before step :math:`t`, a constant (over earlier
        truncations too): a step that climbs more than :math:`\tau` times above where the run
        had got to costs more the further it climbs (issue 10)."""
        log_loss = torch.log(loss + _LOG_LOSS_FLOOR)
        term = log_loss if self.config.meta_objective == "log_loss" else loss
        if self.config.stability_penalty:
            rise = log_loss - torch.log(best_loss + _LOG_LOSS_FLOOR)
            term = term + self.config.stability_penalty * torch.relu(
                rise - math.log(self.config.stability_tolerance))
        return term

    def meta_loss(self, task: Task, state, steps: int, horizon: int | None = None):
        """Unroll ``steps`` steps from ``state`` keeping the graph; return (meta-loss, state).
        ``horizon`` (default ``config.horizon``) is the run's T, for the loss weights and for
        nets that read the progress t / T."""
        horizon = self.config.horizon if horizon is None else horizon
        weights = {route: fuse_weights(net) for route, net in self.nets.items()}
        total, terms = 0.0, 0
        loss = task.loss(state.params, state.step)
        # the run's best loss so far: f(θ_0) on its first truncation, carried on after that
        best = loss.detach() if state.best_loss is None else state.best_loss
        for k in range(steps):
            state = apply_update(task, state, loss, weights, chunk_size=self.config.chunk_size,
                                 keep_graph=k > 0, horizon=horizon)
            loss = task.loss(state.params, state.step)
            w = self._loss_weight(state.step, horizon)
            if w:
                total = total + w * self._objective(loss, best)
                terms += 1
            best = torch.minimum(best, loss.detach())
        state.best_loss = best
        # A truncation with no weighted step (loss_weights="final") gives a constant: no update.
        return (total / terms if terms else loss.detach() * 0.0), state

    def check_task(self, task: Task, *, where: str = "the task") -> None:
        """Raise :class:`TaskError` unless ``task`` can be meta-trained on: its routes have
        nets, and its loss at θ₀ is a finite scalar that depends on its parameters."""
        if not isinstance(task, Task):
            raise TaskError(f"{where} is a {type(task).__name__}, expected a "
                            "learned_optim.tasks.Task (TaskFamily.sample must return one)")
        missing = sorted(set(task.routes.values()) - set(self.nets))
        if missing:
            raise TaskError(f"{where} routes parameters to {missing}, but this trainer only has "
                            f"nets for {sorted(self.nets)}; pass routes=[...] to MetaTrainer "
                            "with every route its tasks use")
        params = {name: value.detach().requires_grad_() for name, value in task.params.items()}
        with torch.enable_grad(), torch.random.fork_rng(devices=[]):  # e.g. dropout: no RNG use
            loss = task.loss(params, 0)
        if not loss.requires_grad:
            raise TaskError(f"{where}: its loss does not depend on its parameters (no autograd "
                            "graph to them), so there is nothing to optimize; compute the loss "
                            "from the model's output, without .detach() or .item()")
        if not torch.isfinite(loss):
            raise TaskError(f"{where}: its loss at the initial parameters is "
                            f"{float(loss.detach())}; no optimizer can start from there. Check "
                            "the task's data, model initialisation and loss function")

    def train_task(self, task: Task, *, where: str = "the task") -> list[float]:
        """Unroll one optimizee over the horizon with a meta-update after each truncation."""
        self.check_task(task, where=where)
        return self.train_tasks([task])

    def train_tasks(self, tasks: list[Task], *, horizon: int | None = None) -> list[float]:
        """Unroll ``tasks`` side by side for ``horizon`` steps (default ``config.horizon``);
        after each truncation, one meta-update from the mean of their meta-losses (and of the
        other processes' tasks). Returns the mean meta-loss of each truncation."""
        horizon = self.config.horizon if horizon is None else horizon
        tasks = [task.to(self.device) for task in tasks]
        states = [start(task, self.nets) for task in tasks]
        scale = 1.0 / (len(tasks) * self.world_size)
        losses = []
        while states[0].step < horizon:
            steps = min(self.config.unroll, horizon - states[0].step)
            self.meta_optimizer.zero_grad(set_to_none=True)
            values, differentiable = [], False
            for index, task in enumerate(tasks):
                meta_loss, state = self.meta_loss(task, states[index], steps, horizon)
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
                self._update_average()
                self.bad_updates = 0
                return mean_loss
        self.bad_updates += 1
        self.skipped_updates += 1
        if self.rank == 0:
            log.warning("skipped a meta-update: non-finite meta-loss or meta-gradient "
                        "(%d in a row)", self.bad_updates)
        if self.bad_updates >= self.config.max_bad_updates:
            raise MetaTrainingError(
                f"meta-training stopped: {self.bad_updates} non-finite meta-updates in a row. "
                "Lower meta_lr or grad_clip, or check the task's loss; the best weights so far "
                "are kept (trainer.best_bundle(), and the last checkpoint)")
        return mean_loss

    def validate(self) -> dict[str, float]:
        r"""Mean over fresh validation tasks of the final loss :math:`F_i` (mean of the last
        10% of steps) and of the loss over the whole run, of φ̄ when averaging (φ is put back
        after), and the ``score`` the best epoch is chosen by:

        .. math::
            \text{score} = \frac1n \sum_i F_i \quad (\texttt{"final\_loss"}), \qquad
            \text{score} = \frac1n \sum_i \log(F_i + 10^{-8})
            \quad (\texttt{"log\_final\_loss"})
        """
        if self.average_state is None:
            return self._validate_nets()
        current = self._net_state()
        self._load_nets(self.average_state)
        try:
            return self._validate_nets()
        finally:
            self._load_nets(current)

    def _validate_nets(self) -> dict[str, float]:
        count = self.config.validation_tasks
        results = torch.zeros(2, count, dtype=torch.float64)  # final, mean loss of each task
        for index in range(self.rank, count, self.world_size):  # every process a share
            seed = _task_seed(self.config.seed + _VALIDATION_SEED_OFFSET, 0, index)
            family = self.validation_family
            if isinstance(family, TaskPanel):
                family = family.member(index)
            horizon = family.horizon
            task = family.sample(seed)
            self.check_task(task, where=f"validation task {family.name!r} "
                                        f"sample(seed={seed})")
            losses = evaluate(task.to(self.device), self.nets, horizon,
                              chunk_size=self.config.chunk_size)
            tail = losses[-max(1, horizon // 10):]
            results[:, index] = torch.tensor([sum(tail) / len(tail), sum(losses) / len(losses)],
                                             dtype=torch.float64)
        finals, means = all_reduce_sum(results, self.process_group).tolist()
        finite = len([f for f in finals if math.isfinite(f)]) == len(finals)
        final_loss = sum(finals) / len(finals) if finite else math.inf
        if self.config.validation_score == "log_final_loss":
            score = (sum(math.log(f + _LOG_LOSS_FLOOR) for f in finals) / len(finals)
                     if finite else math.inf)
        else:
            score = final_loss
        return {"final_loss": final_loss, "mean_loss": sum(means) / len(means), "score": score}

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
                    tasks = []
                    for index in range(first + self.rank * share,
                                       first + (self.rank + 1) * share):
                        seed = _task_seed(self.config.seed, self.epoch + 1, index)
                        task = self.family.sample(seed)
                        self.check_task(task, where=f"task {self.family.name!r} "
                                                    f"sample(seed={seed})")
                        tasks.append(task)
                    horizon = self.sample_horizon(_task_seed(self.config.seed, self.epoch + 1,
                                                             first))
                    meta_losses += self.train_tasks(tasks, horizon=horizon)
                    bar.update(batch)
                    bar.set_postfix(meta_loss=f"{meta_losses[-1]:.4g}",
                                    best_val=f"{self.best_metric:.4g}")
                metrics = self.validate()
                self.epoch += 1
                finite = [m for m in meta_losses if math.isfinite(m)]
                self.history.append({"epoch": self.epoch, **metrics,
                                     "meta_loss": sum(finite) / max(len(finite), 1)})
                scored = self._scored_state()
                if metrics["score"] < self.best_metric and _finite(scored):
                    self.best_metric = metrics["score"]
                    self.best_state = scored
                self.elapsed += time.perf_counter() - started
                if self.checkpoint_dir is not None and self.rank == 0:
                    self.save_checkpoint(self.checkpoint_dir)
                if on_epoch_end is not None:
                    on_epoch_end(self)
        finally:
            bar.close()
        return self.best_bundle()

    def best_bundle(self) -> WeightsBundle:
        """The best φ so far as a bundle, with its provenance."""
        return self._bundle(self.best_state, self.provenance())

    def epoch_bundle(self) -> WeightsBundle:
        """The φ (φ̄ when averaging) the last validation scored, whether or not it is the best,
        with the provenance of the run so far and ``provenance["epoch_kept"]`` = its epoch: for
        keeping every epoch's weights (``meta-train --keep-epochs DIR``)."""
        return self._bundle(self._scored_state(), {**self.provenance(), "epoch_kept": self.epoch})

    def _bundle(self, state: dict[str, torch.Tensor], provenance: dict[str, Any]
                ) -> WeightsBundle:
        nets = {}
        for route in sorted(self.nets):
            net = LSTMOptimizerNet(self.config.net_config)
            net.load_state_dict(strip_prefix(state, f"{route}."))
            nets[route] = net.requires_grad_(False)
        return WeightsBundle(nets, name=self.name, provenance=provenance)

    def provenance(self) -> dict[str, Any]:
        untrained = self.history[0] if self.history else {}
        best = min(self.history[1:], key=epoch_score, default={})
        return {
            "task": self.family.describe(),
            "validation_task": self.validation_family.describe(),
            "seed": self.config.seed,
            "epochs": self.epoch,
            "config": self.config.to_dict(),
            "command": self.command,
            "wall_time_s": round(self.elapsed, 1),
            "world_size": self.world_size,
            "device": str(self.device),
            "metrics": {
                "validation_score": self.config.validation_score,
                "validation_best_score": best.get("score", best.get("final_loss")),
                "validation_final_loss": best.get("final_loss"),
                "validation_mean_loss": best.get("mean_loss"),
                "untrained_validation_final_loss": untrained.get("final_loss"),
                "untrained_validation_mean_loss": untrained.get("mean_loss"),
                "best_epoch": best.get("epoch"),
                "skipped_meta_updates": self.skipped_updates,
            },
            "history": self.history,
            **({"initial_weights": self.initial_weights} if self.initial_weights else {}),
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
        if self.average_state is not None:
            tensors.update({f"average.{k}": v for k, v in self.average_state.items()})
        adam = self.meta_optimizer.state_dict()
        for index, entry in adam["state"].items():
            for key, value in entry.items():
                tensors[f"adam.{index}.{key}"] = value.detach().to("cpu", copy=True)
        progress = {"epoch": self.epoch, "best_metric": self.best_metric,
                    "history": self.history, "bad_updates": self.bad_updates,
                    "skipped_updates": self.skipped_updates, "elapsed": self.elapsed,
                    "config": self.config.to_dict(), "routes": sorted(self.nets),
                    "initial_weights": self.initial_weights}
        metadata = {"format": "learned_optim.meta_checkpoint", "format_version": "1",
                    "progress": json.dumps(progress)}
        path = directory / CHECKPOINT_FILE
        atomic_write_bytes(path, safetensors_dumps(tensors, metadata))
        return path

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Continue a run from :meth:`save_checkpoint`'s file (same config required).

        Everything is read and checked before the trainer changes: a :class:`CheckpointError`
        (missing, unreadable or foreign file, another config or other nets) leaves it as it was.
        """
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {str(path)!r}: a run writes one after every "
                                  "epoch when given checkpoint_dir; start without resuming")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {str(path)!r} ({exc}); it is "
                                  "corrupted: delete it to start over") from None
        if metadata.get("format") != "learned_optim.meta_checkpoint":
            raise CheckpointError(f"{str(path)!r} is not a MetaTrainer checkpoint (its metadata "
                                  f"format is {metadata.get('format')!r})")
        try:
            progress = json.loads(metadata["progress"])
            fields = {key: progress[key] for key in (
                "epoch", "best_metric", "history", "bad_updates", "skipped_updates", "elapsed")}
            # fields added since the checkpoint was written take their defaults
            saved_config = {**MetaTrainConfig().to_dict(), **progress["config"],
                            "epochs": self.config.epochs}
            routes = progress["routes"]
            initial_weights = progress.get("initial_weights")  # absent before start_from
            if initial_weights is not None and not (
                    isinstance(initial_weights, dict)
                    and set(initial_weights) == {"name", "fingerprint"}
                    and all(isinstance(v, str) for v in initial_weights.values())):
                raise TypeError(f"initial_weights {initial_weights!r} is not "
                                "{'name': str, 'fingerprint': str}")
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} has unreadable progress metadata "
                                  f"({type(exc).__name__}: {exc}); delete it to start over"
                                  ) from None
        if saved_config != dict(self.config.to_dict(), epochs=self.config.epochs):
            raise CheckpointError(f"checkpoint {str(path)!r} was made with another config; "
                                  "resume with the same config (only epochs may change) or "
                                  "start over")
        if routes != sorted(self.nets):
            raise CheckpointError(f"checkpoint {str(path)!r} holds nets for routes {routes}, "
                                  f"this trainer has {sorted(self.nets)}; pass the same routes")
        expected = self._net_state()
        current, best = strip_prefix(tensors, "current."), strip_prefix(tensors, "best.")
        average = strip_prefix(tensors, "average.")
        saved_states = [("current", current), ("best", best)]
        if self.average_state is not None:
            saved_states.append(("average", average))
        for label, saved in saved_states:
            if set(saved) != set(expected) or any(
                    saved[k].shape != v.shape or saved[k].dtype != v.dtype
                    or not torch.isfinite(saved[k]).all() for k, v in expected.items()):
                raise CheckpointError(f"checkpoint {str(path)!r}: the {label} weights do not "
                                      "match this trainer's nets or are not finite; delete it "
                                      "to start over")
        adam = copy.deepcopy(self.meta_optimizer.state_dict())
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("adam."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        params = self._meta_params()
        if any(not 0 <= index < len(params) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}
               or entry["exp_avg"].shape != params[index].shape for index, entry in state.items()):
            raise CheckpointError(f"checkpoint {str(path)!r}: the meta-optimizer state does not "
                                  "match this trainer's nets; delete it to start over")
        adam["state"] = state
        self._load_nets(current)
        self.best_state = best
        if self.average_state is not None:
            self.average_state = average
        self.meta_optimizer.load_state_dict(adam)
        self.epoch = fields["epoch"]
        self.best_metric = fields["best_metric"]
        self.history = fields["history"]
        self.bad_updates = fields["bad_updates"]
        self.skipped_updates = fields["skipped_updates"]
        self.elapsed = fields["elapsed"]
        self.initial_weights = initial_weights


def _device_type(device: torch.device | str | None) -> str:
    """``"cpu"``, ``"cuda"``, ... for ``device`` (``"cpu"`` for ``None``; the text itself when it
    is no torch device, which :func:`_checked_device` then refuses)."""
    try:
        return torch.device(device if device is not None else "cpu").type
    except (RuntimeError, TypeError):
        return str(device)


def _checked_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a ``torch.device`` (the CPU for ``None``), refused if this torch cannot
    run on it."""
    try:
        checked = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a torch device; use 'cpu' or 'cuda' "
                          "(or 'cuda:N')") from None
    if checked.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}, but this torch sees no CUDA GPU "
                          "(torch.cuda.is_available() is False); meta-train on the CPU "
                          "(device='cpu', or leave it out) or install a CUDA build of torch")
    return checked


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values())


def _checked_task(family: TaskFamily, seed: int) -> Task:
    task = family.sample(seed)
    if not isinstance(task, Task):
        raise TaskError(f"task family {getattr(family, 'name', family)!r} sample(seed={seed}) "
                        f"returned a {type(task).__name__}, expected a learned_optim.tasks.Task")
    return task


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
