"""The evidence table as markdown, the loss-curve plots, and the files an evaluation writes.

An evaluation folder holds ``table.md`` (what the command prints), ``results.json`` (every
number of the table, the tuning scores and the protocol), ``curves.safetensors`` (every loss of
every test run, ``row/optimizer -> (seeds, steps)``) and ``plots/ROW.png``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save as safetensors_dumps

from ..weights import atomic_write_bytes
from .evaluate import RowResult
from .stats import t_critical

__all__ = ["markdown_tables", "write_report", "plot_row"]


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _with_ci(mean: float, half: float, diverged: int, seeds: int) -> str:
    if diverged:
        return f"diverged ({diverged}/{seeds} seeds)"
    return _number(mean) + ("" if math.isnan(half) else f" ± {_number(half)}")


def _signed(value: float, half: float) -> str:
    if math.isnan(value):
        return "both diverged"
    if math.isinf(value):
        return "other diverged" if value < 0 else "it diverged"
    text = ("+" if value > 0 else "") + _number(value)
    return text + ("" if math.isnan(half) else f" ± {_number(half)}")


def markdown_tables(rows: Sequence[RowResult]) -> str:
    """A summary table (winner; each learned optimizer vs tuned Adam) and a detail table."""
    lines = ["| task | steps | winner (final loss) | learned vs tuned Adam: final-loss "
             "difference, paired 95% CI | paper / expectation |",
             "|---|---|---|---|---|"]
    for result in rows:
        comparisons = "<br>".join(
            f"{label}: **{c['verdict']}** ({_signed(c['difference'], c['ci'])})"
            for label, c in result.against_tuned_adam().items())
        lines.append(f"| {result.row.name} | {result.row.horizon} | {result.winner} | "
                     f"{comparisons} | {result.row.expectation or '—'} |")
    lines += [""] + _tally(rows)
    lines += ["", "| task | optimizer | lr | final loss | mean loss | blow-ups | ms/step |",
              "|---|---|---|---|---|---|---|"]
    for result in rows:
        for entry in result.results:
            summary = entry.summary()
            seeds = len(entry.finals)
            lr = f"{entry.lr:.3g}" + (" (grid edge)" if entry.lr_at_grid_edge else "")
            lines.append(
                f"| {result.row.name} | {entry.label} | {lr} | "
                f"{_with_ci(summary['final_loss'], summary['final_ci'], entry.diverged, seeds)} | "
                f"{_with_ci(summary['mean_loss'], summary['mean_ci'], entry.diverged, seeds)} | "
                f"{entry.blow_ups}/{seeds} | {entry.seconds_per_step * 1e3:.2f} |")
    return "\n".join(lines) + "\n"


def _tally(rows: Sequence[RowResult]) -> list[str]:
    """One line per learned optimizer: wins / ties / losses against tuned Adam."""
    counts: dict[str, dict[str, int]] = {}
    for result in rows:
        for label, comparison in result.against_tuned_adam().items():
            tally = counts.setdefault(label, {})
            tally[comparison["verdict"]] = tally.get(comparison["verdict"], 0) + 1
    return [f"- {label} vs tuned Adam (final loss): wins {t.get('wins', 0)} / "
            f"{sum(t.values())} rows, ties {t.get('tie', 0)}, loses {t.get('loses', 0)}"
            + (f", both diverge {t['both diverge']}" if "both diverge" in t else "")
            for label, t in counts.items()]


def plot_row(result: RowResult, path: Path) -> None:
    """Loss curves (mean over test seeds, log scale) with 95% CI bands, one line per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    window = max(1, result.row.horizon // 50)
    for entry in result.results:
        curves = _moving_average(entry.curves, window)
        steps = torch.arange(curves.shape[1]) + window - 1
        finite = torch.isfinite(curves).all(0)
        mean = curves.mean(0)
        half = (t_critical(curves.shape[0] - 1) * curves.std(0) / math.sqrt(curves.shape[0])
                if curves.shape[0] > 1 else torch.zeros_like(mean))
        # on a log scale mean - CI can be <= 0; the mean is never below the best seed
        low = torch.maximum(mean - half, curves.min(0).values)
        learned = entry.label not in _BASELINE_STYLE
        style = dict(linewidth=2.0 if learned else 1.2, linestyle="-" if learned else "--")
        line, = ax.plot(steps[finite], mean[finite], label=entry.label, **style)
        ax.fill_between(steps[finite], low[finite], (mean + half)[finite],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    smoothing = f", moving average of {window} steps" if window > 1 else ""
    ax.set_ylabel(f"training loss (mean over test seeds, 95% CI{smoothing})", fontsize=8)
    ax.set_title(f"{result.row.name}: {result.row.description}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _moving_average(curves: torch.Tensor, window: int) -> torch.Tensor:
    """Trailing moving average along steps (``window`` 1: unchanged)."""
    if window <= 1:
        return curves
    cumulative = torch.cumsum(torch.nn.functional.pad(curves, (1, 0)), dim=-1)
    return (cumulative[..., window:] - cumulative[..., :-window]) / window


_BASELINE_STYLE = {"SGD (tuned)", "Nesterov (tuned)", "RMSprop (tuned)", "Adam (tuned)",
                   "Adam (lr=1e-3)"}


def write_report(rows: Sequence[RowResult], out: str | os.PathLike, *,
                 metadata: dict[str, Any], plots: bool = True) -> str:
    """Write table.md, results.json, curves.safetensors and (optionally) plots; return the
    markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_tables(rows)
    atomic_write_bytes(out / "table.md", table.encode())
    results = {**metadata, "rows": [r.summary() for r in rows]}
    atomic_write_bytes(out / "results.json", json.dumps(_json_safe(results), indent=1).encode())
    curves = {f"{r.row.name}/{e.label}": e.curves.float().contiguous()
              for r in rows for e in r.results}
    atomic_write_bytes(out / "curves.safetensors", safetensors_dumps(curves))
    if plots:
        for result in rows:
            plot_row(result, out / "plots" / f"{result.row.name}.png")
    return table


def _json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
