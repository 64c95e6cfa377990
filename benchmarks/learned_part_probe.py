r"""Probe: does `default`'s learned departure from Adam lose the rows it loses? (issue 10,
thirty-sixth round; validation suite only, nothing shipped)

With ``nominal_step=True`` every step of `default` is Adam(lr = 0.01)'s plus a learned
departure, both multiplied by the tensor's step scale :math:`e^{\ell_t}`:

.. math::
    g_t = e^{\ell_t}\, s\, \big(\alpha\, d_t\, e^{m_t} - \hat m_t / (\sqrt{\hat v_t} + \epsilon)\big),

with :math:`s` = ``output_scale`` = 0.01, :math:`(d_t, m_t)` the head's outputs and
:math:`\alpha = 1` as trained. This writes copies of a bundle with the departure multiplied
by :math:`\alpha` (the head's direction row, weight and bias, times :math:`\alpha`; the LSTM
is untouched), so that ``python -m learned_optim evaluate --suite validation --learned
DIR`` can score each against tuned Adam. :math:`\alpha = 0` is Adam(lr = 0.01) with the
per-tensor hypergradient step scale alone (Baydin et al. 2018's Adam-HD with a cosine
rule), which the net's state still drives through the step it records; :math:`\alpha` between
0 and 1 shrinks the departure. If :math:`\alpha = 0` ties the RNN and autoencoder rows that
:math:`\alpha = 1` loses, the departure is what loses them, and a rule that falls back to
the nominal step there would be the next thing to train.

    python benchmarks/learned_part_probe.py --weights default --alphas 0 0.3 --out /tmp/lp
    python -m learned_optim evaluate --suite validation --learned /tmp/lp/alpha-0 \
        --out /tmp/lp/val-alpha-0 --threads 1 --no-progress
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from learned_optim.weights import WeightsBundle, resolve_weights


def with_departure_scaled(bundle: WeightsBundle, alpha: float) -> WeightsBundle:
    """``bundle`` with each net's learned departure :math:`d\\,e^{m}` multiplied by ``alpha``
    (row 0 of the direction-magnitude head, the direction, scaled; the magnitude row and the
    LSTM unchanged). Only for nets with ``update="direction_magnitude"`` and
    ``nominal_step=True``, where the rest of the step is Adam's."""
    nets = {}
    for route, net in bundle.nets.items():
        config = net.config
        if config.update != "direction_magnitude" or not config.nominal_step:
            raise ValueError(f"route {route!r}: the departure can be scaled only for nets with "
                             "update='direction_magnitude' and nominal_step=True; got "
                             f"update={config.update!r}, nominal_step={config.nominal_step}")
        clone = copy.deepcopy(net)
        with torch.no_grad():
            clone.head.weight[0].mul_(alpha)
            clone.head.bias[0].mul_(alpha)
        nets[route] = clone
    provenance = {"probe": "benchmarks/learned_part_probe.py", "source": bundle.name,
                  "source_fingerprint": bundle.fingerprint(), "departure_multiplier": alpha}
    return WeightsBundle(nets, name=f"{bundle.name}-departure-x{alpha:g}",
                         provenance=provenance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default", help="bundled name or bundle folder")
    parser.add_argument("--alphas", type=float, nargs="+", required=True)
    parser.add_argument("--out", required=True, help="folder for one bundle per alpha")
    args = parser.parse_args()
    bundle = resolve_weights(args.weights)
    for alpha in args.alphas:
        folder = with_departure_scaled(bundle, alpha).save_pretrained(
            Path(args.out) / f"alpha-{alpha:g}")
        print(f"alpha {alpha:g}: {folder}")


if __name__ == "__main__":
    main()
