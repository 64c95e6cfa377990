"""``LearnedLSTMOptim``: the learned LSTM optimizer as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from .errors import StateDictError, WeightsFormatError
from .routing import AUTO_ROUTE, route_for_shape, route_param_groups
from .sharding import is_sharded, local_hidden, local_tensor, saved_hidden_problem, sharded_hidden
from .update import (ROW_ALIGN, StepWorkspace, accumulator_row, fuse_weights, iter_chunks,
                     lstm_step_, run_progress, stored_log_step_scale, update_bound,
                     write_progress_, write_step_scale_, write_tensor_feature_)
from .weights import WeightsBundle, resolve_weights

__all__ = ["LearnedLSTMOptim"]

_STATE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_STATE_KEYS = ({"step", "hidden"}, {"step", "hidden", "accumulators"})
# 1: every state is {"step", "hidden"}. 2: a state in a 16-bit state_dtype of a net with
# accumulators (features="adaptive") keeps them apart, {"step", "hidden", "accumulators"}.
# A state_dict says the lowest version that reads it, so float32 ones stay version 1.
_STATE_FORMAT_VERSION = 2
DEFAULT_CHUNK_SIZE = 4096


class LearnedLSTMOptim(Optimizer):
    r"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), as a drop-in for Adam.

    .. math::
        \begin{aligned}
        &\textbf{input}: \theta_0 \text{ (params)}, f \text{ (objective)}, \phi \text{ (weights,
            one net per route)}, \gamma \text{ (lr multiplier)}, \textit{maximize} \\
        &\textbf{initialize}: h_0 \leftarrow 0 \text{ (per coordinate, } 2 \times 2 \times 20
            \text{ floats)} \\
        &\textbf{for}\: t = 1 \textbf{ to } \ldots \textbf{ do} \\
        &\hspace{5mm} \nabla_t \leftarrow \nabla_\theta f(\theta_{t-1})
            \quad (-\nabla_\theta f \text{ if maximize}) \\
        &\hspace{5mm} [g_t, h_t] \leftarrow m(\operatorname{preprocess}(\nabla_t),
            h_{t-1}; \phi_{\text{route}(\theta)}) \\
        &\hspace{5mm} \theta_t \leftarrow \theta_{t-1} + \gamma\, g_t \\
        &\textbf{return}\: \theta_t
        \end{aligned}

    ``m`` is applied to every coordinate independently with shared weights (see
    :func:`learned_optim.update.lstm_step`). Reference: M. Andrychowicz et al., "Learning to
    learn by gradient descent by gradient descent", NeurIPS 2016, arXiv:1606.04474.

    Args:
        params: iterable of parameters or param-group dicts. A group may set ``"route"``
            (``"fc"``, ``"conv"`` or ``"auto"``); see :func:`learned_optim.route_param_groups`.
        weights: a bundled name (:func:`learned_optim.list_pretrained`), a local path (bundle
            directory or ``.safetensors`` file), a Hub repo id, an :class:`LSTMOptimizerNet`
            or a :class:`WeightsBundle`. Default: the bundled ``"default"`` optimizer.
        lr: multiplier on the learned step; 1.0 applies the step as meta-trained. The update
            scales linearly with it, so every ``torch.optim.lr_scheduler`` works, and 0 leaves
            the parameters unchanged.
        maximize: maximize the objective instead of minimizing it.
        chunk_size: coordinates processed at once; bounds a step's extra memory (about 1 kB
            per coordinate in float32, :func:`learned_optim.update.step_memory_bytes`). Results
            do not depend on it; the default (4096) keeps a block in the CPU's cache.
        state_dtype: dtype of the stored hidden state (``torch.float32``, ``torch.float64``,
            ``torch.bfloat16`` or ``torch.float16``). ``None``: float64 for float64 parameters,
            float32 otherwise. The LSTM always computes in float32 (float64 for float64 params).
            Only the LSTM's (h, c) rows are stored in a 16-bit ``state_dtype``: a net with
            adaptive features keeps its running averages (decays up to 0.999, whose updates a
            16-bit number cannot hold: a bfloat16 one stops changing), its per-tensor step
            scale and its other accumulators in the compute dtype, as
            ``state[p]["accumulators"]``.
        total_steps: the number of steps the run will take, for weights whose net reads the
            run's progress (``progress_feature``, :func:`learned_optim.update.run_progress`):
            such a net can anneal its step toward the end, like a cosine schedule. ``None``
            (the default): the length is unknown and the net steps as at the start of a run.
            Other nets ignore it. A param-group option, like ``lr``.
        revision, cache_dir, local_files_only: passed to the Hub when ``weights`` is a repo id.

    Behaviour to know:
        * A parameter whose ``grad`` is ``None`` is skipped (no step, no state). A zero gradient
          still moves the parameter: the LSTM's biases give a non-zero step.
        * A parameter whose gradient holds NaN or inf is left unchanged, together with its
          hidden state, and a ``RuntimeWarning`` says so. Under ``torch.amp.GradScaler`` such
          steps are skipped by the scaler itself. The same holds for a parameter whose hidden
          state holds NaN or inf (set by hand; a float16 ``state_dtype`` whose cell state
          overflowed): reset it with ``optimizer.state[p].clear()``.
        * The step never writes NaN or inf: with finite φ, gradient and state, the update of
          every coordinate is finite and at most ``lr * update_bound(net)``
          (:func:`learned_optim.update.update_bound`). Before anything is written, ``step``
          raises ``WeightsFormatError`` if the weights hold NaN or inf (e.g. modified in place
          after loading) and ``ValueError`` if ``lr`` is invalid or so large that the bound
          overflows. (Not guarded: a float16 parameter within one step of 65504.)
        * Sparse gradients raise ``RuntimeError``. Complex parameters are optimized as pairs of
          real coordinates (``torch.view_as_real``).
        * ``state_dict()`` records the weights it was made with; loading it into an optimizer
          with other weights, or loading another optimizer's state, raises ``StateDictError``.
        * Sharded parameters (FSDP2 DTensors): each process steps its local shard with hidden
          state for that shard only, without communication; see :mod:`learned_optim.sharding`
          for the state_dict layout ``torch.distributed.checkpoint`` saves.

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> net = LSTMOptimizerNet(seed=0)  # untrained; use weights="default" in practice
        >>> opt = LearnedLSTMOptim(model.parameters(), weights=net)
        >>> loss = model(torch.randn(8, 4)).pow(2).mean()
        >>> loss.backward()
        >>> opt.step()
    """

    def __init__(self, params: Iterable[Any], weights: Any = "default", lr: float = 1.0, *,
                 maximize: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 state_dtype: torch.dtype | None = None, total_steps: int | None = None,
                 revision: str | None = None, cache_dir: str | None = None,
                 local_files_only: bool | None = None):
        _check_lr(lr)
        _check_total_steps(total_steps)
        _check_chunk_size(chunk_size)
        _check_state_dtype(state_dtype)
        if not isinstance(maximize, bool):
            raise TypeError(f"maximize must be a bool, got {type(maximize).__name__}")
        params = list(params) if not isinstance(params, torch.Tensor) else params
        if isinstance(params, list) and not params:
            raise ValueError("LearnedLSTMOptim got an empty parameter list; pass the parameters "
                             "to optimize, e.g. model.parameters() of a model that has some")
        self._bundle = resolve_weights(weights, revision=revision, cache_dir=cache_dir,
                                       local_files_only=local_files_only)
        defaults = dict(lr=lr, maximize=maximize, route=AUTO_ROUTE, chunk_size=chunk_size,
                        state_dtype=state_dtype, total_steps=total_steps)
        super().__init__(params, defaults)

    # -- public helpers --------------------------------------------------------------------

    @property
    def weights(self) -> WeightsBundle:
        """The weights bundle (one net per route) this optimizer applies."""
        return self._bundle

    route_param_groups = staticmethod(route_param_groups)

    def step_scale(self, param: torch.Tensor) -> float:
        r"""The factor :math:`e^{\ell}` by which the per-tensor step-scale rule
        (``hypergradient_rate > 0``, :func:`learned_optim.update.tensor_step_scale`) multiplied
        ``param``'s last step: 1.0 before its first step and for weights without the rule.
        Under FSDP2, this rank's shard's scale. For inspection only; it changes nothing.

        Raises:
            ValueError: ``param`` is not in this optimizer's param groups.
        """
        group = next((group for group in self.param_groups
                      if any(p is param for p in group["params"])), None)
        if group is None:
            raise ValueError("step_scale: this tensor is not one of the optimizer's parameters; "
                             "pass a tensor given to LearnedLSTMOptim (or add_param_group)")
        config = self._bundle.nets[_route_of(self, group, param)].config
        state = self.state.get(param)
        if not config.scales_steps or not state:
            return 1.0
        return math.exp(float(stored_log_step_scale(_accumulators(state, config), config)))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:  # a refused group is not kept, whichever option is bad
            _check_lr(group["lr"])
            _check_chunk_size(group["chunk_size"])
            _check_state_dtype(group["state_dtype"])
            _check_total_steps(group["total_steps"])
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise
        route = group["route"]
        if route != AUTO_ROUTE and route not in self._bundle.routes:
            self.param_groups.pop()
            raise ValueError(
                f"param group route {route!r} is not in the weights {self._bundle.name!r}, "
                f"which has routes {list(self._bundle.routes)}; use one of those or 'auto'")
        for param in group["params"]:
            if param.layout != torch.strided:
                self.param_groups.pop()
                raise ValueError(f"LearnedLSTMOptim supports only dense (strided) parameters, "
                                 f"got layout {param.layout}; optimize sparse parameters with "
                                 "torch.optim.SparseAdam in a separate optimizer")
            if not (param.is_floating_point() or param.is_complex()):
                self.param_groups.pop()
                raise ValueError(f"LearnedLSTMOptim can only optimize floating point or complex "
                                 f"parameters, got dtype {param.dtype}; convert it (e.g. "
                                 ".float()) or leave it out of the optimizer")

    # -- the step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check every gradient before touching any parameter, so an error leaves all unchanged.
        work = []
        for group in self.param_groups:
            by_route: dict[str, list[torch.Tensor]] = defaultdict(list)
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse or param.grad.layout != torch.strided:
                    raise RuntimeError(
                        "LearnedLSTMOptim does not support sparse gradients (got a "
                        f"{param.grad.layout} gradient for a parameter of shape "
                        f"{tuple(param.shape)}); use dense gradients, e.g. "
                        "nn.Embedding(..., sparse=False), or optimize that parameter with "
                        "torch.optim.SparseAdam in a separate optimizer")
                by_route[_route_of(self, group, param)].append(param)
            work += [(group, route, params) for route, params in by_route.items()]
        self._check_weights_and_lr(work)
        skipped = [self._step_route(group, route, params) for group, route, params in work]
        bad_grads, bad_states = sum(s[0] for s in skipped), sum(s[1] for s in skipped)
        if bad_grads:
            warnings.warn(
                f"LearnedLSTMOptim skipped {bad_grads} parameter(s) whose gradient contains NaN "
                "or inf: they and their hidden state were left unchanged. Check the loss, clip "
                "gradients, or use torch.amp.GradScaler for mixed precision.",
                RuntimeWarning, stacklevel=2)
        if bad_states:
            warnings.warn(
                f"LearnedLSTMOptim skipped {bad_states} parameter(s) whose hidden state contains "
                "NaN or inf: they and their state were left unchanged. Reset the state with "
                "optimizer.state[param].clear() (or load a good state_dict); a float16 "
                "state_dtype can overflow on very long runs, use float32 or bfloat16.",
                RuntimeWarning, stacklevel=2)
        return loss

    def _check_weights_and_lr(self, work: list[tuple[dict[str, Any], str, Any]]) -> None:
        """Refuse, before any write, NaN/inf weights or an lr whose step bound overflows.

        The weights are re-checked only when one of their tensors was modified in place or
        replaced since the last check (torch's version counter and data pointer).
        """
        checked = self.__dict__.setdefault("_checked_weights", {})
        bounds: dict[str, float] = {}
        for group, route, params in work:
            if route not in bounds:
                net = self._bundle.nets[route]
                key = tuple((p.data_ptr(), p._version) for p in net.parameters())
                if route not in checked or checked[route][0] != key:
                    broken = [name for name, value in net.named_parameters()
                              if not torch.isfinite(value).all()]
                    if broken:
                        raise WeightsFormatError(
                            f"the weights {self._bundle.name!r} (route {route!r}) contain NaN or "
                            f"inf in {broken}, so every update would be non-finite; nothing was "
                            "changed. They were modified after loading (e.g. an in-place "
                            "meta-training step that diverged): reload them, e.g. "
                            "weights='default'")
                    checked[route] = (key, update_bound(net))
                bounds[route] = checked[route][1]
            _check_lr(group["lr"])  # schedulers write group["lr"] directly
            largest = min(torch.finfo(p.dtype).max for p in params)
            if not group["lr"] * bounds[route] < largest:
                raise ValueError(
                    f"Invalid learning rate: {group['lr']}; lr times the largest step of the "
                    f"weights ({bounds[route]:.3g}) overflows the parameters' dtype (max "
                    f"{largest:.3g}). Use a multiplier near 1.0")

    def _step_route(self, group: dict[str, Any], route: str,
                    params: list[torch.Tensor]) -> tuple[int, int]:
        """Update ``params`` (all with grads) of one group through the net of ``route``.

        Returns how many were skipped for a non-finite gradient and for a non-finite state.
        """
        finite = _finite_gradients(params)
        state_ok = torch.stack([_state_finite(self.state.get(p), p.device)
                                for p in params]).tolist()
        kept = [p for p, ok, good in zip(params, finite, state_ok) if ok and good]
        skipped = (finite.count(False), sum(ok and not good for ok, good in zip(finite, state_ok)))
        if not kept:
            return skipped
        # Compute dtype: float64 for float64 params, float32 otherwise. Group by it.
        by_compute: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
        for param in kept:
            by_compute[(param.device, _compute_dtype(param))].append(param)
        for (device, dtype), members in by_compute.items():
            weights = fuse_weights(self._bundle.nets[route], dtype=dtype, device=device)
            self._apply(group, route, members, weights, dtype)
        return skipped

    @torch.compiler.disable(reason="a Python loop over blocks; compiling it would unroll it")
    def _apply(self, group: dict[str, Any], route: str, params: list[torch.Tensor],
               weights: Any, compute_dtype: torch.dtype) -> None:
        """Run the update rule over ``params`` in blocks of ``chunk_size`` coordinates, in one
        reused workspace, writing params and state in place."""
        config = weights.config
        grads, hidden, targets, deferred, steps = [], [], [], [], []
        values = [] if config.parameter_feature else None  # θ, read by the net
        # a 16-bit state keeps its accumulators apart, in the compute dtype
        apart = [] if _keeps_accumulators_apart(group, config, compute_dtype) else None
        rows = []  # accumulator rows, for the per-tensor step scale and tensor feature
        for param in params:
            state = self.state[param]
            local, grad = local_tensor(param), local_tensor(param.grad)  # FSDP2: this shard
            real = torch.view_as_real(local) if local.is_complex() else local
            grad = torch.view_as_real(grad) if grad.is_complex() else grad
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state.update(_initial_state(self._bundle.nets[route], real.numel(),
                                            _state_dtype(group, param), compute_dtype,
                                            apart is not None, param.device))
            if config.progress_feature:  # t steps done before this one
                write_progress_(_accumulators(state, config),
                                run_progress(float(state["step"]), group["total_steps"]),
                                config)
            steps.append(state["step"])
            grads.append(grad.reshape(-1))
            hidden.append(state["hidden"])
            if apart is not None:
                apart.append(state["accumulators"])
            if config.scales_steps or config.tensor_feature:
                rows.append(_accumulators(state, config))
            if values is not None:
                values.append(real.detach().reshape(-1))  # a copy only if not contiguous
            if real.is_contiguous():
                targets.append(real.view(-1))
            else:  # collect the whole update, then add it through the strided view
                buffer = torch.zeros(real.numel(), dtype=compute_dtype, device=param.device)
                targets.append(buffer)
                deferred.append((real, buffer))
        torch._foreach_add_(steps, 1.0)
        if config.scales_steps:  # one scale per tensor (per shard under FSDP2)
            for grad, row in zip(grads, rows):
                write_step_scale_(row, grad, config, maximize=group["maximize"])
        _run_blocks(grads, hidden, targets, weights, compute_dtype, group["chunk_size"],
                    group["lr"], group["maximize"], values, apart)
        if config.tensor_feature:  # one number per tensor (per shard under FSDP2)
            for row in rows:
                write_tensor_feature_(row, config)
        for real, buffer in deferred:
            real.add_(buffer.view(real.shape))

    # -- state_dict ------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        apart = any("accumulators" in state for state in self.state.values())
        return {
            "format_version": _STATE_FORMAT_VERSION if apart else 1,  # the lowest that reads it
            "weights_name": self._bundle.name,
            "weights_fingerprint": self._bundle.fingerprint(),
            "routes": list(self._bundle.routes),
        }

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state_dict plus a ``"learned_optim"`` entry naming the weights.

        The entry is repeated in every param group, where it survives
        ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` (which keeps only
        ``"state"`` and ``"param_groups"``). The hidden state of a sharded (``DTensor``)
        parameter is a ``DTensor`` of shape ``(*param.shape, 2L, H)`` placed like the
        parameter, so ``torch.distributed.checkpoint`` saves and loads it shard by shard.
        A 16-bit state of a net with accumulators also has ``"accumulators"``, shape ``(n, 1,
        H)`` in float32 (float64 for float64 params; see ``state_dtype``), sharded the same way.
        """
        state_dict = super().state_dict()
        identity = self._identity()
        state_dict["learned_optim"] = identity
        params = [p for group in self.param_groups for p in group["params"]]
        for group in state_dict["param_groups"]:
            group["learned_optim"] = identity
            for index in group["params"]:
                entry = state_dict["state"].get(index)
                if entry is not None and is_sharded(params[index]):
                    state_dict["state"][index] = dict(entry, **{
                        key: sharded_hidden(params[index], entry[key])
                        for key in ("hidden", "accumulators") if key in entry})
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict made by a ``LearnedLSTMOptim`` with the same weights.

        The hidden state keeps its own dtype and is copied (not aliased), so continuing from a
        loaded state is bit-for-bit identical to an uninterrupted run. A 16-bit state saved by
        learned_optim before version 2 of the state format, whose accumulators were stored in
        16 bits too, gets them in the compute dtype from the saved values (``state_dtype``).
        """
        self._check_state_dict(state_dict)
        saved_state = state_dict["state"]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        # an option the saver did not have yet (e.g. total_steps) keeps this optimizer's value
        groups = [{**{k: v for k, v in mine.items() if k != "params"},
                   **{k: v for k, v in g.items() if k != "learned_optim"}}
                  for g, mine in zip(state_dict["param_groups"], self.param_groups)]
        super().load_state_dict(dict(state_dict, param_groups=groups))
        # torch casts state tensors to the param's dtype and may alias the caller's tensors;
        # put back exact, private copies in the state dtype.
        owners = {}
        for group in self.param_groups:
            for param in group["params"]:
                owners[saved_ids[len(owners)]] = (param, group)
        for saved_id, entry in saved_state.items():
            param, group = owners[saved_id]
            config = self._bundle.nets[_route_of(self, group, param)].config
            compute_dtype = _compute_dtype(param)
            # the whole state (n, state_rows, H): the saved rows, then any accumulators kept
            # apart; a new tensor (cat copies), so nothing aliases the caller's state_dict
            whole = torch.cat([local_hidden(param, entry[key].detach())
                               for key in ("hidden", "accumulators") if key in entry], dim=1)
            split, state_dtype = 2 * config.num_layers, _state_dtype(group, param)
            parts = {"hidden": (whole, state_dtype)}
            if _keeps_accumulators_apart(group, config, compute_dtype):
                parts = {"hidden": (whole[:, :split], state_dtype),
                         "accumulators": (whole[:, split:], compute_dtype)}
            self.state[param] = {
                "step": entry["step"].detach().to(dtype=torch.float32, device="cpu", copy=True),
                **{key: part.to(device=param.device, dtype=dtype).contiguous()
                   for key, (part, dtype) in parts.items()},
            }

    def _check_state_dict(self, state_dict: Any) -> None:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("state"), dict) \
                or not isinstance(state_dict.get("param_groups"), list) \
                or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                           for g in state_dict["param_groups"]):
            raise StateDictError("expected an optimizer state_dict with a 'state' dict and a "
                                 "'param_groups' list of dicts with 'params' (from "
                                 "LearnedLSTMOptim.state_dict())")
        identity = state_dict.get("learned_optim")
        if identity is None and state_dict["param_groups"]:  # via torch.distributed.checkpoint
            identity = state_dict["param_groups"][0].get("learned_optim")
        if not isinstance(identity, dict):
            keys = sorted({k for entry in state_dict["state"].values() if isinstance(entry, dict)
                           for k in entry})
            raise StateDictError(
                "this state_dict was not made by LearnedLSTMOptim (it has no 'learned_optim' "
                f"entry; its per-parameter state has keys {keys}, e.g. from Adam). Load the "
                "state_dict of a LearnedLSTMOptim, or start this optimizer fresh")
        version = identity.get("format_version")
        if not isinstance(version, int) or version > _STATE_FORMAT_VERSION:
            raise StateDictError(
                f"this state_dict has state format_version {version!r}; this learned_optim "
                f"reads version {_STATE_FORMAT_VERSION} or older: upgrade learned_optim")
        mine = self._identity()
        # known_fingerprints: this version's and those earlier versions gave the same weights
        if identity.get("weights_fingerprint") not in self._bundle.known_fingerprints():
            raise StateDictError(
                f"this state_dict was made with weights {identity.get('weights_name')!r} "
                f"(fingerprint {identity.get('weights_fingerprint')}), but this optimizer uses "
                f"{mine['weights_name']!r} (fingerprint {mine['weights_fingerprint']}). The "
                "hidden state only means something to the weights that made it: construct "
                f"the optimizer with weights={identity.get('weights_name')!r}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"])
                for s, g in zip(saved_groups, self.param_groups)):
            raise StateDictError(
                "this state_dict has param groups of sizes "
                f"{[len(s['params']) for s in saved_groups]}, but this optimizer has "
                f"{[len(g['params']) for g in self.param_groups]}; build the optimizer over the "
                "same parameters, in the same order, as the one that saved it")
        unknown = sorted(set(state_dict["state"]) - {i for g in saved_groups for i in g["params"]},
                         key=str)
        if unknown:
            raise StateDictError(f"this state_dict has state for parameter ids {unknown[:10]} "
                                 "that no param group lists: it is corrupted or hand-edited; "
                                 "save it again with LearnedLSTMOptim.state_dict()")
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            route = saved.get("route", AUTO_ROUTE)
            if route != AUTO_ROUTE and route not in self._bundle.routes:
                raise StateDictError(f"this state_dict routes a group to {route!r}, which the "
                                     f"weights {mine['weights_name']!r} do not have; load it "
                                     "into an optimizer built with the weights that saved it")
            try:
                _check_lr(saved.get("lr", group["lr"]))
                _check_chunk_size(saved.get("chunk_size", group["chunk_size"]))
                _check_state_dtype(saved.get("state_dtype", group["state_dtype"]))
                _check_total_steps(saved.get("total_steps", group["total_steps"]))
            except (TypeError, ValueError) as exc:
                raise StateDictError(f"param group {index} of this state_dict is invalid: "
                                     f"{exc}") from None
            for saved_id, param in zip(saved["params"], group["params"]):
                entry = state_dict["state"].get(saved_id)
                if entry is None:
                    continue
                if not isinstance(entry, dict) or set(entry) not in _STATE_KEYS:
                    raise StateDictError(f"state of parameter {saved_id} has keys "
                                         f"{sorted(entry) if isinstance(entry, dict) else entry}"
                                         ", expected ['hidden', 'step'] (or ['accumulators', "
                                         "'hidden', 'step'])")
                keys = sorted(entry)
                if not all(torch.is_tensor(entry[k]) and entry[k].is_floating_point()
                           for k in keys):
                    raise StateDictError(
                        f"state of parameter {saved_id}: {', '.join(map(repr, keys))} must "
                        "all be floating point tensors, got "
                        + ", ".join(f"{k}: {_described(entry[k])}" for k in keys)
                        + "; the state_dict is corrupted")
                # each process checks its own shard: no collective inside load_state_dict
                local = {k: local_tensor(entry[k]) for k in ("hidden", "accumulators")
                         if k in entry}
                if not bool(_state_finite(local, local["hidden"].device)) \
                        or not torch.isfinite(entry["step"]).all():
                    raise StateDictError(
                        f"the hidden state of parameter {saved_id} contains NaN or inf: the "
                        "state_dict is corrupted (stepping from it would leave that parameter "
                        "frozen). Load an earlier state_dict or start this optimizer fresh")
                config = self._bundle.nets[_route_of(self, saved, param)].config
                apart = "accumulators" in entry
                if apart and not config.accumulator_rows:
                    raise StateDictError(
                        f"state of parameter {saved_id} has 'accumulators', but the net of "
                        f"weights {mine['weights_name']!r} keeps none (its features are "
                        f"{config.features!r}): the state_dict is corrupted or belongs to "
                        "other weights")
                rows = {"hidden": 2 * config.num_layers if apart else config.state_rows,
                        "accumulators": config.accumulator_rows}
                for key in local:
                    problem = saved_hidden_problem(param, entry[key], rows[key],
                                                   config.hidden_size)
                    if problem:
                        raise StateDictError(f"{'hidden state' if key == 'hidden' else key} "
                                             f"of parameter {saved_id} has shape "
                                             f"{tuple(entry[key].shape)}{problem}")

    # -- pickling and printing ---------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_bundle"] = self._bundle
        return state

    def __repr__(self) -> str:
        text = super().__repr__()
        head, _, rest = text.partition(" (")
        return f"{head} (weights={self._bundle.name!r}, routes={list(self._bundle.routes)}{rest}"


def _state_finite(state: dict[str, Any] | None, device: torch.device) -> torch.Tensor:
    """Whether a parameter's hidden state (and accumulators kept apart) is all finite (no
    state yet: True). One pass, no temporary the size of the state: NaN propagates through
    min/max and inf shows in them."""
    finite = torch.tensor(True, device=device)
    for key in ("hidden", "accumulators"):
        tensor = state.get(key) if state else None
        if tensor is not None and tensor.numel():
            low, high = torch.aminmax(tensor)
            finite = finite & torch.isfinite(low) & torch.isfinite(high)
    return finite


def _described(value: Any) -> str:
    return f"a {value.dtype} tensor" if torch.is_tensor(value) else f"a {type(value).__name__}"


def _keeps_accumulators_apart(group: dict[str, Any], config: Any,
                              compute_dtype: torch.dtype) -> bool:
    """Whether a state of ``group`` keeps the net's accumulator row apart from ``hidden``, in
    the compute dtype (float32, or float64 for float64 params): when the state dtype has 16
    bits (bfloat16, float16) and the net has accumulators. A running average with decay
    0.999 moves by :math:`10^{-3}` of the difference per step, below half a bfloat16 ulp
    (:math:`2^{-9}` relative): in bfloat16 it would stop changing (the second moment's
    bias-correction weight stops at 0.25 after about 290 steps)."""
    state_dtype = group["state_dtype"]
    return bool(config.accumulator_rows) and state_dtype is not None \
        and torch.finfo(state_dtype).bits == 16 < torch.finfo(compute_dtype).bits


def _initial_state(net: Any, numel: int, state_dtype: torch.dtype, compute_dtype: torch.dtype,
                   apart: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """A fresh state: ``{"hidden"}`` of shape ``(numel, state_rows, H)``, or with the
    accumulators kept ``apart``, ``{"hidden"}`` of the (h, c) rows ``(numel, 2L, H)`` and
    ``{"accumulators"}`` ``(numel, 1, H)`` in the compute dtype."""
    if not apart:
        return {"hidden": net.initial_state(numel, dtype=state_dtype, device=device)}
    config = net.config
    return {"hidden": torch.zeros(numel, 2 * config.num_layers, config.hidden_size,
                                  dtype=state_dtype, device=device),
            "accumulators": torch.zeros(numel, config.accumulator_rows, config.hidden_size,
                                        dtype=compute_dtype, device=device)}


def _accumulators(state: dict[str, Any], config: Any) -> torch.Tensor:
    """A parameter's accumulator rows, shape ``(n, H)``: a view into its state."""
    if "accumulators" in state:
        return state["accumulators"][:, 0]
    return accumulator_row(state["hidden"], config)


def _route_of(optimizer: LearnedLSTMOptim, group: dict[str, Any], param: torch.Tensor) -> str:
    route = group.get("route", AUTO_ROUTE)
    return route_for_shape(param, optimizer.weights.routes) if route == AUTO_ROUTE else route


def _run_blocks(grads: list[torch.Tensor], hidden: list[torch.Tensor],
                targets: list[torch.Tensor], weights: Any, compute_dtype: torch.dtype,
                chunk_size: int, lr: float, maximize: bool,
                values: list[torch.Tensor] | None = None,
                apart: list[torch.Tensor] | None = None) -> None:
    """The update rule over flat ``grads`` in blocks of ``chunk_size`` coordinates, in one
    workspace: ``targets += lr * update``, ``hidden`` replaced by the new state, in place.
    ``values`` (the parameters' values θ, for nets with ``parameter_feature``) are read block
    by block, each before its own block is updated. ``apart``: the accumulator rows, shape
    ``(n, 1, H)``, of states whose ``hidden`` holds only the (h, c) rows (a 16-bit state).

    A block that spans many small tensors is gathered with one ``cat`` and scattered with one
    ``_foreach`` call each, so the Python work per block does not grow with the tensor count.
    """
    sizes = [g.shape[0] for g in grads]
    if sum(sizes) == 0:
        return
    workspace = StepWorkspace(min(chunk_size, sum(sizes)), weights.config,
                              dtype=compute_dtype, device=grads[0].device)
    # (the states, the rows of the workspace's state they fill)
    split = 2 * weights.config.num_layers
    parts = [(hidden, slice(None))] if apart is None else \
        [(hidden, slice(0, split)), (apart, slice(split, None))]
    for pieces in iter_chunks(sizes, chunk_size):
        lengths = [stop - start for _, start, stop in pieces]
        rows = sum(lengths)
        grad_in, hidden_in = workspace.grad[:rows], workspace.hidden[:rows]
        in_place = None  # a block inside one tensor, in the compute dtype: no copies
        if len(pieces) == 1:
            index, start, stop = pieces[0]
            grad_in.copy_(grads[index][start:stop])
            if values is not None:
                workspace.param[:rows].copy_(values[index][start:stop])
            if apart is None and hidden[index].dtype == compute_dtype \
                    and rows % ROW_ALIGN == 0:
                in_place = hidden[index][start:stop]
            else:
                for states, part in parts:
                    hidden_in[:, part].copy_(states[index][start:stop])
        else:
            torch.cat(_slices(grads, pieces), out=grad_in)
            if values is not None:
                torch.cat(_slices(values, pieces), out=workspace.param[:rows])
            for states, part in parts:
                torch.cat(_slices(states, pieces), out=hidden_in[:, part])
        if maximize:
            grad_in.neg_()
        update = lstm_step_(workspace, rows, weights, hidden=in_place)
        if lr != 1.0:
            update.mul_(lr)
        if len(pieces) == 1:
            if in_place is None:
                for states, part in parts:
                    states[index][start:stop].copy_(hidden_in[:, part])
            targets[index][start:stop].add_(update)
        else:
            for states, part in parts:
                torch._foreach_copy_(_slices(states, pieces), hidden_in[:, part].split(lengths))
            torch._foreach_add_(_slices(targets, pieces), update.split(lengths))


def _slices(tensors: list[torch.Tensor],
            pieces: list[tuple[int, int, int]]) -> list[torch.Tensor]:
    """``tensors[index][start:stop]`` for each piece (the tensor itself when it is whole)."""
    return [tensors[index] if stop - start == tensors[index].shape[0]
            else tensors[index][start:stop] for index, start, stop in pieces]


def _finite_gradients(params: list[torch.Tensor]) -> list[bool]:
    """Whether each gradient is free of NaN and inf: one max-abs norm per gradient in one
    ``_foreach_norm`` call (it propagates NaN and inf), no gradient-sized temporary, and one
    host sync."""
    grads = [local_tensor(p.grad) for p in params]  # FSDP2: this process's shard
    device = grads[0].device
    nonempty = [g for g in grads if g.numel()]
    norms = iter(torch._foreach_norm(nonempty, math.inf) if nonempty else ())
    values = [next(norms).to(device, torch.float32) if g.numel()
              else torch.zeros((), device=device) for g in grads]
    return torch.isfinite(torch.stack(values)).tolist()


def _compute_dtype(param: torch.Tensor) -> torch.dtype:
    return torch.float64 if param.dtype in (torch.float64, torch.complex128) else torch.float32


def _state_dtype(group: dict[str, Any], param: torch.Tensor) -> torch.dtype:
    return group["state_dtype"] or _compute_dtype(param)


def _check_lr(lr: Any) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"Invalid learning rate: {lr!r}; lr must be a real number (a "
                        "multiplier on the learned step, 1.0 = as meta-trained)")
    if not math.isfinite(lr) or lr < 0.0:
        raise ValueError(f"Invalid learning rate: {lr}; lr must be finite and >= 0")


def _check_chunk_size(chunk_size: Any) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"Invalid chunk_size: {chunk_size!r}; it must be a positive integer "
                         f"(coordinates per block, default {DEFAULT_CHUNK_SIZE})")


def _check_total_steps(total_steps: Any) -> None:
    if total_steps is not None and (isinstance(total_steps, bool)
                                    or not isinstance(total_steps, int) or total_steps < 1):
        raise ValueError(f"Invalid total_steps: {total_steps!r}; use None (the run's length is "
                         "unknown) or a positive integer, the number of steps the run will take")


def _check_state_dtype(state_dtype: Any) -> None:
    if state_dtype is not None and state_dtype not in _STATE_DTYPES:
        raise ValueError(f"Invalid state_dtype: {state_dtype!r}; use None or one of "
                         f"{[str(d) for d in _STATE_DTYPES]}")
