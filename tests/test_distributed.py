"""torch.distributed on CPU (gloo, 2 processes): DDP, FSDP2 + DCP, and meta-training.

All scenarios run in one pair of processes started once with ``torch.multiprocessing.spawn``
(starting processes is most of the cost); the processes write what they hold (safetensors +
JSON) and the tests compare it with one process doing the same work.

Exact comparisons, and why they are exact: with 2 processes, DDP and FSDP2 average gradients
as ``g0/2 + g1/2`` (or ``(g0 + g1)/2``), which in binary floating point equals the reference's
``(g0 + g1) / 2`` bit for bit (a sum of two numbers does not depend on the order, halving is
exact), and the learned update gives the same bits whatever the split of coordinates into
shards (update.py pads blocks for that). So sharded runs can be checked with ``torch.equal``
even though the log|grad| preprocessing turns a 1e-8 gradient difference into ~1e-3 in the
parameters within 20 steps.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from learned_optim import LearnedLSTMOptim, StateDictError
from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.tasks import QuadraticFamily
from nets import random_net

WORLD = 2
STEPS, MORE_STEPS = 4, 3  # optimizer steps before and after the checkpoint


# -- running 2 processes --------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Run every worker below in 2 processes; return the folder they wrote to."""
    directory = tmp_path_factory.mktemp("world")
    mp.spawn(_entry, args=(str(directory),), nprocs=WORLD, join=True)
    return directory


def _entry(rank: int, directory: str) -> None:
    torch.set_num_threads(1)  # two processes on a small machine
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank,
                            world_size=WORLD)
    try:
        for worker in (_ddp_worker, _fsdp_worker, _meta_worker):
            worker(rank, Path(directory))
    finally:
        dist.destroy_process_group()


def _save(directory: Path, name: str, tensors: dict, info: dict | None = None) -> None:
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()},
              str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(info or {}))


def _load(directory: Path, name: str) -> tuple[dict, dict]:
    return (load_file(str(directory / f"{name}.safetensors")),
            json.loads((directory / f"{name}.json").read_text()))


# -- the optimizee and its single-process reference ----------------------------------------

def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 20), nn.Tanh(), nn.Linear(20, 3))  # 3 rows: 2 + 1


def _loss(model: nn.Module, step: int, rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * step + rank)  # each process its own batch
    x, y = torch.randn(8, 16, generator=g), torch.randn(8, 3, generator=g)
    return (model(x) - y).square().mean()


def _reference_steps(model: nn.Module, optimizer: LearnedLSTMOptim, steps: range) -> None:
    """One process doing what 2 data-parallel processes do: the mean of both batches' grads."""
    for step in steps:
        grads = []
        for rank in range(WORLD):
            model.zero_grad()
            _loss(model, step, rank).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for param, *per_rank in zip(model.parameters(), *grads):
            param.grad = (per_rank[0] + per_rank[1]) / 2
        optimizer.step()


def _state_bytes(optimizer: LearnedLSTMOptim) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values())


@pytest.fixture(scope="module")
def single_process():
    model = _model()
    optimizer = LearnedLSTMOptim(model.parameters(), weights=random_net())
    _reference_steps(model, optimizer, range(STEPS))
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    state_bytes = _state_bytes(optimizer)
    _reference_steps(model, optimizer, range(STEPS, STEPS + MORE_STEPS))
    return {"params": after, "state_bytes": state_bytes,
            "final": {n: p.detach().clone() for n, p in model.named_parameters()},
            "state_dict": optimizer.state_dict()}


# -- DDP ------------------------------------------------------------------------------------

def _ddp_worker(rank: int, directory: Path) -> None:
    model = nn.parallel.DistributedDataParallel(_model())
    optimizer = LearnedLSTMOptim(model.parameters(), weights=random_net())
    for step in range(STEPS):
        optimizer.zero_grad()
        _loss(model, step, rank).backward()
        optimizer.step()
    tensors = {f"param.{n}": p for n, p in model.module.named_parameters()}
    tensors.update({f"hidden.{n}": optimizer.state[p]["hidden"]
                    for n, p in model.module.named_parameters()})
    _save(directory, f"ddp{rank}", tensors)


@pytest.fixture(scope="module")
def ddp_run(world):
    return [_load(world, f"ddp{rank}")[0] for rank in range(WORLD)]


def test_ddp_ranks_hold_identical_parameters_and_hidden_state(ddp_run):
    first, second = ddp_run
    assert sorted(first) == sorted(second) and len(first) == 8
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert all(first[f"hidden.{n}"].abs().sum() > 0 for n in ("0.weight", "2.bias"))


def test_ddp_matches_one_process_averaging_the_same_gradients(ddp_run, single_process):
    for name, value in single_process["params"].items():
        assert torch.equal(ddp_run[0][f"param.{name}"], value), name


# -- FSDP2 and torch.distributed.checkpoint --------------------------------------------------

def _fsdp_model(mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    model = _model()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _fsdp_steps(model, optimizer, steps, rank) -> None:
    for step in steps:
        optimizer.zero_grad()
        _loss(model, step, rank).backward()
        optimizer.step()


def _error(call) -> str:
    try:
        call()
    except StateDictError as exc:
        return str(exc)
    return "no error"


def _fsdp_worker(rank: int, directory: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                         get_model_state_dict,
                                                         get_optimizer_state_dict,
                                                         set_model_state_dict,
                                                         set_optimizer_state_dict)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD,))
    model = _fsdp_model(mesh)
    optimizer = LearnedLSTMOptim(model.parameters(), weights=random_net())
    _fsdp_steps(model, optimizer, range(STEPS), rank)
    info: dict = {"state_bytes": _state_bytes(optimizer),
            "hidden_rows": {n: optimizer.state[p]["hidden"].shape[0]
                            for n, p in model.named_parameters()}}
    tensors = {f"param.{n}": p.full_tensor() for n, p in model.named_parameters()}

    # sharded save with DCP, then resume into a fresh model and optimizer
    checkpoint = str(directory / "dcp")
    dcp.save({"model": get_model_state_dict(model),
              "optim": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=checkpoint)
    resumed = _fsdp_model(mesh)
    resumed_optimizer = LearnedLSTMOptim(resumed.parameters(), weights=random_net())
    state = {"model": get_model_state_dict(resumed),
             "optim": get_optimizer_state_dict(resumed, resumed_optimizer)}
    dcp.load(state, checkpoint_id=checkpoint)
    set_model_state_dict(resumed, state["model"])
    set_optimizer_state_dict(resumed, resumed_optimizer, state["optim"])
    info["other_weights"] = _error(lambda: set_optimizer_state_dict(
        resumed, LearnedLSTMOptim(resumed.parameters(), weights=random_net(1)), state["optim"]))

    # the same state gathered whole, loaded by one process into an unsharded optimizer
    whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
    whole_model = get_model_state_dict(model, options=whole)
    whole_optim = get_optimizer_state_dict(model, optimizer, options=whole)

    _fsdp_steps(model, optimizer, range(STEPS, STEPS + MORE_STEPS), rank)
    _fsdp_steps(resumed, resumed_optimizer, range(STEPS, STEPS + MORE_STEPS), rank)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        tensors[f"final.{name}"] = p.full_tensor()
        tensors[f"local.{name}"] = p.to_local()
        tensors[f"resumed_local.{name}"] = q.to_local()
        tensors[f"hidden.{name}"] = optimizer.state[p]["hidden"]
        tensors[f"resumed_hidden.{name}"] = resumed_optimizer.state[q]["hidden"]

    # a bfloat16 state of an adaptive net keeps its accumulators apart: both are sharded
    narrow = dict(weights=random_net(0, features="adaptive", update="direction_magnitude",
                                     output_scale=0.01, hypergradient_rate=0.03),
                  state_dtype=torch.bfloat16)
    model16 = _fsdp_model(mesh)
    optimizer16 = LearnedLSTMOptim(model16.parameters(), **narrow)
    _fsdp_steps(model16, optimizer16, range(STEPS), rank)
    checkpoint16 = str(directory / "dcp16")
    dcp.save({"model": get_model_state_dict(model16),
              "optim": get_optimizer_state_dict(model16, optimizer16)}, checkpoint_id=checkpoint16)
    resumed16 = _fsdp_model(mesh)
    resumed_optimizer16 = LearnedLSTMOptim(resumed16.parameters(), **narrow)
    state16 = {"model": get_model_state_dict(resumed16),
               "optim": get_optimizer_state_dict(resumed16, resumed_optimizer16)}
    dcp.load(state16, checkpoint_id=checkpoint16)
    set_model_state_dict(resumed16, state16["model"])
    set_optimizer_state_dict(resumed16, resumed_optimizer16, state16["optim"])
    _fsdp_steps(model16, optimizer16, range(STEPS, STEPS + MORE_STEPS), rank)
    _fsdp_steps(resumed16, resumed_optimizer16, range(STEPS, STEPS + MORE_STEPS), rank)
    for (name, p), q in zip(model16.named_parameters(), resumed16.parameters()):
        tensors[f"local16.{name}"] = p.to_local()
        tensors[f"resumed_local16.{name}"] = q.to_local()
        for key in ("hidden", "accumulators"):
            tensors[f"{key}16.{name}"] = optimizer16.state[p][key]
            tensors[f"resumed_{key}16.{name}"] = resumed_optimizer16.state[q][key]

    if rank == 0:
        plain = _model()
        plain_optimizer = LearnedLSTMOptim(plain.parameters(), weights=random_net())
        set_model_state_dict(plain, whole_model)
        set_optimizer_state_dict(plain, plain_optimizer, whole_optim)
        _reference_steps(plain, plain_optimizer, range(STEPS, STEPS + MORE_STEPS))
        tensors.update({f"unsharded.{n}": p for n, p in plain.named_parameters()})
        info["sharded_into_plain"] = _error(
            lambda: plain_optimizer.load_state_dict(optimizer.state_dict()))
        info["plain_into_sharded"] = _error(
            lambda: optimizer.load_state_dict(plain_optimizer.state_dict()))
    _save(directory, f"fsdp{rank}", tensors, info)


@pytest.fixture(scope="module")
def fsdp_run(world):
    return [_load(world, f"fsdp{rank}") for rank in range(WORLD)]


def test_fsdp2_matches_one_process(fsdp_run, single_process):
    for rank in range(WORLD):
        tensors, _ = fsdp_run[rank]
        for name, value in single_process["params"].items():
            assert torch.equal(tensors[f"param.{name}"], value), (rank, name)
        for name, value in single_process["final"].items():
            assert torch.equal(tensors[f"final.{name}"], value), (rank, name)


def test_fsdp2_hidden_state_is_sharded_with_the_parameters(fsdp_run, single_process):
    rows = [info["hidden_rows"] for _, info in fsdp_run]
    # dim 0 is split as torch.chunk does: 20 rows -> 10 + 10, 3 rows -> 2 + 1
    assert rows[0] == {"0.weight": 160, "0.bias": 10, "2.weight": 40, "2.bias": 2}
    assert rows[1] == {"0.weight": 160, "0.bias": 10, "2.weight": 20, "2.bias": 1}
    whole = single_process["state_bytes"]
    per_rank = [info["state_bytes"] for _, info in fsdp_run]
    # 4-byte step counters are kept on every rank; the hidden state is split
    assert sum(per_rank) == whole + (WORLD - 1) * 4 * 4
    assert max(per_rank) <= 0.53 * whole, (per_rank, whole)


@pytest.mark.parametrize("kinds", [("local.", "hidden."),
                                   ("local16.", "hidden16.", "accumulators16.")],
                         ids=["float32-state", "bfloat16-state-of-an-adaptive-net"])
def test_dcp_sharded_save_and_resume_continues_bit_for_bit(fsdp_run, kinds):
    for rank in range(WORLD):
        tensors, _ = fsdp_run[rank]
        keys = [k for k in tensors if k.startswith(kinds)]
        assert {k.split(".")[0] for k in keys} == {kind[:-1] for kind in kinds}
        for key in keys:
            assert torch.equal(tensors[key], tensors[f"resumed_{key}"]), (rank, key)


def test_gathered_state_continues_in_one_unsharded_process(fsdp_run, single_process):
    tensors, _ = fsdp_run[0]
    for name, value in single_process["final"].items():
        assert torch.equal(tensors[f"unsharded.{name}"], value), name


def test_dcp_checkpoint_keeps_the_weights_identity(fsdp_run):
    for _, info in fsdp_run:  # get_optimizer_state_dict keeps only state and param_groups
        assert "made with weights" in info["other_weights"], info["other_weights"]


def test_sharded_and_unsharded_state_dicts_do_not_mix(fsdp_run):
    _, info = fsdp_run[0]
    assert "is sharded (a DTensor) and the parameter is not" in info["sharded_into_plain"]
    assert "full_state_dict=True" in info["sharded_into_plain"]
    assert "the parameter is sharded (a DTensor) and the state is not" in \
        info["plain_into_sharded"]


# -- meta-training ---------------------------------------------------------------------------

class _RecordingQuadratics(QuadraticFamily):
    """Quadratics that remember which seeds they were sampled with."""

    def __init__(self):
        super().__init__(horizon=10)
        self.seeds = []

    def sample(self, seed):
        self.seeds.append(seed)
        return super().sample(seed)


def _meta_config() -> MetaTrainConfig:
    # 8 tasks in meta-batches of 4: 2 per process. Random horizons: the two meta-batches draw
    # 5 and 9 steps (1 and 2 truncations, so 3 meta-updates), and every process must draw the
    # same for its share of a batch, or the all-reduces would not pair up.
    return MetaTrainConfig(epochs=1, tasks_per_epoch=8, meta_batch_size=4, horizon=10,
                           horizon_min=4, unroll=5, validation_tasks=3, meta_lr=1e-2, seed=0)


def _meta_worker(rank: int, directory: Path) -> None:
    from learned_optim.__main__ import main

    family = _RecordingQuadratics()
    trainer = MetaTrainer(family, _meta_config(), validation_family=QuadraticFamily(horizon=10),
                          checkpoint_dir=directory / f"checkpoint{rank}",
                          process_group=dist.group.WORLD)
    family.seeds.clear()  # the constructor samples one task to find the routes
    trainer.train(progress=False)
    info = {"seeds": family.seeds, "history": trainer.history}
    try:
        MetaTrainer(family, MetaTrainConfig(tasks_per_epoch=3, meta_batch_size=3),
                    process_group=dist.group.WORLD)
        info["odd_meta_batch"] = "no error"
    except ValueError as exc:
        info["odd_meta_batch"] = str(exc)
    os.environ["WORLD_SIZE"] = str(WORLD)  # as torchrun sets it; the group already exists
    info["cli_status"] = main(["meta-train", "--task", "quadratic", "--epochs", "1",
                               "--tasks-per-epoch", "2", "--meta-batch-size", "2",
                               "--horizon", "4", "--unroll", "2", "--validation-tasks", "2",
                               "--out", str(directory / f"cli{rank}"), "--no-progress"])
    _save(directory, f"meta{rank}", trainer._net_state(), info)


@pytest.fixture(scope="module")
def meta_run(world):
    return world, [_load(world, f"meta{rank}") for rank in range(WORLD)]


def test_meta_training_across_processes_keeps_one_phi(meta_run):
    _, ((first, _), (second, _)) = meta_run
    assert sorted(first) == sorted(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_two_processes_of_k_tasks_match_one_process_of_2k_tasks(meta_run):
    directory, runs = meta_run
    family = _RecordingQuadratics()
    single = MetaTrainer(family, _meta_config(), validation_family=QuadraticFamily(horizon=10))
    family.seeds.clear()
    single.train(progress=False)
    # each process unrolled its own tasks; together, exactly the single process's tasks
    seeds = [set(info["seeds"]) for _, info in runs]
    assert not seeds[0] & seeds[1] and len(seeds[0]) == len(seeds[1]) == 4
    assert seeds[0] | seeds[1] == set(family.seeds)
    # The meta-gradients are the same sums in another order (2 + 2 tasks summed across
    # processes, 4 summed in one), so they differ by float32 rounding, ~1e-7 relative; after a
    # few Adam steps of lr 1e-2, phi moved ~4e-2 and differed by a few ulps. 1e-6 is well above
    # rounding and far below one meta-update (1e-2): a process that drew another horizon than
    # its meta-batch's differs by ~1e-2.
    tensors, info = runs[0]
    untrained = MetaTrainer(_RecordingQuadratics(), _meta_config())._net_state()
    moved = 0.0
    for key, value in single._net_state().items():
        assert torch.allclose(tensors[key], value, rtol=0, atol=1e-6), \
            (key, (tensors[key] - value).abs().max())
        moved = max(moved, float((value - untrained[key]).abs().max()))
    assert moved > 1e-3  # the comparison is not between two untrained nets
    for ours, theirs in zip(info["history"], single.history):
        assert math.isclose(ours["final_loss"], theirs["final_loss"], rel_tol=1e-4)
    assert (directory / "checkpoint0" / "checkpoint.safetensors").exists()
    assert not (directory / "checkpoint1").exists()  # only rank 0 writes


def test_cli_meta_train_under_a_process_group_writes_once(meta_run):
    directory, runs = meta_run
    assert [info["cli_status"] for _, info in runs] == [0, 0]
    config = json.loads((directory / "cli0" / "config.json").read_text())
    provenance = config["provenance"]
    assert provenance["world_size"] == WORLD
    assert provenance["config"]["meta_batch_size"] == 2
    assert not (directory / "cli1").exists()


def test_meta_batch_must_split_over_the_processes(meta_run):
    _, runs = meta_run
    for _, info in runs:
        assert "meta_batch_size 3 cannot be split over 2 processes" in info["odd_meta_batch"]
        assert "multiple of the world size" in info["odd_meta_batch"]


def test_an_epoch_must_hold_whole_meta_batches():
    from learned_optim.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of meta_batch_size"):
        MetaTrainConfig(tasks_per_epoch=6, meta_batch_size=4)
