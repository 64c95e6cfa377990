r"""Copies of a bundle with the learned departure ramped up over the first N steps (issue 10,
fortieth round; validation suite and stability panel only until a decision is committed).

With ``nominal_step=True`` each step is Adam(lr = ``output_scale``)'s plus a learned
departure, both times the tensor's step scale :math:`e^{\ell_t}`. ``departure_warmup`` = N
multiplies the departure by :math:`\rho_t = \min(1, t/N)` at a coordinate's t-th step
(:func:`learned_optim.update.departure_ramp`):

.. math::
    g_t = e^{\ell_t}\, s\, \big(\rho_t\, d_t\, e^{m_t} - \hat m_t / (\sqrt{\hat v_t} + \epsilon)\big).

The tensors are unchanged; only the config gains the field, so the fingerprint changes with
it. The source's provenance is kept, with a ``departure_warmup`` record of the change.

    python benchmarks/departure_warmup.py --weights default --steps 100 300 --out /tmp/r40
    python -m learned_optim evaluate --suite validation --learned /tmp/r40/warmup-100 \
        --out /tmp/r40/val-warmup-100 --threads 1 --no-progress
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from learned_optim.weights import WeightsBundle, resolve_weights


def with_departure_warmup(bundle: WeightsBundle, steps: int, name: str | None = None,
                          command: str | None = None) -> WeightsBundle:
    """``bundle`` with ``departure_warmup=steps`` in every net's config (same tensors), named
    ``name`` (default: the source's name and ``-warmupN``), the source's provenance kept with
    a ``departure_warmup`` record added."""
    record = {"script": "benchmarks/departure_warmup.py", "steps": steps,
              "source": bundle.name, "source_fingerprint": bundle.fingerprint()}
    if command:
        record["command"] = command
    return bundle.with_net_config(name=name or f"{bundle.name}-warmup{steps}",
                                  provenance={**bundle.provenance, "departure_warmup": record},
                                  departure_warmup=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default", help="bundled name or bundle folder")
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="N, one per copy")
    parser.add_argument("--out", required=True, help="folder for one bundle per N (warmup-N)")
    parser.add_argument("--name", help="the copies' name (one N only; default: SOURCE-warmupN)")
    args = parser.parse_args()
    if args.name and len(args.steps) != 1:
        parser.error("--name needs exactly one --steps value")
    bundle = resolve_weights(args.weights)
    command = "python " + " ".join(sys.argv)
    for steps in args.steps:
        copy = with_departure_warmup(bundle, steps, args.name, command)
        folder = copy.save_pretrained(Path(args.out) / f"warmup-{steps}")
        print(f"departure_warmup {steps}: {folder} (fingerprint {copy.fingerprint()})")


if __name__ == "__main__":
    main()
