"""Command line interface: ``python -m learned_optim COMMAND ...``.

Commands are registered in :data:`COMMANDS` with the :func:`command` decorator: each has a
function that adds its arguments to a subparser and a function that runs it and returns the
exit status. Adding a command is one decorated function (plus its arguments function).

Examples::

    python -m learned_optim list
    python -m learned_optim export default ./default-hub   # a Hub-ready folder
    torchrun --standalone --nproc_per_node=2 -m learned_optim meta-train --task quadratic \
        --meta-batch-size 2 --out runs/quadratic       # meta-training across 2 processes
    python -m learned_optim bench --quick                   # what a step costs (smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import CheckpointError, MetaTrainingError, WeightsError

__all__ = ["COMMANDS", "Command", "command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument setup and implementation."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Registered subcommands, by name, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def command(name: str, *, help: str,
            configure: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register the decorated ``run(args) -> exit status`` function as subcommand ``name``."""
    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, configure or (lambda parser: None), run)
        return run
    return register


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="python -m learned_optim",
        description="The learned LSTM optimizer of Andrychowicz et al. (2016), arXiv:1606.04474.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in COMMANDS.values():
        sub = subparsers.add_parser(entry.name, help=entry.help, description=entry.help)
        entry.configure(sub)
        sub.set_defaults(_run=entry.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status.

    Weights errors (missing, corrupted, offline), bad values, bad tasks, unusable checkpoints
    and a meta-training run stopped for divergence print one ``error:`` line instead of a
    traceback and exit with status 1.
    """
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except (WeightsError, ValueError, CheckpointError, MetaTrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------
# list


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true",
                        help="a markdown table of each optimizer's meta-training record")


def _markdown_table(names) -> str:
    from .weights import resolve_weights

    rows = ["| name | routes | meta-trained on | epochs x tasks | wall time | validation final "
            "loss: untrained -> trained |", "|---|---|---|---|---|---|"]
    for name in names:
        bundle = resolve_weights(name)
        p, m = bundle.provenance, bundle.provenance.get("metrics", {})
        config = p.get("config", {})
        rows.append(
            f"| `{name}` | {', '.join(bundle.routes)} | {p.get('task_family', '?')} "
            f"(horizon {config.get('horizon', '?')}) | {p.get('epochs', '?')} x "
            f"{config.get('tasks_per_epoch', '?')} | {p.get('total_wall_time_s', '?')} s | "
            f"{m.get('untrained_validation_final_loss', float('nan')):.4g} -> "
            f"{m.get('validation_final_loss', float('nan')):.4g} "
            f"(on {p.get('validation_task', {}).get('name', '?')}) |")
    return "\n".join(rows)


@command("list", configure=_list_arguments,
         help="list the bundled learned optimizers with a one-line summary each")
def _run_list(args: argparse.Namespace) -> int:
    from .model_card import provenance_summary
    from .weights import list_pretrained, resolve_weights

    names = list_pretrained()
    if not names:
        print("no bundled learned optimizers in this install (pretrained/ is empty); "
              "load a local folder or a Hub repo id instead")
        return 0
    if getattr(args, "markdown", False):
        print(_markdown_table(names))
        return 0
    width = max(map(len, names))
    for name in names:
        bundle = resolve_weights(name)
        print(f"{name:<{width}}  routes {','.join(bundle.routes)}  "
              f"{provenance_summary(bundle.provenance)}")
    return 0


# ---------------------------------------------------------------------------------------------
# export


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME",
                        help="a bundled name, a local folder or .safetensors file, or a Hub "
                             "repo id 'org/name'")
    parser.add_argument("directory", metavar="DIR",
                        help="the folder to write (created if missing; files in it with the "
                             "same names are replaced)")
    parser.add_argument("--repo-id", default=None,
                        help="the Hub repo the folder will be pushed to, used in the model "
                             "card's usage example")
    parser.add_argument("--revision", default=None, help="Hub revision, when NAME is a repo id")
    parser.add_argument("--cache-dir", default=None,
                        help="huggingface_hub cache folder, when NAME is a repo id")
    parser.add_argument("--local-files-only", action="store_true",
                        help="do not download, when NAME is a repo id")


@command("export", configure=_export_arguments,
         help="write a Hub-ready folder (model.safetensors, config.json, README.md) for NAME")
def _run_export(args: argparse.Namespace) -> int:
    from .model_card import write_model_card
    from .weights import resolve_weights

    bundle = resolve_weights(args.name, revision=args.revision, cache_dir=args.cache_dir,
                             local_files_only=args.local_files_only or None)
    directory = bundle.save_pretrained(args.directory)
    if args.repo_id:
        write_model_card(bundle, directory, repo_id=args.repo_id)
    print(f"wrote {bundle.name!r} (fingerprint {bundle.fingerprint()}) to {directory}")
    return 0


# ---------------------------------------------------------------------------------------------
# meta-train


#: MetaTrainConfig fields that meta-train --task takes as flags.
_CONFIG_FLAGS = ("epochs", "tasks_per_epoch", "horizon", "horizon_min", "unroll",
                 "validation_tasks", "validation_score", "meta_lr", "meta_batch_size",
                 "weight_average_decay", "stability_penalty", "stability_tolerance")


def _meta_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .meta.config import MetaTrainConfig
    from .meta.presets import PRESETS
    from .tasks import TASK_FAMILIES

    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", choices=sorted(PRESETS) + ["all"],
                       help="re-run the recipe of a bundled optimizer ('all': every one)")
    which.add_argument("--task", choices=sorted(TASK_FAMILIES), help="a task family")
    parser.add_argument("--out", default=None,
                        help="output folder (with --preset all: the parent folder, default "
                             "pretrained/)")
    parser.add_argument("--validation-task", choices=sorted(TASK_FAMILIES), default=None,
                        help="family used to pick the best weights (default: --task)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="write a checkpoint after every epoch here")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --checkpoint-dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-weights", default=None, metavar="WEIGHTS",
                        help="with --task: fine-tune these weights (bundled name, folder or "
                             "Hub repo id) instead of a fresh net; their net config is used")
    parser.add_argument("--keep-epochs", default=None, metavar="DIR",
                        help="also write the weights validation scored after every epoch to "
                             "DIR/epoch-NN (a folder the optimizer loads), best or not")
    defaults = MetaTrainConfig()
    # None when not given, so that --preset can refuse them instead of ignoring them
    notes = {"meta_batch_size": "optimizees per meta-update (their meta-losses are averaged); "
                                "under torchrun, split across the processes; ",
             "horizon_min": "if > 0, each run's horizon is drawn log-uniformly from "
                            "[horizon-min, horizon]; ",
             "weight_average_decay": "beta of the Polyak average of the optimizer's weights "
                                     "that is validated and kept (0: off); ",
             "validation_score": "how an epoch is scored: final_loss (mean) or "
                                 "log_final_loss (mean of logs: fair across a panel); ",
             "stability_penalty": "lambda of the stability term: each step whose loss climbs "
                                  "above stability-tolerance x the run's best so far adds "
                                  "lambda x the log of how far (0: off); ",
             "stability_tolerance": "the climb over the run's best loss so far that the "
                                    "stability term lets pass (>= 1); "}
    for field in _CONFIG_FLAGS:
        parser.add_argument("--" + field.replace("_", "-"),
                            type=type(getattr(defaults, field)), default=None,  # int or float
                            help=notes.get(field, "") + f"default {getattr(defaults, field)}")
    parser.add_argument("--device", default=None,
                        help="where to unroll the optimizees, e.g. cuda (default cpu; single "
                             "process only; results match the CPU's up to float rounding)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("meta-train", configure=_meta_train_arguments,
         help="meta-train the LSTM optimizer and write a weights folder the optimizer loads")
def _run_meta_train(args: argparse.Namespace) -> int:
    from .meta.presets import PRESETS, run_preset

    if args.preset:
        given = ["--" + f.replace("_", "-") for f in _CONFIG_FLAGS + ("validation_task",)
                 if getattr(args, f) is not None]
        if args.init_weights:
            given.append("--init-weights")
        if given:
            print(f"error: {', '.join(given)} cannot be combined with --preset, which re-runs "
                  "the recipe recorded in learned_optim/meta/presets.py as it is; to train a "
                  "changed recipe, use --task with these flags, or MetaTrainer with a "
                  "MetaTrainConfig in Python (as benchmarks/default_variants.py does)",
                  file=sys.stderr)
            return 2
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            print("error: --preset re-runs a single-process recipe; under torchrun use --task "
                  "with --meta-batch-size (a multiple of the number of processes)",
                  file=sys.stderr)
            return 2
        names = sorted(PRESETS) if args.preset == "all" else [args.preset]
        for name in names:
            out = (f"{args.out or 'pretrained'}/{name}" if args.preset == "all"
                   else args.out or f"pretrained/{name}")
            checkpoint = f"{args.checkpoint_dir}/{name}" if args.checkpoint_dir else None
            epochs = f"{args.keep_epochs}/{name}" if args.keep_epochs and args.preset == "all" \
                else args.keep_epochs
            bundle = run_preset(name, out, seed=args.seed, progress=not args.no_progress,
                                checkpoint_dir=checkpoint, resume=args.resume,
                                keep_epochs=epochs, device=args.device)
            print(f"wrote {name} to {out}: {bundle.provenance['metrics']}")
        return 0
    return _meta_train_task(args)


def _meta_train_task(args: argparse.Namespace) -> int:
    import shlex

    import torch.distributed as dist

    from .meta import MetaTrainConfig, MetaTrainer
    from .meta.distributed import process_group_from_env
    from .meta.presets import keep_every_epoch
    from .tasks import get_task_family

    if not args.out:
        print("error: --out is required with --task", file=sys.stderr)
        return 2
    if args.resume and not args.checkpoint_dir:
        print("error: --resume needs --checkpoint-dir", file=sys.stderr)
        return 2
    fields = {f: getattr(args, f) for f in _CONFIG_FLAGS if getattr(args, f) is not None}
    start = None
    if args.init_weights:  # fine-tuning: the architecture and rule are the bundle's
        from .routing import FC_ROUTE
        from .weights import resolve_weights

        start = resolve_weights(args.init_weights)
        fields["net"] = start.nets[FC_ROUTE].config.to_dict()
    config = MetaTrainConfig(seed=args.seed, **fields)
    validation = get_task_family(args.validation_task) if args.validation_task else None
    started_here = not (dist.is_available() and dist.is_initialized())
    group = process_group_from_env()  # torchrun: WORLD_SIZE > 1
    try:
        trainer = MetaTrainer(get_task_family(args.task), config, validation_family=validation,
                              checkpoint_dir=args.checkpoint_dir, name=args.task,
                              command=shlex.join(["python", "-m", "learned_optim"]
                                                 + sys.argv[1:]),
                              process_group=group, device=args.device)
        if start is not None:
            trainer.start_from(start)
        if args.resume:  # every process reads it: use a folder they all see
            trainer.load_checkpoint(args.checkpoint_dir)
        bundle = trainer.train(progress=not args.no_progress,
                               on_epoch_end=keep_every_epoch(args.keep_epochs))
        if trainer.rank == 0:
            bundle.provenance["task_family"] = args.task
            bundle.save_pretrained(args.out)
            print(f"wrote {args.out}: {bundle.provenance['metrics']}")
    finally:
        if group is not None and started_here:
            dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluation.suites import SUITES

    parser.add_argument("--suite", choices=sorted(SUITES), default="paper",
                        help="paper: the paper's experiments; transfer: problems no bundled "
                             "optimizer was trained on; heldout: default vs tuned Adam on "
                             "problems never used for training or choosing it; validation: "
                             "for choosing design variants (default: paper)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: two rows, lr grid in decades, 1 tuning seed, "
                             "3 test seeds")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row names of the suite (default: all)")
    parser.add_argument("--learned", default=None,
                        help="comma-separated learned optimizers (bundled names or bundle "
                             "folders) to run in every row instead of the row's own, e.g. to "
                             "compare design variants on --suite validation")
    parser.add_argument("--out", default=None,
                        help="folder for table.md, results.json, curves.safetensors and "
                             "plots/ (default: runs/evaluate-SUITE[-quick])")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these models are small, and one "
                             "thread gives steadier timings)")
    parser.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("evaluate", configure=_evaluate_arguments,
         help="the evidence table: bundled optimizers vs lr-tuned SGD, Nesterov, RMSprop, Adam")
def _run_evaluate(args: argparse.Namespace) -> int:
    import shlex

    from .evaluation import evaluate_suite

    import torch

    out = args.out or f"runs/evaluate-{args.suite}{'-quick' if args.quick else ''}"
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    plots = not args.no_plots
    if plots:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print("matplotlib is not installed: writing no plots (pip install "
                  "'learned_optim[examples]' for them)", file=sys.stderr)
            plots = False
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    learned_weights = ([w.strip() for w in args.learned.split(",") if w.strip()]
                       if args.learned else None)
    if learned_weights:
        from .weights import resolve_weights

        for weights in learned_weights:  # fail now, not after an hour of baselines
            resolve_weights(weights)
    table = evaluate_suite(args.suite, out, quick=args.quick, rows=rows,
                           learned_weights=learned_weights,
                           progress=not args.no_progress, plots=plots,
                           command=shlex.join(["python", "-m", "learned_optim"] + sys.argv[1:]))
    print(table)
    print(f"wrote {out}/table.md, results.json, curves.safetensors"
          + (", plots/" if plots else ""))
    return 0


# ---------------------------------------------------------------------------------------------
# bench


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run on tiny sizes (seconds), to check that it works")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="model sizes in parameters (default 10k 100k 1M 10M)")
    parser.add_argument("--tensors", type=int, default=None,
                        help="tensors of the many-tensor model (default 500)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sections", nargs="+", choices=["step", "block", "state", "meta", "train"],
                        default=None, help="parts to run (default: all)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile(opt.step) and the update rule compiled "
                             "by Inductor (adds a minute or more of compilation)")


@command("bench", configure=_bench_arguments,
         help="measure the optimizer step against a naive loop, the matmul floor and Adam")
def _run_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import BenchConfig, load_naive, run

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {key: value for key, value in (
        ("sizes", tuple(args.sizes) if args.sizes else None), ("tensors", args.tensors),
        ("repeats", args.repeats), ("sections", tuple(args.sections) if args.sections else None),
    ) if value is not None}
    overrides.update(device=args.device, compile=args.compile, naive=load_naive())
    config = (BenchConfig.quick_config(**overrides) if args.quick
              else BenchConfig(**overrides))
    if config.naive is None:
        print("note: benchmarks/naive.py not found next to the package (not a source "
              "checkout): column (a) and the naive unroll are left out")
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
