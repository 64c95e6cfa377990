"""Design variants for the ``default`` optimizer (issue 10), each meta-trained the same way.

Every variant is the same coordinatewise 2-layer LSTM (20 units) and the same update rule;
they differ only in config options (:class:`learned_optim.LSTMOptimizerConfig`) and in the
meta-training distribution. Train one or more, then compare them on the *validation* suite
(never on the held-out suite, which stays held out for the final table):

    python benchmarks/default_variants.py --variants adaptive,adaptive-wide --out runs/variants
    python -m learned_optim evaluate --suite validation \\
        --learned default,runs/variants/adaptive,runs/variants/adaptive-wide \\
        --out runs/evaluate-validation-variants

Each bundle records its variant, config and wall time in its provenance.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from learned_optim import LSTMOptimizerNet, WeightsBundle
from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.meta.trainer import CHECKPOINT_FILE
# ADAPTIVE_NET: the base net of issue 10's recipes
from learned_optim.meta.presets import ADAPTIVE_NET, keep_every_epoch
from learned_optim.tasks import get_task_family
from learned_optim.weights import resolve_weights

_PAPER_NET = dict(hidden_size=20, num_layers=2, preprocessing="log_sign", p=10.0,
                  output_scale=0.1)
# the old default's budget: 12 epochs x 16 tasks x 200 steps (about 8 minutes on one core)
_BUDGET = dict(epochs=12, tasks_per_epoch=16, validation_tasks=4, meta_lr=3e-3, horizon=200)

#: name -> (training family, validation family, MetaTrainConfig fields)
# The fifth round's averaged recipe (`default` until the eighteenth round), which later rounds
# build on.
_AVERAGED = dict(_BUDGET, net=ADAPTIVE_NET, weight_average_decay=0.998, meta_objective="log_loss",
                 horizon=800)

# The nineteenth round's net (`default`'s since): a fixed Adam step plus the learned one, each
# tensor's step scale adapted by hypergradient descent within [1/30, 30]. Spelled out here, not
# taken from presets.DEFAULT_NET, so these recipes stay what they were if `default` changes.
_BOUNDED_NET = dict(ADAPTIVE_NET, nominal_step=True, hypergradient_rate=0.03,
                    step_scale_bound=math.log(30.0))

# The rule `default` runs with since the fortieth round (its learned departure ramped in over
# 300 steps), with the step scale's bound back at ln 100 (forty-second and third rounds).
_RAMPED_WIDER_BOUND = dict(departure_warmup=300, step_scale_bound=math.log(100.0))
# `default`'s net trained under that rule with its own bound, ln 30 (forty-fifth and seventh)
_RAMPED_NET = dict(_BOUNDED_NET, departure_warmup=300)

VARIANTS = {
    # the paper's inputs and head, old mixture: what `default` was before issue 10
    "paper-net": ("mixture", "digits-mlp-relu", dict(_BUDGET, net=_PAPER_NET)),
    # scale-free momentum features + direction x exp(magnitude), started at Adam(lr=0.01)
    "adaptive": ("mixture", "digits-mlp-relu", dict(_BUDGET, net=ADAPTIVE_NET)),
    # no meta-training at all: the Adam start of the adaptive net (Adam(lr=0.01) plus the
    # small random head weights on h), to show what meta-training adds
    "adaptive-untrained": ("mixture", "digits-mlp-relu", dict(_BUDGET, net=ADAPTIVE_NET)),
    # adaptive features with the paper's additive head (no Adam start)
    "adaptive-additive": ("mixture", "digits-mlp-relu",
                          dict(_BUDGET, net=dict(_PAPER_NET, features="adaptive",
                                                 output_scale=0.01))),
    # the adaptive net on the wide mixture (ReLU MLPs, random-scale synthetic regressions)
    "adaptive-wide": ("mixture-wide", "digits-mlp-relu", dict(_BUDGET, net=ADAPTIVE_NET)),
    # the wide mixture with a log-loss meta-objective (late, small losses count as much as
    # early, large ones)
    "adaptive-wide-log": ("mixture-wide", "digits-mlp-relu",
                          dict(_BUDGET, net=ADAPTIVE_NET, meta_objective="log_loss")),
    # the same with 400-step runs: the best on --suite validation, so the `default` preset
    # (same config, same seed: the same weights)
    "adaptive-wide-log-long": ("mixture-wide", "digits-mlp-relu",
                               dict(_BUDGET, net=ADAPTIVE_NET, meta_objective="log_loss",
                                    horizon=400)),
    # the same with 400-step runs (20 truncations of 20 steps each)
    "adaptive-wide-long": ("mixture-wide", "digits-mlp-relu",
                           dict(_BUDGET, net=ADAPTIVE_NET, horizon=400)),
    # issue 10, second round: 800-step runs (40 truncations of 20 steps each), since longer
    # runs were the largest gain of the first round
    "adaptive-wide-log-800": ("mixture-wide", "digits-mlp-relu",
                              dict(_BUDGET, net=ADAPTIVE_NET, meta_objective="log_loss",
                                   horizon=800)),
    # the same with 40-step truncations: each meta-gradient sees twice as far ahead, against
    # the short-horizon bias of truncated BPTT (Wu et al. 2018: greedy, fast-early optimizers)
    "adaptive-wide-log-800-u40": ("mixture-wide", "digits-mlp-relu",
                                  dict(_BUDGET, net=ADAPTIVE_NET, meta_objective="log_loss",
                                       horizon=800, unroll=40)),
    # 800-step runs with the checkpoint chosen on 1,000-step tanh digits MLPs: the 100-step
    # ReLU validation picked epoch 1 of adaptive-wide-log-800 while its meta-loss kept falling
    "adaptive-wide-log-800-val1000": ("mixture-wide", "digits-mlp-tanh-1000",
                                      dict(_BUDGET, net=ADAPTIVE_NET, meta_objective="log_loss",
                                           horizon=800)),
    # issue 10, third round: `default` with the meta-loss weighted toward the end of each run
    # (w_t = t / 800), since it is fast early but ends above tuned Adam on the held-out rows
    "adaptive-wide-log-800-val1000-linear": ("mixture-wide", "digits-mlp-tanh-1000",
                                             dict(_BUDGET, net=ADAPTIVE_NET,
                                                  meta_objective="log_loss", horizon=800,
                                                  loss_weights="linear")),
    # fourth round: the `default` recipe with a steadier meta-training (its validation loss
    # jumps 100x between epochs): a smaller meta-lr, or meta-updates averaging 2 tasks. The
    # runs in the README were made with the preset command on a branch whose `default` had
    # this change; this is the same config and seed.
    "adaptive-wide-log-800-val1000-lr1e-3": ("mixture-wide", "digits-mlp-tanh-1000",
                                             dict(_BUDGET, net=ADAPTIVE_NET, meta_lr=1e-3,
                                                  meta_objective="log_loss", horizon=800)),
    "adaptive-wide-log-800-val1000-mb2": ("mixture-wide", "digits-mlp-tanh-1000",
                                          dict(_BUDGET, net=ADAPTIVE_NET, meta_batch_size=2,
                                               meta_objective="log_loss", horizon=800)),
    # fifth round: the fourth round's meta-lr 1e-3 run kept its last epoch (12), so the same
    # for 20 epochs; and Polyak averaging of φ (β = 0.998: about 500 meta-updates, 0.8 of an
    # epoch), validated and kept averaged, against the epoch-to-epoch jumps. Made with the
    # preset command on branches whose `default` had the change; same configs and seed.
    "adaptive-wide-log-800-val1000-lr1e-3-e20": ("mixture-wide", "digits-mlp-tanh-1000",
                                                 dict(_BUDGET, net=ADAPTIVE_NET, meta_lr=1e-3,
                                                      epochs=20, meta_objective="log_loss",
                                                      horizon=800)),
    "adaptive-wide-log-800-val1000-avg": ("mixture-wide", "digits-mlp-tanh-1000", _AVERAGED),
    # seventh round: the averaged recipe with each run's horizon drawn log-uniformly from
    # [200, 2000] (same mean cost as 800 fixed steps: 782), so it sees runs 2.5x longer than
    # before and cannot time its annealing to one fixed horizon.
    "adaptive-wide-log-800-val1000-avg-h200-2000": ("mixture-wide", "digits-mlp-tanh-1000",
                                                    dict(_AVERAGED, horizon=2000,
                                                         horizon_min=200)),
    # eighth-round candidate: the averaged recipe (fixed 800 steps) whose net also reads the
    # parameter value (LSTMOptimizerConfig.parameter_feature)
    "adaptive-wide-log-800-val1000-avg-param": ("mixture-wide", "digits-mlp-tanh-1000",
                                                dict(_AVERAGED, net=dict(ADAPTIVE_NET,
                                                                         parameter_feature=True))),
    # ninth round: the averaged recipe on a wider mixture (+ tanh RNNs on synthetic sequences,
    # autoencoders on sample-image patches, regressions with label noise up to the signal)
    "adaptive-wider-log-800-val1000-avg": ("mixture-wider", "digits-mlp-tanh-1000", _AVERAGED),
    # tenth round: the averaged recipe whose net also reads each tensor's gradient
    # signal-to-noise ratio (LSTMOptimizerConfig.tensor_feature)
    "adaptive-wide-log-800-val1000-avg-tensor": ("mixture-wide", "digits-mlp-tanh-1000",
                                                 dict(_AVERAGED, net=dict(ADAPTIVE_NET,
                                                                          tensor_feature=True))),
    # eleventh round: the averaged recipe, trained identically, whose kept epoch is chosen on
    # a panel of four 1,000-step families (two tasks each) by the mean log final loss
    "adaptive-wide-log-800-avg-panel": ("mixture-wide", "selection-panel-1000",
                                        dict(_AVERAGED, validation_tasks=8,
                                             validation_score="log_final_loss")),
    # twelfth round: the averaged recipe whose net also reads the fraction of the run done
    # (LSTMOptimizerConfig.progress_feature), on log-uniform horizons of 400-1,400 steps (mean
    # 798, the cost of 800) so that t / T is not a clock of one fixed length
    "adaptive-wide-log-h400-1400-avg-progress": ("mixture-wide", "digits-mlp-tanh-1000",
                                                 dict(_AVERAGED, horizon=1400, horizon_min=400,
                                                      net=dict(ADAPTIVE_NET,
                                                               progress_feature=True))),
    # thirteenth round: the averaged recipe on the wide mixture in rescaled coordinates
    # (ReparamFamily: each task as it is, or its parameters rescaled globally or per tensor by
    # a log-uniform factor in [0.1, 10]), so the step a task wants is not one size
    "adaptive-wide-reparam-log-800-avg": ("mixture-wide-reparam", "digits-mlp-tanh-1000",
                                          _AVERAGED),
    # fourteenth round: the same over scales in [1/3, 3] (the thirteenth round's [0.1, 10] lost
    # precision on unscaled problems)
    "adaptive-wide-reparam3-log-800-avg": ("mixture-wide-reparam3", "digits-mlp-tanh-1000",
                                           _AVERAGED),
    # fifteenth round: the fourteenth's recipe whose net also reads each tensor's relative
    # gradient change over the last step (tensor_statistic="gradient_change"): a signal of
    # whether the step is small for the curvature, on tasks that want different steps
    "adaptive-wide-reparam3-log-800-avg-change": (
        "mixture-wide-reparam3", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=dict(ADAPTIVE_NET, tensor_feature=True,
                                 tensor_statistic="gradient_change"))),
    # seventeenth round: the averaged recipe whose step is a fixed Adam(lr=0.01) step plus the
    # learned one (nominal_step; Harrison et al. 2022): validation rows default loses are not
    # lost on the step size (step_multiplier_probe.py), and on two of them tuned Adam's lr is
    # the net's Adam start
    "adaptive-wide-log-800-val1000-avg-nominal": ("mixture-wide", "digits-mlp-tanh-1000",
                                                  dict(_AVERAGED, net=dict(ADAPTIVE_NET,
                                                                           nominal_step=True))),
    # eighteenth round: that net with each tensor's step scaled by a factor adapted online by
    # hypergradient descent (hypergradient_rate; Baydin et al. 2018): the probe that scaled the
    # seventeenth round's nets so, untrained, scored best on validation (hypergradient_probe.py)
    # Passed its rule; seed 0 is the shipped `default` (the `default` preset has this config)
    "adaptive-wide-log-800-val1000-avg-nominal-hyper": (
        "mixture-wide", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=dict(ADAPTIVE_NET, nominal_step=True, hypergradient_rate=0.03))),
    # nineteenth round: that recipe with the per-tensor step scale bounded to [1/30, 30]
    # instead of [1/100, 100] (step_scale_bound): on the shipped weights the bound removed the
    # loss blow-ups of two steep curved valleys at a small cost on validation
    # (step_scale_probe.py)
    "adaptive-wide-log-800-val1000-avg-nominal-hyper-b30": (
        "mixture-wide", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=_BOUNDED_NET)),
    # twentieth round: that recipe on the wider mixture (+ tanh RNNs, patch autoencoders, noisy
    # regressions: the kinds of problem `default` still loses, held out and on validation),
    # for 16 epochs instead of 12 so that each of its 25 members is seen about as often as
    # the wide mixture's 17 are in 12 (the ninth round tried the mixture at 12 epochs with
    # the fifth round's net, which had neither the fixed Adam step nor the step scale)
    "adaptive-wider-log-800-val1000-avg-nominal-hyper-b30-e16": (
        "mixture-wider", "digits-mlp-tanh-1000",
        dict(_AVERAGED, epochs=16, net=_BOUNDED_NET)),
    # twenty-second round: the nineteenth round's recipe (`default`'s) with generated curved
    # valleys as 2 of the mixture's 19 members: 2 of its 4 seeds blow up on the stability
    # panel's curved valleys (step_scale_probe.py), a kind of problem it never trains on
    "adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30": (
        "mixture-wide-valleys", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=_BOUNDED_NET)),
    # twenty-sixth round: the curved-valley recipe with the stability term in the meta-loss
    # (stability_penalty = 1, stability_tolerance = 10: each step whose loss is more than 10x
    # the run's best so far adds the log of how far beyond): its early epochs, the fast ones,
    # climb far out of the valleys they had got into and blew up on the stability panel
    "adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30-stab": (
        "mixture-wide-valleys", "digits-mlp-tanh-1000",
        dict(_AVERAGED, stability_penalty=1.0, stability_tolerance=10.0, net=_BOUNDED_NET)),
    # twenty-eighth round: the curved-valley recipe with 100-step truncations instead of 20, so
    # that a meta-gradient spans 100 steps of the step scale's growth (on the stability panel
    # the climbs start after 200-700 steps); Polyak decay 0.99 instead of 0.998 keeps the
    # average's window at 10,000 optimizee steps with 5x fewer meta-updates
    "adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30-u100": (
        "mixture-wide-valleys", "digits-mlp-tanh-1000",
        dict(_AVERAGED, unroll=100, weight_average_decay=0.99, net=_BOUNDED_NET)),
    # thirtieth round: the twentieth round's recipe (the wider mixture, which tied the RNN
    # rows but blew up on the stability panel's Beale and cubic valleys) with 3 curved-valley
    # members as in the twenty-second round's mixture (which removed the blow-ups for 2 of 4
    # seeds); 18 epochs so that each of its 28 members is seen as often as the wider
    # mixture's 25 in 16
    "adaptive-wider-valleys-log-800-val1000-avg-nominal-hyper-b30-e18": (
        "mixture-wider-valleys", "digits-mlp-tanh-1000",
        dict(_AVERAGED, epochs=18, net=_BOUNDED_NET)),
    # thirty-fifth round: the curved-valley recipe with half of its valley runs started on the
    # valley floor, where the panel screen finds the valley recipes' epochs climbing the wall
    # (its epoch chosen with stable_epoch.py --screen panel)
    "adaptive-wide-valleys-floor-log-800-val1000-avg-nominal-hyper-b30": (
        "mixture-wide-valleys-floor", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=_BOUNDED_NET)),
    # the `default` recipe (400-step runs) with the same 1,000-step checkpoint selection
    "adaptive-wide-log-long-val1000": ("mixture-wide", "digits-mlp-tanh-1000",
                                       dict(_BUDGET, net=ADAPTIVE_NET, meta_objective="log_loss",
                                            horizon=400)),
    # thirty-sixth round: `default` itself (the nineteenth round's seed 0) fine-tuned for 4
    # epochs on the wider mixture (+ tanh RNNs, patch autoencoders, noisy regressions), its
    # recipe otherwise: the learned departure from Adam is what loses the validation RNN row
    # (benchmarks/learned_part_probe.py), and from a fresh start the wider mixture taught
    # RNNs but gave unstable seeds (twentieth round); started from a stable net it may not
    "finetune-default-wider-e4": ("mixture-wider", "digits-mlp-tanh-1000",
                                  dict(_AVERAGED, epochs=4, net=_BOUNDED_NET)),
    # thirty-eighth round, the control: the same 4 epochs on `default`'s own wide mixture, to
    # tell what the wider mixture did from what 4 more epochs from `default` do
    "finetune-default-wide-e4": ("mixture-wide", "digits-mlp-tanh-1000",
                                 dict(_AVERAGED, epochs=4, net=_BOUNDED_NET)),
    # forty-third round: the same, trained under the rule `default` now runs with (its
    # learned departure ramped in over 300 steps) and the step scale's old bound, ln 100,
    # which the warmup made stable on the panel (forty-second round)
    "finetune-default-ramped-b100-wide-e4": (
        "mixture-wide", "digits-mlp-tanh-1000",
        dict(_AVERAGED, epochs=4, net=dict(_BOUNDED_NET, **_RAMPED_WIDER_BOUND))),
    # forty-fourth round: `default`'s recipe from a fresh net under that rule
    "adaptive-wide-log-800-val1000-avg-nominal-hyper-ramped-b100": (
        "mixture-wide", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=dict(_BOUNDED_NET, **_RAMPED_WIDER_BOUND))),
    # forty-fifth round: the same under default's own bound, ln 30 (ln 100 blew up the panel)
    "adaptive-wide-log-800-val1000-avg-nominal-hyper-ramped": (
        "mixture-wide", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=_RAMPED_NET)),
    # forty-seventh round: the curved-valley recipe (twenty-second round) under the same
    # warmup, since every epoch trained under it overshoots on the steep sine valley
    "adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30-ramped": (
        "mixture-wide-valleys", "digits-mlp-tanh-1000",
        dict(_AVERAGED, net=_RAMPED_NET)),
}

#: variant -> (bundled name or folder, its fingerprint): the weights it starts from
#: (MetaTrainer.start_from) instead of a fresh net; pinned, so a later `default` is refused
STARTS = {name: ("default", "ed02343c9b0a1989")
          for name in ("finetune-default-wider-e4", "finetune-default-wide-e4",
                       "finetune-default-ramped-b100-wide-e4")}
#: variant -> net config fields set on its starting weights after the fingerprint check (the
#: same tensors under the variant's rule)
START_CONFIG = {"finetune-default-ramped-b100-wide-e4": _RAMPED_WIDER_BOUND}


def starting_weights(name: str) -> WeightsBundle | None:
    """The bundle variant ``name`` starts from (:data:`STARTS`, under :data:`START_CONFIG`),
    or ``None``.

    Raises:
        ValueError: the bundle's fingerprint is not the pinned one.
    """
    if name not in STARTS:
        return None
    source, fingerprint = STARTS[name]
    # the pinned weights were trained without a departure warmup; a bundle that only adds
    # one (the fortieth round) starts training from the same tensors, with it off
    bundle = resolve_weights(source)
    if any(net.config.departure_warmup for net in bundle.nets.values()):
        bundle = bundle.with_net_config(departure_warmup=0)
    if bundle.fingerprint() != fingerprint:
        raise ValueError(f"variant {name!r} starts from {source!r} with fingerprint "
                         f"{fingerprint}, but {source!r} is now {bundle.fingerprint()}; "
                         "point STARTS at a folder with the pinned weights")
    if name in START_CONFIG:
        bundle = bundle.with_net_config(**START_CONFIG[name])
    return bundle


def variant_trainer(name: str, seed: int = 0, **options) -> MetaTrainer:
    """A :class:`MetaTrainer` for variant ``name`` at ``seed`` (its training and validation
    families and config); ``options`` go to the trainer (command, device, checkpoint_dir)."""
    family, validation, fields = VARIANTS[name]
    return MetaTrainer(get_task_family(family), MetaTrainConfig(**{**fields, "seed": seed}),
                       validation_family=get_task_family(validation), name=name, **options)


def train_variant(name: str, out: Path, seed: int = 0, device: str | None = None,
                  checkpoint_dir: Path | None = None, keep_epochs: Path | None = None) -> dict:
    """Meta-train variant ``name`` into ``out``; with ``checkpoint_dir``, write a checkpoint
    there after every epoch and continue from one that is already there; with
    ``keep_epochs``, also every epoch's scored weights to ``keep_epochs/epoch-NN``."""
    family, _, fields = VARIANTS[name]
    config = MetaTrainConfig(**{**fields, "seed": seed})
    command = (f"python benchmarks/default_variants.py --variants {name} --out {out.parent}"
               + (f" --seed {seed}" if seed else "") + (f" --device {device}" if device else ""))
    if name.endswith("-untrained"):
        net = LSTMOptimizerNet(config.net_config, seed=seed)  # as MetaTrainer initialises it
        bundle = WeightsBundle({"fc": net}, name=name, provenance={
            "variant": name, "seed": seed, "config": config.to_dict(), "epochs": 0,
            "command": command,
            "metrics": {"validation_final_loss": math.nan, "best_epoch": 0,
                        "untrained_validation_final_loss": math.nan},
            "total_wall_time_s": 0.0})
        bundle.save_pretrained(out)
        return bundle.provenance
    trainer = variant_trainer(name, seed, command=command, device=device,
                              checkpoint_dir=checkpoint_dir)
    start = starting_weights(name)
    if start is not None:
        trainer.start_from(start)
    if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_FILE).exists():
        trainer.load_checkpoint(checkpoint_dir)
    started = time.perf_counter()
    bundle = trainer.train(progress=False, on_epoch_end=keep_every_epoch(keep_epochs))
    bundle.provenance.update(variant=name, task_family=family,
                             total_wall_time_s=round(time.perf_counter() - started, 1))
    bundle.save_pretrained(out)
    return bundle.provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--out", default="runs/variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None, help="meta-train on this device, e.g. cuda")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="checkpoint every epoch to DIR/VARIANT, and resume from one there")
    parser.add_argument("--keep-epochs", default=None, metavar="DIR",
                        help="also write every epoch's scored weights to DIR/VARIANT/epoch-NN")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    print("| variant | best validation final loss | untrained | best epoch | seconds |")
    print("|---|---|---|---|---|")
    for name in names:
        provenance = train_variant(name, Path(args.out) / name, args.seed, args.device,
                                   Path(args.checkpoint_dir) / name if args.checkpoint_dir
                                   else None,
                                   Path(args.keep_epochs) / name if args.keep_epochs else None)
        metrics = provenance["metrics"]
        print(f"| {name} | {metrics['validation_final_loss']:.4g} | "
              f"{metrics['untrained_validation_final_loss']:.4g} | {metrics['best_epoch']} | "
              f"{provenance['total_wall_time_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
