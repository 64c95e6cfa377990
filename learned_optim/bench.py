r"""``python -m learned_optim bench``: what one step of the learned optimizer costs, measured.

Everything runs in one process on the same inputs, and every ratio is a median over rounds in
which the compared functions run back to back, so that a shared or throttled machine moves
them together. Columns of the step table, for models of ``--sizes`` parameters held as one
tensor or as ``--tensors`` tensors:

* (a) the naive reference, a per-tensor loop over ``nn.LSTMCell`` (``benchmarks/naive.py``,
  found next to the package in a source checkout; left out otherwise);
* (b) :meth:`LearnedLSTMOptim.step`;
* (c) the floor: only the two LSTM matrix multiplies over all coordinates, in blocks of
  ``chunk_size`` rows into preallocated outputs, nothing else;
* (d) ``torch.optim.Adam(foreach=True)``.

``Mparam/s`` is parameters updated per second by (b); ``state GB/s`` the hidden-state traffic
that implies (read and written once: 640 B per parameter in float32), to compare with the
memory bandwidth on a GPU.

Memory: the peak of the bytes allocated during one step above what was allocated before it
(transient; the state already exists), on CPU from the allocation events of
``torch.profiler.profile(profile_memory=True)``, which sees every allocation and free of
torch's allocator in order (``tracemalloc`` does not see torch, and the resident set size counts
pages that the C allocator keeps or reuses, not tensors); on CUDA from
``torch.cuda.max_memory_allocated``. The budget it is compared with is
:func:`learned_optim.update.step_memory_bytes` for the step's block size.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch

from .network import LSTMOptimizerNet
from .optimizer import DEFAULT_CHUNK_SIZE, LearnedLSTMOptim
from .update import StepWorkspace, fuse_weights, lstm_step_, step_memory_bytes

__all__ = ["BenchConfig", "run", "peak_transient_bytes", "load_naive", "make_params",
           "floor_step"]

#: Model sizes of the full benchmark and of ``--quick``.
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (2_000, 20_000)
# Models bigger than this are not given to the naive baseline: it keeps its state and makes
# temporaries of about 1 kB per coordinate (0.8 GB at 1M in the step table), so 10M would take
# over 10 GB of a machine that may be shared.
_NAIVE_MAX_PARAMS = 2_000_000


@dataclass
class BenchConfig:
    """What ``run`` measures. ``quick`` shrinks every part to a smoke test."""

    sizes: tuple[int, ...] = SIZES
    tensors: int = 500
    repeats: int = 5
    chunk_size: int = DEFAULT_CHUNK_SIZE
    device: str = "cpu"
    train_steps: int = 1000
    meta_horizon: int = 100
    meta_unroll: int = 20
    compile: bool = False
    quick: bool = False
    naive: ModuleType | None = None
    seed: int = 0
    sections: tuple[str, ...] = field(default=("step", "block", "state", "meta", "train"))

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchConfig":
        values = dict(sizes=QUICK_SIZES, tensors=20, repeats=1, train_steps=10,
                      meta_horizon=2, meta_unroll=1, quick=True)
        values.update(overrides)
        return cls(**values)


# -- measuring ----------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_rounds(functions: dict[str, Callable[[], Any]], repeats: int,
                device: str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` rounds, the functions back to back in each
    round (after one untimed warm-up call each)."""
    for function in functions.values():
        function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            _sync(device)
            start = time.perf_counter()
            function()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the per-round ratio."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def peak_transient_bytes(function: Callable[[], Any], device: str = "cpu") -> int:
    """Peak bytes allocated by torch during ``function()`` above the bytes allocated before."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        function()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU],
                                         profile_memory=True) as prof:
        function()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _quiet_native_stderr():
    """Discard what native code writes to stderr meanwhile: the profiler logs one line for every
    free of a tensor made before profiling began (such frees are left out of the count, which
    can only raise the measured peak). Python exceptions are unaffected."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable file descriptor 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- models -------------------------------------------------------------------------------------


def make_params(total: int, tensors: int, *, device: str = "cpu",
                seed: int = 0) -> list[torch.nn.Parameter]:
    """``tensors`` flat parameters of ``total`` coordinates in all, with gradients of many
    magnitudes set (fixed across steps)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [total // tensors + (1 if k < total % tensors else 0) for k in range(tensors)]
    params = []
    for size in sizes:
        param = torch.nn.Parameter(torch.randn(size, generator=generator).to(device))
        scale = torch.exp(torch.empty(size).uniform_(-12, 0, generator=generator))
        param.grad = (torch.randn(size, generator=generator) * scale).to(device)
        params.append(param)
    return params


def floor_step(total: int, net: LSTMOptimizerNet, chunk_size: int,
               device: str = "cpu") -> Callable[[], None]:
    """Only the two LSTM matrix multiplies over ``total`` coordinates, in blocks of
    ``chunk_size`` rows, into preallocated outputs."""
    weights = fuse_weights(net.requires_grad_(False), device=device)
    rows = min(chunk_size, total)
    inputs = [torch.randn(rows, w.shape[1], device=device) for w, _ in weights.layers]
    out = torch.empty(rows, weights.layers[0][0].shape[0], device=device)
    blocks = [min(rows, total - start) for start in range(0, total, rows)]

    def run() -> None:
        for n in blocks:
            for (weight, bias), x in zip(weights.layers, inputs):
                torch.addmm(bias, x[:n], weight.t(), out=out[:n])
    return run


def load_naive() -> ModuleType | None:
    """``benchmarks/naive.py`` from the source checkout this package lives in, or ``None``."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "naive.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("learned_optim_benchmarks_naive", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _net() -> LSTMOptimizerNet:
    return LSTMOptimizerNet(seed=0).requires_grad_(False)


# -- sections -----------------------------------------------------------------------------------


def bench_steps(config: BenchConfig) -> list[dict[str, Any]]:
    """One row per (size, layout): times of (a)-(d), their ratios, transient memory."""
    rows = []
    for total in config.sizes:
        for tensors in (1, config.tensors):
            if tensors > total:
                continue
            rows.append(_bench_one_model(config, total, tensors))
            gc.collect()  # optimizers hold reference cycles: free this model's GBs now
            print(_format_step_row(rows[-1]), flush=True)
    return rows


def _bench_one_model(config: BenchConfig, total: int, tensors: int) -> dict[str, Any]:
    device, net = config.device, _net()
    params = make_params(total, tensors, device=device, seed=config.seed)
    ours = LearnedLSTMOptim(params, weights=net, chunk_size=config.chunk_size)
    adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
    functions = {"b": ours.step, "c": floor_step(total, net, config.chunk_size, device),
                 "d": adam.step}
    naive_note = ""
    if config.naive is None:
        naive_note = "no benchmarks/naive.py"
    elif total > _NAIVE_MAX_PARAMS:
        naive_note = "skipped (> 10 GB)"
    else:
        naive = config.naive.NaiveLSTMOptimizer(params, _net().to(device))
        functions = {"a": naive.step, **functions}
    repeats = config.repeats if total < 10_000_000 else max(2, config.repeats // 2)
    seconds = time_rounds(functions, repeats, device)
    row: dict[str, Any] = {"params": total, "tensors": tensors, "naive_note": naive_note}
    for name, values in seconds.items():
        row[name] = statistics.median(values)
    row["b/c"] = median_ratio(seconds["b"], seconds["c"])
    row["b/d"] = median_ratio(seconds["b"], seconds["d"])
    if "a" in seconds:
        row["a/b"] = median_ratio(seconds["a"], seconds["b"])
        row["naive_peak"] = peak_transient_bytes(naive.step, device)
    row["peak"] = peak_transient_bytes(ours.step, device)
    row["budget"] = step_memory_bytes(min(config.chunk_size, total), net.config,
                                      largest_tensor=max(p.numel() for p in params))
    row["state_bytes"] = _state_bytes(ours) / total
    return row


def bench_state(config: BenchConfig) -> dict[str, Any]:
    """State bytes per parameter (float32 and bfloat16 hidden state, of the paper's net and of
    the bundled ``default``'s, and Adam's) and step times (the paper's net)."""
    total = min(1_000_000, max(config.sizes))
    device, net = config.device, _net()
    result: dict[str, Any] = {"params": total}
    steps = {}
    for label, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        params = make_params(total, 1, device=device, seed=config.seed)
        opt = LearnedLSTMOptim(params, weights=net, state_dtype=dtype,
                               chunk_size=config.chunk_size)
        opt.step()
        result[label] = _state_bytes(opt) / total
        steps[label] = opt.step
    # the bundled default's adaptive net: one more state row, kept in float32 with a bfloat16
    # state (its running averages cannot move in bfloat16)
    for label, dtype in (("default_float32", None), ("default_bfloat16", torch.bfloat16)):
        params = make_params(total, 1, device=device, seed=config.seed)
        opt = LearnedLSTMOptim(params, weights="default", state_dtype=dtype,
                               chunk_size=config.chunk_size)
        opt.step()
        result[label] = _state_bytes(opt) / total
        del opt, params
    params = make_params(total, 1, device=device, seed=config.seed)
    adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
    adam.step()
    result["adam"] = _state_bytes(adam) / total
    seconds = time_rounds(steps, config.repeats, device)
    result["step_float32"] = statistics.median(seconds["float32"])
    result["step_bfloat16"] = statistics.median(seconds["bfloat16"])
    result["bf16/fp32 time"] = median_ratio(seconds["bfloat16"], seconds["float32"])
    return result


def bench_block(config: BenchConfig) -> dict[str, float]:
    """Where the time of one block of ``chunk_size`` coordinates goes: the whole in-place rule,
    its two LSTM matrix multiplies, its four ``exp`` calls, and ``torch.tanh`` on as many
    values (what the gates would cost through tanh). Minimum over rounds, in seconds."""
    net, rows, device = _net(), config.chunk_size, config.device
    weights = fuse_weights(net, device=device)
    workspace = StepWorkspace(rows, net.config, device=device)
    workspace.grad.copy_(make_params(rows, 1, seed=config.seed)[0].grad.to(device))
    state = torch.randn(rows, 4, 20, device=device) * 0.3
    hidden = net.config.hidden_size
    gates = torch.randn(rows, 4 * hidden, device=device)
    cells = torch.randn(rows, hidden, device=device)
    out_gates, out_cells = torch.empty_like(gates), torch.empty_like(cells)
    matmuls = floor_step(rows, net, rows, device)

    def exps() -> None:
        for _ in weights.layers:
            torch.exp(gates, out=out_gates)
            torch.exp(cells, out=out_cells)

    def tanhs() -> None:
        for _ in weights.layers:
            torch.tanh(gates, out=out_gates)
            torch.tanh(cells, out=out_cells)
    seconds = time_rounds({"rule": lambda: lstm_step_(workspace, rows, weights, hidden=state),
                           "matmuls": matmuls, "exp": exps, "tanh": tanhs},
                          max(20, 4 * config.repeats), device)
    return {name: min(values) for name, values in seconds.items()}


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))


def bench_meta(config: BenchConfig) -> dict[str, Any] | None:
    """Meta-training steps per second on digits-MLP: MetaTrainer against the naive unroll."""
    from .meta import MetaTrainConfig, MetaTrainer
    from .tasks import DigitsMLPFamily

    try:
        task = DigitsMLPFamily(horizon=config.meta_horizon).sample(config.seed)
    except ImportError as exc:
        return {"error": str(exc)}
    meta_config = MetaTrainConfig(horizon=config.meta_horizon, unroll=config.meta_unroll,
                                  seed=config.seed)
    trainer = MetaTrainer(DigitsMLPFamily(horizon=config.meta_horizon), meta_config)
    functions = {"ours": lambda: trainer.train_task(task)}
    if config.naive is not None:
        net = LSTMOptimizerNet(seed=config.seed)
        meta_optimizer = torch.optim.Adam(net.parameters(), lr=meta_config.meta_lr)
        functions["naive"] = lambda: config.naive.naive_train_task(
            task, net, meta_optimizer, config.meta_horizon, config.meta_unroll)
    seconds = time_rounds(functions, max(1, config.repeats // 2))
    result = {name: config.meta_horizon / statistics.median(values)
              for name, values in seconds.items()}
    if "naive" in seconds:
        result["speedup"] = median_ratio(seconds["naive"], seconds["ours"])
    return result


def bench_training(config: BenchConfig) -> dict[str, Any]:
    """Wall time of a full digits-CNN training: learned optimizer against Adam (lr=1e-3)."""
    from .routing import route_param_groups
    from .tasks.digits import DigitsCNN, digits_split

    try:
        x, y = digits_split("train")
    except ImportError as exc:
        return {"error": str(exc)}
    result: dict[str, Any] = {"steps": config.train_steps}
    makers = {"learned": lambda m: LearnedLSTMOptim(route_param_groups(m),
                                                    weights="l2l-digits-cnn"),
              "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, foreach=True)}
    for name, make_optimizer in makers.items():
        torch.manual_seed(config.seed)
        model = DigitsCNN()
        optimizer = make_optimizer(model)
        generator = torch.Generator().manual_seed(config.seed)
        losses = []
        start = time.perf_counter()
        for _ in range(config.train_steps):
            batch = torch.randint(0, len(x), (128,), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        result[name] = time.perf_counter() - start
        tail = losses[-max(1, len(losses) // 20):]
        result[name + "_final_loss"] = sum(tail) / len(tail)
    result["learned/adam"] = result["learned"] / result["adam"]
    return result


def bench_compile(config: BenchConfig) -> dict[str, Any]:
    """``torch.compile(opt.step)``: compile time, recompiles over steps, equality; and the
    update rule compiled by Inductor against the eager in-place rule on one block."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    dynamo_log = logging.getLogger("torch._dynamo")
    level = dynamo_log.level
    dynamo_log.setLevel(logging.ERROR)  # graph-break notices: counted below instead
    try:
        return _bench_compile(config, counters)
    finally:
        dynamo_log.setLevel(level)


def _bench_compile(config: BenchConfig, counters: Any) -> dict[str, Any]:
    from . import update

    result: dict[str, Any] = {}
    params_eager = make_params(20_000, 8, seed=config.seed)
    params_compiled = [torch.nn.Parameter(p.detach().clone()) for p in params_eager]
    for p, q in zip(params_compiled, params_eager):
        p.grad = q.grad.clone()
    eager = LearnedLSTMOptim(params_eager, weights=_net())
    compiled_opt = LearnedLSTMOptim(params_compiled, weights=_net())
    compiled_step = torch.compile(compiled_opt.step)
    start = time.perf_counter()
    compiled_step()
    eager.step()
    result["first_call_s"] = time.perf_counter() - start
    compiled_step()
    eager.step()
    graphs_after_2 = counters["stats"]["unique_graphs"]
    seconds = time_rounds({"eager": eager.step, "compiled": compiled_step}, 10)
    result["graphs_after_2_steps"] = graphs_after_2
    result["graph_break_reasons"] = len(counters["graph_break"])
    result["graphs_after_all_steps"] = counters["stats"]["unique_graphs"]
    result["steps"] = 2 + 11
    result["bit_equal"] = all(torch.equal(p, q) for p, q in zip(params_eager, params_compiled))
    result["step_compiled/eager"] = median_ratio(seconds["compiled"], seconds["eager"])

    # The update rule alone, one block of chunk_size rows, compiled vs eager in place.
    net, rows = _net(), config.chunk_size
    weights = fuse_weights(net)
    workspace = StepWorkspace(rows, net.config)
    grad, hidden = make_params(rows, 1, seed=1)[0].grad, torch.randn(rows, 4, 20) * 0.3

    def eager_rule() -> torch.Tensor:
        workspace.grad.copy_(grad)
        workspace.hidden.copy_(hidden)
        return lstm_step_(workspace, rows, weights)

    def rule(g, h, *flat):
        layers = tuple((flat[2 * k], flat[2 * k + 1]) for k in range(len(weights.layers)))
        return update._lstm_math(g, h, update.FusedLSTMWeights(layers, flat[-2], flat[-1],
                                                               weights.config), update._FRESH)
    flat = [t for layer in weights.layers for t in layer] + [weights.head_weight,
                                                             weights.head_bias]
    compiled_rule = torch.compile(rule, dynamic=False)
    start = time.perf_counter()
    with torch.no_grad():
        compiled_update, _ = compiled_rule(grad, hidden, *flat)
    result["rule_compile_s"] = time.perf_counter() - start
    result["rule_max_abs_diff"] = float((compiled_update - eager_rule()).abs().max())

    def compiled_call() -> None:
        with torch.no_grad():
            compiled_rule(grad, hidden, *flat)
    seconds = time_rounds({"eager": eager_rule, "compiled": compiled_call}, 10)
    result["rule_compiled/eager"] = median_ratio(seconds["compiled"], seconds["eager"])
    return result


# -- report -------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f}"


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f}"


_STEP_HEADER = ("| params | tensors | (a) naive ms | (b) step ms | (c) floor ms | (d) Adam ms "
                "| a/b | b/c | b/d | Mparam/s | state GB/s | step peak MB (budget) "
                "| naive peak MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def _format_step_row(row: dict[str, Any]) -> str:
    a = _ms(row.get("a")) if "a" in row else row["naive_note"]
    a_b = f"{row['a/b']:.1f}" if "a/b" in row else "—"
    naive_peak = _mb(row["naive_peak"]) if "naive_peak" in row else "—"
    return (f"| {row['params']:,} | {row['tensors']} | {a} | {_ms(row['b'])} | {_ms(row['c'])} "
            f"| {_ms(row['d'])} | {a_b} | {row['b/c']:.2f} | {row['b/d']:.0f} "
            f"| {row['params'] / row['b'] / 1e6:.2f} "
            f"| {2 * row['state_bytes'] * row['params'] / row['b'] / 1e9:.2f} "
            f"| {_mb(row['peak'])} ({_mb(row['budget'])}) | {naive_peak} |")


def run(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark, print markdown tables as it goes, return every measurement."""
    results: dict[str, Any] = {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {config.device}, {torch.get_num_threads()} "
          f"threads, chunk_size {config.chunk_size}, {config.repeats} rounds, load average "
          f"{load:.1f} on {os.cpu_count()} CPUs" + (" (--quick)" if config.quick else ""),
          flush=True)
    if "step" in config.sections:
        print("\n" + _STEP_HEADER, flush=True)
        results["step"] = bench_steps(config)
    if "block" in config.sections:
        block = results["block"] = bench_block(config)
        print(f"\none block of {config.chunk_size} coordinates (fastest of the rounds): the whole "
              f"rule {block['rule'] * 1e6:.0f} us = {block['rule'] / block['matmuls']:.2f}x its "
              f"two matrix multiplies ({block['matmuls'] * 1e6:.0f} us); its 4 exp calls "
              f"{block['exp'] * 1e6:.0f} us ({block['exp'] / block['matmuls']:.2f}x the "
              f"matmuls); torch.tanh on the same values would take {block['tanh'] * 1e6:.0f} us",
              flush=True)
    if "state" in config.sections:
        state = results["state"] = bench_state(config)
        print(f"\nstate bytes per parameter ({state['params']:,} params): float32 "
              f"{state['float32']:.1f}, bfloat16 {state['bfloat16']:.1f} "
              f"(x{state['bfloat16'] / state['float32']:.2f}), Adam {state['adam']:.1f}; "
              f"default's net: float32 {state['default_float32']:.1f}, bfloat16 "
              f"{state['default_bfloat16']:.1f}; "
              f"step {_ms(state['step_float32'])} ms (float32 state) vs "
              f"{_ms(state['step_bfloat16'])} ms (bfloat16 state), ratio "
              f"{state['bf16/fp32 time']:.2f}", flush=True)
    if "meta" in config.sections:
        meta = results["meta"] = bench_meta(config)
        if "error" in meta:
            print(f"\nmeta-training: skipped ({meta['error']})")
        else:
            naive = (f", naive unroll {meta['naive']:.1f} steps/s, speedup "
                     f"{meta['speedup']:.1f}x" if "naive" in meta else "")
            print(f"\nmeta-training on digits-mlp (horizon {config.meta_horizon}, unroll "
                  f"{config.meta_unroll}): MetaTrainer {meta['ours']:.1f} steps/s{naive}",
                  flush=True)
    if "train" in config.sections:
        train = results["train"] = bench_training(config)
        if "error" in train:
            print(f"\ndigits-CNN training: skipped ({train['error']})")
        else:
            print(f"\ndigits-CNN training, {train['steps']} steps: learned optimizer "
                  f"{train['learned']:.1f} s (final loss {train['learned_final_loss']:.3f}), "
                  f"Adam lr=1e-3 {train['adam']:.1f} s (final loss "
                  f"{train['adam_final_loss']:.3f}), ratio {train['learned/adam']:.2f}",
                  flush=True)
    if config.compile:
        comp = results["compile"] = bench_compile(config)
        print(f"\ntorch.compile(opt.step): first call {comp['first_call_s']:.1f} s, graphs "
              f"after 2 steps {comp['graphs_after_2_steps']}, after {comp['steps']} steps "
              f"{comp['graphs_after_all_steps']} ({comp['graph_break_reasons']} kinds of graph "
              f"break), bit-equal to eager {comp['bit_equal']}, "
              f"step time compiled/eager {comp['step_compiled/eager']:.2f}\n"
              f"update rule compiled by Inductor ({config.chunk_size} rows): compile "
              f"{comp['rule_compile_s']:.1f} s, time compiled/eager "
              f"{comp['rule_compiled/eager']:.2f}, max |difference| "
              f"{comp['rule_max_abs_diff']:.1e}", flush=True)
    return results
