"""Child processes for tests/test_faults.py: a save or a meta-training run that parks at a hook
point (mid-write, before a rename, mid-epoch) until the test SIGKILLs it.

``python tests/fault_scenarios.py`` is a *zygote*: it imports torch and learned_optim once, then
reads one JSON job per line on stdin, ``{"id", "scenario", "kwargs"}``, and forks a child per
job, so that every scenario does not pay for importing torch again. It never runs a torch op
itself, so forking it is safe. A child writes ``READY <id> <point> <pid>`` when it parks, or
``FAILED <id> <error>`` if the scenario raised (each line in one atomic write, see :func:`say`);
the test then kills it with SIGKILL.
"""

import json
import os
import pathlib
import signal
import sys
import time
import traceback

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent),
                str(pathlib.Path(__file__).resolve().parent)]

import torch  # noqa: E402

from learned_optim import WeightsBundle  # noqa: E402
from learned_optim.meta import MetaTrainConfig, MetaTrainer  # noqa: E402
from learned_optim.tasks import QuadraticFamily  # noqa: E402
from nets import random_net  # noqa: E402

JOB = {"id": None}
CONFIG = dict(epochs=3, tasks_per_epoch=2, horizon=10, unroll=5, validation_tasks=2,
              meta_lr=1e-2, seed=0)


_MAX_LINE = 4096  # PIPE_BUF on Linux: writes up to this size to a pipe are atomic


def say(*words):
    """One line to the test in a single ``os.write`` of at most PIPE_BUF bytes, so that lines of
    children writing at the same time never interleave (``print`` may split a long line, such
    as a traceback, into several writes, and another child's line can land in between)."""
    text = " ".join(str(word) for word in words).replace("\n", " | ")
    # cut in bytes, then drop a multibyte character the cut split: the test reads UTF-8 text,
    # and the newline must survive the cut
    data = text.encode("utf-8", "replace")[:_MAX_LINE - 1].decode("utf-8", "ignore").encode()
    os.write(1, data + b"\n")


def park(point):
    """Tell the test where we are, then wait to be killed."""
    say("READY", JOB["id"], point, os.getpid())
    time.sleep(600)
    os._exit(3)


def hook(point, call="replace", after=0):
    """Park just before the (after+1)-th call of ``os.<call>``."""
    real, calls = getattr(os, call), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == after + 1:
            park(point)
        return real(*args, **kwargs)
    setattr(os, call, wrapper)


def hook_mid_write(point, after=0):
    """The (after+1)-th file opened with ``os.fdopen`` gets half of its data, flushed to disk,
    then the process parks."""
    real, calls = os.fdopen, [0]

    def fdopen(*args, **kwargs):
        handle = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == after + 1:
            write = handle.write

            def half_then_park(data):
                write(data[:len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
                park(point)
            handle.write = half_then_park
        return handle
    os.fdopen = fdopen


HOOKS = {"mid_write": hook_mid_write, "call": hook}


def install(spec):
    spec = dict(spec)
    HOOKS[spec.pop("kind")](**spec)


# ---------------------------------------------------------------------------------------------
# Scenarios


def save_bundle(folder, seed, hook):
    bundle = WeightsBundle({"fc": random_net(seed)}, name=f"bundle-{seed}",
                           provenance={"seed": seed})
    install(hook)
    bundle.save_pretrained(folder)


def save_checkpoint(folder, epoch, hook):
    trainer = MetaTrainer(QuadraticFamily(horizon=10), MetaTrainConfig(**CONFIG))
    trainer.epoch = epoch
    install(hook)
    trainer.save_checkpoint(folder)


def meta_train(folder, point, park_seed=-1, hook_in_checkpoint_of_epoch=None, hook=None):
    """Meta-train with checkpoints; park at ``point`` when task ``park_seed`` is sampled, or
    in the save of the checkpoint of epoch ``hook_in_checkpoint_of_epoch`` (with ``hook``)."""

    class Parking(QuadraticFamily):
        def sample(self, seed):
            if seed == park_seed:
                park(point)
            return super().sample(seed)

    class Trainer(MetaTrainer):
        def save_checkpoint(self, directory):
            if self.epoch == hook_in_checkpoint_of_epoch:
                install(hook)
            return super().save_checkpoint(directory)

    trainer = Trainer(Parking(horizon=10), MetaTrainConfig(**CONFIG), checkpoint_dir=folder)
    trainer.train(progress=False)


SCENARIOS = {"save_bundle": save_bundle, "save_checkpoint": save_checkpoint,
             "meta_train": meta_train}


def zygote():
    torch.set_num_threads(1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
    for line in sys.stdin:
        job = json.loads(line)
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            JOB["id"] = job["id"]
            try:
                SCENARIOS[job["scenario"]](**job["kwargs"])
                say("FAILED", job["id"], "finished without parking")
            except BaseException:
                say("FAILED", job["id"], traceback.format_exc())
            os._exit(1)


if __name__ == "__main__":
    zygote()
