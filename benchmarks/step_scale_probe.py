r"""Probe: a bundle's weights under other per-tensor step-scale rules, on a stability panel of
ill-conditioned test functions (issue 10; nothing here is shipped).

The eighteenth round's `default` (fingerprint c2e33cb39986c3ce, in git at 563ff62) scales each tensor's step by :math:`e^{\ell}`,
:math:`\ell \leftarrow \operatorname{clip}(\ell - \beta k^{[c > 0]} c, \pm B)` with
:math:`c = \cos(\nabla_t, g_{t-1})`, :math:`\beta = 0.03`, :math:`B = \ln 100`, :math:`k = 1`
(:func:`learned_optim.update.tensor_step_scale`). Held out, one of five Rosenbrock seeds blew
up: the scale grew along the valley and overshot. This runs the *same weights* with other
bounds :math:`B` (``step_scale_bound``) and shrink factors :math:`k`
(``hypergradient_shrink``), so every comparison is paired (no meta-training seed in it), on
functions that are **not** in the held-out suite (Rosenbrock stays held out):

* Beale's function, from starts around (-2, 2) (curved narrow valleys; minimum 0 at (3, 0.5));
* Dixon-Price in 10 dimensions, from starts around 0 (a curved valley; minimum 0);
* a rotated 2-d quadratic of condition number 10^4 (a straight narrow valley);
* the six-hump camel function plus 1.0316 from starts around 0 (non-convex; minimum 0);
* a sine valley, :math:`(1 - x)^2 + w (y - \sin 2x)^2` with :math:`w = 100` and with
  :math:`w = 1000`, from starts around (-2, 0) (a narrow curved valley with steep walls;
  minimum 0 at (1, sin 2));
* a cubic valley, :math:`(1 - x)^2 + 100 (y - x^3)^2`, from starts around (-1, -1) (minimum 0
  at (1, 1)).

With :math:`B = \ln 100, k = 1` (the eighteenth round's `default`) the loss of the steep sine valley
rose above 10x its start on 7 of 10 seeds and that of the cubic valley on 2 of 10.

A seed *blows up* when its loss ever exceeds 10x its starting loss or goes non-finite, as in
the evaluation's "blow-ups" column. Each seed keeps its own scale (it is per tensor): the
seeds of a function run as separate tensors of one optimizer, the same losses as runs one at a
time (since commit aed942a; 70 runs in about 5 minutes on one core instead of 13).

    python benchmarks/step_scale_probe.py --settings 4.605170185988092:1 3.4011973816621555:1 \
        --out /tmp/ssp/probe.json

(ln 100 = 4.605170185988092, ln 30 = 3.4011973816621555, ln 10 = 2.302585092994046.)
``--weights`` picks the bundle (a bundled name or a folder; default: the bundled `default`,
since the nineteenth round not the weights the probe was first run on), run with its own
rule when ``--settings`` is ``own``; ``--functions`` picks panel members.

Prints per function and setting the blow-ups, the median final loss (mean of the last 10%)
and the largest peak / start ratio; ``B:k`` settings are given as numbers.
"""
import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from learned_optim.evaluation.evaluate import blown_up, peak_over_start
from learned_optim.evaluation.runner import OptimizerSpec, final_loss, run_losses_as_tensors
from learned_optim.tasks.base import Task, TaskFamily
from learned_optim.tasks.heldout import _Point  # a point in R^n as a module (no data)
from learned_optim.weights import WeightsBundle, resolve_weights

SEEDS = tuple(range(5000, 5010))


def _beale(x, _t=None):
    a, b = x[0], x[1]
    return ((1.5 - a + a * b).square() + (2.25 - a + a * b.square()).square()
            + (2.625 - a + a * b.pow(3)).square())


def _dixon_price(x, _t=None):
    i = torch.arange(2, x.numel() + 1, dtype=x.dtype)
    return (x[0] - 1).square() + (i * (2 * x[1:].square() - x[:-1]).square()).sum()


_ROTATION = torch.tensor([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
_CURVATURE = torch.tensor([1.0, 1e-4])


def _valley(x, _t=None):
    z = _ROTATION @ x
    return (_CURVATURE * z.square()).sum()


def _camel(x, _t=None):
    a, b = x[0], x[1]
    return ((4 - 2.1 * a.square() + a.pow(4) / 3) * a.square() + a * b
            + (-4 + 4 * b.square()) * b.square() + 1.0316284534898774)


def _sine_valley(x, _t=None, wall=100.0):
    return (1 - x[0]).square() + wall * (x[1] - torch.sin(2 * x[0])).square()


def _steep_sine_valley(x, _t=None):
    return _sine_valley(x, wall=1000.0)


def _cubic_valley(x, _t=None):
    return (1 - x[0]).square() + 100 * (x[1] - x[0].pow(3)).square()


class _FunctionFamily(TaskFamily):
    batched_seeds = False

    def __init__(self, name, loss, centre, spread, horizon):
        self.name, self.loss, self.horizon = name, loss, horizon
        self.centre, self.spread = torch.tensor(centre), spread

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)
        start = self.centre + self.spread * torch.randn(self.centre.shape, generator=g)
        return Task(model=_Point(start), sample_batch=lambda step: (None, None),
                    loss_fn=self.loss)


PANEL = (_FunctionFamily("beale", _beale, [-2.0, 2.0], 0.5, 10_000),
         _FunctionFamily("dixon-price-10", _dixon_price, [0.0] * 10, 0.5, 10_000),
         _FunctionFamily("valley-1e4", _valley, [1.0, 30.0], 5.0, 10_000),
         _FunctionFamily("six-hump-camel", _camel, [0.0, 0.0], 1.0, 3_000),
         _FunctionFamily("sine-valley", _sine_valley, [-2.0, 0.0], 0.5, 10_000),
         _FunctionFamily("sine-valley-1000", _steep_sine_valley, [-2.0, 0.0], 0.5, 10_000),
         _FunctionFamily("cubic-valley", _cubic_valley, [-1.0, -1.0], 0.5, 10_000))


def with_step_scale_rule(bundle: WeightsBundle, bound: float, shrink: float) -> WeightsBundle:
    """``bundle``'s weights φ with each net's step scale bounded by ``bound`` and shrinking
    ``shrink`` times faster than it grows."""
    return bundle.with_net_config(name=f"{bundle.name}-B{bound:g}-k{shrink:g}", provenance={},
                                  step_scale_bound=bound, hypergradient_shrink=shrink)


def panel_runs(family: _FunctionFamily, spec: OptimizerSpec, seeds=SEEDS) -> dict:
    """``spec`` on ``family`` from each of ``seeds``: every seed's final loss and peak / start,
    and how many seeds blew up. The seeds run as separate tensors of one optimizer
    (:func:`~learned_optim.evaluation.runner.run_losses_as_tensors`: each its own step scale,
    the same losses as runs one at a time, about 4x faster)."""
    curves = run_losses_as_tensors(family, seeds, family.horizon, spec)[0]
    return {"final": final_loss(curves).tolist(),
            "peak_over_start": peak_over_start(curves),
            "blow_ups": int(blown_up(curves).sum())}


def summary(entry: dict) -> str:
    """The line printed for one :func:`panel_runs` entry."""
    finals = torch.tensor(entry["final"], dtype=torch.float64)
    return (f"blow-ups {entry['blow_ups']}/{len(entry['final'])}  median final "
            f"{finals.median():.3g}  worst peak/start {max(entry['peak_over_start']):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default", help="bundled name or bundle folder")
    parser.add_argument("--settings", nargs="+", default=["4.605170185988092:1"],
                        help="B:k pairs (step_scale_bound:hypergradient_shrink)")
    parser.add_argument("--functions", nargs="+", default=[f.name for f in PANEL],
                        choices=[f.name for f in PANEL])
    parser.add_argument("--seeds", type=int, default=len(SEEDS),
                        help=f"the first N of the seeds {SEEDS[0]}-{SEEDS[-1]}")
    parser.add_argument("--out", required=True, help="JSON file for every seed's figures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = resolve_weights(args.weights)
    results, folder = {}, Path(tempfile.mkdtemp(prefix="step-scale-probe-"))
    for setting in args.settings:
        if setting == "own":
            spec = OptimizerSpec(setting, "learned", args.weights)
        else:
            bound, shrink = (float(v) for v in setting.split(":"))
            path = with_step_scale_rule(base, bound, shrink).save_pretrained(folder / setting)
            spec = OptimizerSpec(setting, "learned", str(path))
        for family in (f for f in PANEL if f.name in args.functions):
            started = time.time()
            entry = panel_runs(family, spec, SEEDS[:args.seeds])
            results.setdefault(family.name, {})[setting] = entry
            print(f"{family.name:16s} B:k={setting:22s} {summary(entry)}  "
                  f"({time.time() - started:.0f} s)", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
