r"""Probe: the shipped `default` with a per-tensor step size adapted online by hypergradient
descent, on the validation suite only (issue 10; nothing here is shipped).

For each parameter tensor, the learned step :math:`d_t` (what ``default`` would apply) is
scaled by :math:`e^{\ell_t}`, with the log-scale moved by the multiplicative hypergradient rule
of Baydin et al. 2018 ("Online learning rate adaptation with hypergradient descent"):

.. math::
    \ell_t = \operatorname{clip}\big(\ell_{t-1} - \beta \cos(\nabla_t, d_{t-1}),
    \pm\ln 100\big), \qquad \theta_{t+1} = \theta_t + e^{\ell_t} d_t, \qquad \ell_0 = 0,

so the step grows while successive steps keep going downhill (:math:`\cos < 0`) and shrinks
when they overshoot. ``β = 0`` is ``default`` itself. The LSTM is not retrained: this asks
whether a step size set outside the net would help before building it into the update rule.
Each seed runs alone (the scale is per tensor). Tuned Adam is re-run on the same test seeds
at the lr the validation suite tuned (read from ``docs/evidence/validation/run36``).

    python benchmarks/hypergradient_probe.py 0 0.01 --out /tmp/hd/a.json
    python benchmarks/hypergradient_probe.py 0.003 0.03 --out /tmp/hd/b.json

``--weights DIR`` probes another bundle instead of ``default`` (the seventeenth round's
``nominal_step`` net, for one).

Prints, per validation row, each β's verdict against tuned Adam and its mean final loss over
tuned Adam's, then per β the clipped geometric mean and wins / ties / losses (the figures of
``summarize_validation.py``).
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from learned_optim.evaluation import select_rows
from learned_optim.evaluation.runner import OptimizerSpec, final_loss, mean_loss, run_losses
from learned_optim.evaluation.suites import protocol_for
from summarize_validation import against_tuned_adam, clipped_geometric_mean, tuned_adam_lrs

TUNED = Path(__file__).resolve().parents[1] / "docs/evidence/validation/run36/results.json"


class HyperScaled(torch.optim.Optimizer):
    """``inner``'s steps, each tensor's scaled by its hypergradient-adapted factor."""

    def __init__(self, inner, beta, bound=math.log(100.0)):
        self.inner, self.beta, self.bound = inner, beta, bound
        super().__init__([p for g in inner.param_groups for p in g["params"]], {})

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        old = {}
        for p in params:
            st = self.state[p]
            if "prev" in st and self.beta:
                g, d = p.grad.reshape(-1), st["prev"].reshape(-1)
                cos = torch.dot(g, d) / (g.norm() * d.norm() + 1e-30)
                st["log_scale"] = float(min(max(st["log_scale"] - self.beta * float(cos),
                                                -self.bound), self.bound))
            st.setdefault("log_scale", 0.0)
            old[p] = p.detach().clone()
        self.inner.step()
        for p in params:
            st = self.state[p]
            d = p - old[p]
            st["prev"] = d
            p.copy_(old[p] + math.exp(st["log_scale"]) * d)

    def zero_grad(self, set_to_none=True):
        self.inner.zero_grad(set_to_none=set_to_none)


class HDSpec(OptimizerSpec):
    beta = 0.0

    @property
    def coordinatewise(self):
        return False

    def build(self, copies, lrs, routes, total_steps=None):
        return HyperScaled(OptimizerSpec.build(self, copies, lrs, routes, total_steps), self.beta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("betas", type=float, nargs="+", help="hypergradient rates (0: default)")
    parser.add_argument("--out", required=True, help="JSON file for every seed's losses")
    parser.add_argument("--weights", default="default", help="bundled name or bundle folder")
    args = parser.parse_args()
    out, betas = args.out, args.betas
    torch.set_num_threads(1)
    protocol = protocol_for("validation", False)
    adam_lrs = tuned_adam_lrs(TUNED)
    results = {}
    for row in select_rows("validation"):
        fam = row.family()
        t0 = time.time()
        adam = run_losses(fam, protocol.test_seeds, row.horizon, OptimizerSpec("adam", "adam"),
                          (adam_lrs[row.name],))[0]
        res = {"adam_final": final_loss(adam).tolist(), "adam_mean": mean_loss(adam).tolist()}
        for beta in betas:
            spec = HDSpec(f"hd{beta}", "learned", args.weights)
            spec.beta = beta
            c = run_losses(fam, protocol.test_seeds, row.horizon, spec, (1.0,))[0]
            res[str(beta)] = dict(against_tuned_adam(final_loss(c).tolist(), res["adam_final"]),
                                  mean=mean_loss(c).tolist())
        results[row.name] = res
        print(row.name, round(time.time() - t0),
              {b: (res[str(b)]["verdict"], round(res[str(b)]["ratio"], 3)) for b in betas},
              flush=True)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        json.dump(results, open(out, "w"), indent=1)
    for beta in betas:
        clipped = clipped_geometric_mean([results[r][str(beta)]["ratio"] for r in results])
        v = [results[r][str(beta)]["verdict"] for r in results]
        print("beta", beta, "clipped", round(clipped, 3), "W/T/L", v.count("wins"), v.count("tie"),
              v.count("loses"))


if __name__ == "__main__":
    main()
