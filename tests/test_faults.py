"""Faults injected for real: no fault loses data, corrupts parameters or changes what a run reaches.

* A writer process is SIGKILLed in the middle of a save (mid-write, before the fsync, before
  the rename, between the files of a bundle): the previous file still loads, and a bundle
  folder always loads as either the old or the new bundle, complete.
* Writes that fail (disk full, failing fsync or rename) leave the previous file and no temp.
* A meta-training process killed mid-epoch (or while writing its checkpoint) resumes from its
  last checkpoint and reaches bit-identical φ, best φ and history as an uninterrupted run.
* Non-finite meta-losses and meta-gradients are skipped and logged; too many in a row stop the
  run with MetaTrainingError and the best weights are kept, in memory and in the checkpoint.
* 10,000 steps of the bundled ``default`` optimizer on digits never write NaN or inf, and no
  step is larger than the documented bound.
"""

import errno
import json
import logging
import math
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch
from safetensors import safe_open
from torch import nn

from learned_optim import (LearnedLSTMOptim, MetaTrainingError, WeightsBundle, load_weights,
                           resolve_weights)
from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.meta.trainer import CHECKPOINT_FILE
from learned_optim.tasks import FunctionTaskFamily, QuadraticFamily
from learned_optim.update import fuse_weights, lstm_step, update_bound
from learned_optim.weights import atomic_write_bytes
from nets import random_net

TESTS = pathlib.Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and on a loaded 2-core machine much steadier (a
    3-epoch quadratic meta-training run took 11 s with 2 threads and 0.7 s with one). The child
    processes use one thread too, so the resumed runs compare bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# =============================================================================================
# Helpers: child processes that stop at a hook point until they are SIGKILLed


class Zygote:
    """``tests/fault_scenarios.py`` in a process that imports torch once and forks one child per
    scenario (see that file); :meth:`kill_when_parked` SIGKILLs a child at its hook point."""

    def __init__(self, log):
        self.proc = subprocess.Popen([sys.executable, str(TESTS / "fault_scenarios.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, text=True, bufsize=1)
        self.lines, self.pids, self.queue = {}, [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put("")

    def start(self, job_id, scenario, **kwargs):
        self.proc.stdin.write(json.dumps({"id": job_id, "scenario": scenario,
                                          "kwargs": kwargs}) + "\n")
        self.proc.stdin.flush()

    def kill_when_parked(self, job_id, timeout=300):
        """Wait until the child parks, SIGKILL it there, and return the name of the point."""
        deadline = time.monotonic() + timeout
        while job_id not in self.lines:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if not line:
                pytest.fail(f"no word from the child {job_id!r} (zygote exit code "
                            f"{self.proc.poll()})")
            status, other, rest = line.rstrip("\n").split(" ", 2)
            self.lines[other] = (status, rest)
        status, rest = self.lines[job_id]
        if status != "READY":
            pytest.fail(f"the child {job_id!r} never reached its hook point: {rest}")
        point, pid = rest.split()
        pid = int(pid)
        self.pids.append(pid)
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):  # the zygote ignores SIGCHLD, so the kernel reaps it
            assert time.monotonic() < deadline, f"{job_id!r} survived SIGKILL"
            time.sleep(0.01)
        return point

    def close(self):
        for line in self.lines.values():
            if line[0] == "READY":
                pid = int(line[1].split()[1])
                if pid not in self.pids and _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


OLD, NEW = 0, 1  # seeds of the bundle on disk and of the one being saved


def bundle(seed):
    return WeightsBundle({"fc": random_net(seed)}, name=f"bundle-{seed}",
                         provenance={"seed": seed})


def tiny_config(**overrides):
    base = dict(epochs=3, tasks_per_epoch=2, horizon=10, unroll=5, validation_tasks=2,
                meta_lr=1e-2, seed=0)
    return MetaTrainConfig(**{**base, **overrides})


# (hook point, hook spec, whether the new weights file may already be in place)
BUNDLE_KILL_POINTS = [
    ("weights-mid-write", {"kind": "mid_write"}, False),
    ("weights-before-rename", {"kind": "call", "call": "replace"}, False),
    ("config-mid-write", {"kind": "mid_write", "after": 1}, True),
    ("config-before-rename", {"kind": "call", "call": "replace", "after": 1}, True),
    ("card-before-rename", {"kind": "call", "call": "replace", "after": 2}, True),
]

# (hook point, hook spec)
CHECKPOINT_KILL_POINTS = [
    ("mid-write", {"kind": "mid_write"}),
    ("before-fsync", {"kind": "call", "call": "fsync"}),
    ("before-rename", {"kind": "call", "call": "replace"}),
]

# (kill point, index of the training task of epoch 2 to park at; None: park in the middle of
# writing epoch 2's checkpoint)
MID_EPOCH_KILLS = [
    ("mid-epoch-2-after-a-task", 1),
    ("start-of-epoch-2", 0),
    ("mid-write-of-epoch-2s-checkpoint", None),
]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every kill scenario, started at once in one zygote: ``{key: (folder, file before)}``
    and the zygote."""
    from learned_optim.meta.trainer import _task_seed

    root = tmp_path_factory.mktemp("killed")
    log = open(root / "children.log", "w")
    zygote = Zygote(log)
    scenarios = {}
    for point, spec, _ in BUNDLE_KILL_POINTS:
        folder = root / "bundle" / point
        bundle(OLD).save_pretrained(folder)
        scenarios["bundle", point] = folder, (folder / "model.safetensors").read_bytes()
        zygote.start(f"bundle/{point}", "save_bundle", folder=str(folder), seed=NEW,
                     hook={**spec, "point": point})
    for point, spec in CHECKPOINT_KILL_POINTS:
        folder = root / "checkpoint" / point
        previous = MetaTrainer(QuadraticFamily(horizon=10), tiny_config())
        previous.epoch = 2  # a marker: what the checkpoint on disk says
        previous.save_checkpoint(folder)
        scenarios["checkpoint", point] = folder, (folder / CHECKPOINT_FILE).read_bytes()
        zygote.start(f"checkpoint/{point}", "save_checkpoint", folder=str(folder), epoch=3,
                     hook={**spec, "point": point})
    for point, index in MID_EPOCH_KILLS:
        folder = root / "meta" / point
        scenarios["meta", point] = folder, None
        if index is None:
            zygote.start(f"meta/{point}", "meta_train", folder=str(folder), point=point,
                         hook_in_checkpoint_of_epoch=2,
                         hook={"kind": "mid_write", "point": point})
        else:
            zygote.start(f"meta/{point}", "meta_train", folder=str(folder), point=point,
                         park_seed=_task_seed(0, 2, index))
    yield scenarios, zygote
    zygote.close()
    log.close()


# =============================================================================================
# SIGKILL during a save


@pytest.mark.parametrize("point,new_weights_possible", [p[::2] for p in BUNDLE_KILL_POINTS],
                         ids=[p[0] for p in BUNDLE_KILL_POINTS])
def test_bundle_save_killed_leaves_a_loadable_bundle(killed, point, new_weights_possible):
    scenarios, zygote = killed
    folder, previous = scenarios["bundle", point]
    assert zygote.kill_when_parked(f"bundle/{point}") == point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # config.json may be the old one
        loaded = load_weights(folder)
    expected = bundle(NEW if new_weights_possible else OLD)
    assert loaded.fingerprint() == expected.fingerprint()
    assert loaded.name == expected.name and loaded.provenance == expected.provenance
    if not new_weights_possible:
        assert (folder / "model.safetensors").read_bytes() == previous


@pytest.mark.parametrize("point", [p[0] for p in CHECKPOINT_KILL_POINTS])
def test_checkpoint_save_killed_leaves_the_previous_checkpoint(killed, point):
    scenarios, zygote = killed
    folder, previous = scenarios["checkpoint", point]
    assert zygote.kill_when_parked(f"checkpoint/{point}") == point
    assert (folder / CHECKPOINT_FILE).read_bytes() == previous
    resumed = MetaTrainer(QuadraticFamily(horizon=10), tiny_config())
    resumed.load_checkpoint(folder)
    assert resumed.epoch == 2


# =============================================================================================
# Writes that fail in-process: the previous file stays, no temp file is left


def failing(name, exc):
    real = getattr(os, name)

    def wrapper(*args, **kwargs):
        if wrapper.armed:
            raise exc
        return real(*args, **kwargs)
    wrapper.armed = True
    return wrapper


WRITE_FAILURES = [
    ("disk-full", "fdopen", OSError(errno.ENOSPC, "No space left on device")),
    ("fsync-io-error", "fsync", OSError(errno.EIO, "Input/output error")),
    ("rename-denied", "replace", PermissionError(errno.EACCES, "Permission denied")),
    ("interrupted", "fsync", KeyboardInterrupt()),
]


@pytest.mark.parametrize("name,exc", [w[1:] for w in WRITE_FAILURES],
                         ids=[w[0] for w in WRITE_FAILURES])
def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path, monkeypatch, name, exc):
    bundle(OLD).save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, name, failing(name, exc))
    with pytest.raises(type(exc)):
        bundle(NEW).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_weights(tmp_path).fingerprint() == bundle(OLD).fingerprint()


def test_atomic_write_creates_nothing_when_the_first_write_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", failing("replace", OSError(errno.EXDEV, "cross-device")))
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "new.bin", b"data")
    assert list(tmp_path.iterdir()) == []


# =============================================================================================
# Meta-training killed mid-epoch, then resumed


@pytest.fixture(scope="module")
def uninterrupted():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = MetaTrainer(QuadraticFamily(horizon=10), tiny_config())
        full.train(progress=False)
    finally:
        torch.set_num_threads(threads)
    return full


@pytest.mark.parametrize("point", [k[0] for k in MID_EPOCH_KILLS])
def test_meta_training_killed_then_resumed_reaches_the_same_phi(killed, uninterrupted, point):
    scenarios, zygote = killed
    folder, _ = scenarios["meta", point]
    assert zygote.kill_when_parked(f"meta/{point}") == point
    full = uninterrupted
    resumed = MetaTrainer(QuadraticFamily(horizon=10), tiny_config(), checkpoint_dir=folder)
    resumed.load_checkpoint(folder)
    assert resumed.epoch == 1  # the last complete epoch
    resumed.train(progress=False)
    for key, value in full._net_state().items():
        assert torch.equal(value, resumed._net_state()[key]), key
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    assert [h["final_loss"] for h in full.history] == [h["final_loss"] for h in resumed.history]
    assert full.best_bundle().fingerprint() == resumed.best_bundle().fingerprint()


# =============================================================================================
# Non-finite meta-losses and meta-gradients


def switchable_family(state):
    """Quadratic tasks whose loss turns NaN after step 0 while ``state["nan"]`` is true."""
    base = QuadraticFamily(horizon=10)

    def make(seed):
        task = base.sample(seed)
        loss_fn = task.loss_fn

        def maybe_nan(out, targets):
            value = loss_fn(out, targets)
            return value * math.nan if state["nan"] and state["step"] > 0 else value
        task.loss_fn = maybe_nan
        sample_batch = task.sample_batch

        def track(step):
            state["step"] = step
            return sample_batch(step)
        task.sample_batch = track
        return task
    return FunctionTaskFamily("switchable", make, horizon=10)


def test_non_finite_meta_losses_are_skipped_and_logged_and_training_goes_on(caplog):
    switch = {"nan": False, "step": 0}
    trainer = MetaTrainer(switchable_family(switch), tiny_config(epochs=2),
                          validation_family=QuadraticFamily(horizon=10))
    trainer.train_task(trainer.family.sample(1))  # a good task first
    phi = trainer._net_state()
    switch["nan"] = True
    with caplog.at_level(logging.WARNING, logger="learned_optim.meta.trainer"):
        trainer.train_task(trainer.family.sample(2))  # 2 truncations, both NaN
    assert trainer.skipped_updates == 2 and trainer.bad_updates == 2
    assert [r.getMessage() for r in caplog.records if r.name == "learned_optim.meta.trainer"] == [
        "skipped a meta-update: non-finite meta-loss or meta-gradient (1 in a row)",
        "skipped a meta-update: non-finite meta-loss or meta-gradient (2 in a row)"]
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in phi.items())
    switch["nan"] = False
    trainer.train_task(trainer.family.sample(3))  # a good update resets the count
    assert trainer.bad_updates == 0 and trainer.skipped_updates == 2
    assert all(torch.isfinite(v).all() for v in trainer._net_state().values())


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_meta_gradient_with_a_finite_meta_loss_is_skipped(caplog, bad):
    trainer = MetaTrainer(QuadraticFamily(horizon=10), tiny_config())
    weight = trainer.nets["fc"].cells[0].weight_ih
    handle = weight.register_hook(lambda grad: grad * bad)
    phi = trainer._net_state()
    with caplog.at_level(logging.WARNING, logger="learned_optim.meta.trainer"):
        losses = trainer.train_task(trainer.family.sample(1))
    assert all(math.isfinite(loss) for loss in losses)
    assert trainer.skipped_updates == len(losses) == 2
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in phi.items())
    assert "skipped a meta-update" in caplog.text
    handle.remove()
    trainer.train_task(trainer.family.sample(1))
    assert trainer.bad_updates == 0
    assert any(not torch.equal(v, trainer._net_state()[k]) for k, v in phi.items())


def test_too_many_non_finite_meta_updates_stop_the_run_and_keep_the_best_weights(tmp_path):
    switch = {"nan": False, "step": 0}

    def diverge_after_epoch_1(trainer):
        if trainer.epoch == 1:
            switch["nan"] = True

    trainer = MetaTrainer(switchable_family(switch), tiny_config(max_bad_updates=3),
                          validation_family=QuadraticFamily(horizon=10), checkpoint_dir=tmp_path)
    with pytest.raises(MetaTrainingError, match="(?s)stopped: 3 non-finite meta-updates in a "
                                                "row.*Lower meta_lr.*best weights so far"):
        trainer.train(progress=False, on_epoch_end=diverge_after_epoch_1)
    assert trainer.epoch == 1 and trainer.skipped_updates == 3
    best = trainer.best_bundle()
    assert all(torch.isfinite(t).all() for t in best.tensors().values())
    # the checkpoint on disk is epoch 1's and holds the same best weights
    with safe_open(str(tmp_path / CHECKPOINT_FILE), framework="pt") as handle:
        saved_best = {k[len("best."):]: handle.get_tensor(k) for k in handle.keys()
                      if k.startswith("best.")}
    assert saved_best.keys() == trainer.best_state.keys()
    assert all(torch.equal(v, trainer.best_state[k]) for k, v in saved_best.items())
    resumed = MetaTrainer(switchable_family(switch), tiny_config(max_bad_updates=3),
                          validation_family=QuadraticFamily(horizon=10))
    resumed.load_checkpoint(tmp_path)
    assert resumed.best_bundle().fingerprint() == best.fingerprint()
    best.save_pretrained(tmp_path / "best")  # and it is a usable optimizer
    assert load_weights(tmp_path / "best").fingerprint() == best.fingerprint()


# =============================================================================================
# Long runs: the learned update never writes NaN or inf


def test_ten_thousand_steps_of_default_on_digits_stay_finite_and_bounded():
    """10,000 minibatch steps of the bundled ``default`` optimizer on a small digits model
    (softmax regression on 4x4 average-pooled digits, 160 coordinates, to keep it a few
    seconds): every parameter stays finite after every step, no step exceeds the documented
    bound, no step is skipped, and the model learns."""
    from learned_optim.tasks.digits import digits_split

    x, y = digits_split("train")
    x = nn.functional.avg_pool2d(x.view(-1, 1, 8, 8), 2).flatten(1)
    weight = nn.Parameter(torch.zeros(16, 10))
    opt = LearnedLSTMOptim([weight], weights="default")
    bound = update_bound(opt.weights.nets["fc"])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    batch = 64
    first_loss = nn.functional.cross_entropy(x @ weight, y).item()
    largest_step = torch.zeros(())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a skipped step would fail the test
        for step in range(10_000):
            start = (step * batch) % (len(x) - batch)
            index = order[start:start + batch]
            loss = nn.functional.cross_entropy(x[index] @ weight, y[index])
            opt.zero_grad()
            loss.backward()
            before = weight.detach().clone()
            opt.step()
            assert torch.isfinite(weight).all(), step
            largest_step = torch.maximum(largest_step, (weight.detach() - before).abs().max())
    assert float(largest_step) <= bound * (1 + 1e-5)  # float32 rounding
    assert torch.isfinite(opt.state[weight]["hidden"]).all()
    full = nn.functional.cross_entropy(x @ weight, y).item()
    assert full < 0.25 * first_loss, (first_loss, full)


@pytest.mark.parametrize("name", ["default", "l2l-quadratic", "random", "random-adaptive"])
def test_update_never_exceeds_its_bound_on_extreme_inputs(name):
    """|update| <= update_bound(net) for any gradient and any (finite) state, including huge
    or tiny gradients, cell states far outside what training produces and (adaptive nets)
    accumulators no run can write: negative second moments and bias-correction weights."""
    nets = {"random": lambda: random_net(3),
            "random-adaptive": lambda: random_net(3, features="adaptive",
                                                  update="direction_magnitude")}
    net = nets[name]() if name in nets else resolve_weights(name).nets["fc"]
    g = torch.Generator().manual_seed(0)
    n = 4096
    magnitudes = 10.0 ** torch.empty(n).uniform_(-38, 38, generator=g)
    grad = magnitudes * torch.randn(n, generator=g).sign()
    grad[:4] = torch.tensor([0.0, -0.0, 3e38, -3e38])
    hidden = torch.randn(n, net.config.state_rows, 20, generator=g) * 10.0 ** torch.empty(
        n, 1, 1).uniform_(-3, 30, generator=g)
    update, new_hidden = lstm_step(grad, hidden, fuse_weights(net))
    bound = update_bound(net)
    assert torch.isfinite(update).all() and torch.isfinite(new_hidden).all()
    assert update.abs().max() <= bound * (1 + 1e-5)  # float32 rounding


def test_step_bound_holds_in_the_optimizer_with_lr():
    params = [nn.Parameter(torch.zeros(300))]
    opt = LearnedLSTMOptim(params, weights="default", lr=3.0)
    bound = 3.0 * update_bound(opt.weights.nets["fc"])
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        before = params[0].detach().clone()
        params[0].grad = torch.randn(300, generator=g) * 10.0 ** torch.randint(-30, 30, (300,),
                                                                                generator=g)
        opt.step()
        assert (params[0] - before).abs().max() <= bound * (1 + 1e-5)
