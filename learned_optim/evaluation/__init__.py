"""The evidence: each bundled optimizer against tuned SGD, Nesterov, RMSprop and Adam.

``python -m learned_optim evaluate --suite paper|transfer [--quick] [--out DIR]`` runs
:func:`evaluate_suite`: tunes every baseline's learning rate per row, runs all optimizers on
separate test seeds, prints a markdown table and writes it with plots and raw curves.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Sequence

import torch

from .. import __version__
from .baselines import BASELINES, LR_GRID, QUICK_LR_GRID
from .evaluate import OptimizerResult, RowResult, evaluate_row
from .report import markdown_tables, write_report
from .runner import OptimizerSpec, run_losses
from .suites import PROTOCOLS, QUICK_ROWS, SUITES, Protocol, Row, learned, protocol_for

__all__ = ["evaluate_suite", "evaluate_row", "select_rows", "markdown_tables", "write_report",
           "run_losses", "OptimizerSpec", "OptimizerResult", "RowResult", "Row", "Protocol",
           "SUITES", "PROTOCOLS", "BASELINES", "LR_GRID", "QUICK_LR_GRID"]


def select_rows(suite: str, *, quick: bool = False, names: Sequence[str] | None = None,
                learned_weights: Sequence[str] | None = None) -> list[Row]:
    """The rows of ``suite`` (all, the ``--quick`` subset, or those named); with
    ``learned_weights`` (bundled names or bundle folders) those learned optimizers replace
    each row's own, e.g. to compare design variants on the validation suite."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {sorted(SUITES)}")
    rows = list(SUITES[suite])
    if learned_weights:
        specs = tuple(learned(w) for w in learned_weights)
        labels = [spec.label for spec in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"learned optimizers {list(learned_weights)} give the labels "
                             f"{labels}; give each a distinct name or folder name")
        rows = [dataclasses.replace(row, learned=specs) for row in rows]
    wanted = list(names) if names else (list(QUICK_ROWS[suite]) if quick else None)
    if wanted is None:
        return rows
    known = {row.name: row for row in rows}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"suite {suite!r} has no rows {unknown}; its rows: {sorted(known)}")
    return [known[name] for name in wanted]


def evaluate_suite(suite: str, out: str | os.PathLike, *, quick: bool = False,
                   rows: Sequence[str] | None = None, progress: bool = True,
                   plots: bool = True, command: str | None = None,
                   learned_weights: Sequence[str] | None = None) -> str:
    """Evaluate a suite, write its report into ``out``, return the markdown table
    (``learned_weights``: see :func:`select_rows`)."""
    from tqdm.auto import tqdm

    selected = select_rows(suite, quick=quick, names=rows, learned_weights=learned_weights)
    protocol = protocol_for(suite, quick)
    total = sum(len(protocol.baselines) * 2 + 1 + len(row.learned) for row in selected)
    bar = tqdm(total=total, disable=not progress, desc=f"evaluate {suite}", unit="run")
    started = time.perf_counter()
    results = []
    try:
        for row in selected:
            bar.set_postfix(row=row.name)
            results.append(evaluate_row(row, protocol, on_progress=lambda label: bar.update(1)))
    finally:
        bar.close()
    metadata = {
        "suite": suite, "quick": quick, "command": command,
        "protocol": {"lr_grid": list(protocol.lr_grid),
                     "tuning_seeds": list(protocol.tuning_seeds),
                     "test_seeds": list(protocol.test_seeds),
                     "timing_steps": protocol.timing_steps,
                     "baselines": list(protocol.baselines)},
        "wall_time_s": round(time.perf_counter() - started, 1),
        "learned_optim_version": __version__, "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    return write_report(results, Path(out), metadata=metadata, plots=plots)
