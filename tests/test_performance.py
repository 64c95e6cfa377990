"""Performance properties that can be checked without a clock: bounded memory, torch.compile,
the benchmark itself, and CUDA (skipped without a GPU). Timings are the benchmark's job."""

import contextlib
import io

import pytest
import torch
from torch import nn

from learned_optim import LearnedLSTMOptim
from learned_optim.__main__ import main
from learned_optim.bench import load_naive, make_params, peak_transient_bytes
from learned_optim.update import step_memory_bytes
from devices import needs_cuda
from nets import random_net


@pytest.fixture
def one_thread():
    """Many small blocks of ops: on a shared machine, two-thread parallel regions stall on
    every op. None of these tests is about threading."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_peak_transient_bytes_sees_torch_allocations():
    def allocate():
        a = torch.empty(1000, 1000)        # 4 MB
        b = torch.empty(500, 1000)         # + 2 MB: the peak
        del a
        return b, torch.empty(250, 1000)   # 2 + 1 MB
    assert peak_transient_bytes(allocate) == 6_000_000


@pytest.mark.parametrize("tensors", [1, 40])
def test_step_memory_stays_within_the_chunk_budget(tensors, one_thread):
    # 50k coordinates in blocks of 256: anything sized like the model (e.g. a bool mask of
    # the gradient, 50 kB) would exceed the 10% margin (28 kB) over the block budget.
    params = make_params(50_000, tensors)
    opt = LearnedLSTMOptim(params, weights=random_net(), chunk_size=256)
    opt.step()  # the state is made here; the next steps only use transient memory
    budget = step_memory_bytes(256, random_net().config)
    peak = peak_transient_bytes(opt.step)
    assert 0 < peak <= 1.1 * budget, (peak, budget)


@pytest.mark.parametrize("option", [dict(tensor_feature=True),
                                    dict(tensor_feature=True, tensor_statistic="gradient_change"),
                                    dict(nominal_step=True, hypergradient_rate=0.03)],
                         ids=["signal_to_noise", "gradient_change", "step_scale"])
def test_per_tensor_step_memory_stays_within_the_chunk_and_largest_tensor_budget(option,
                                                                                 one_thread):
    # nets that reduce each tensor as a whole hold a few floats per coordinate of one tensor:
    # one 50k tensor (about 2.5x the 256-row block budget) must fit the bound that counts it
    net = random_net(features="adaptive", update="direction_magnitude", output_scale=0.01,
                     **option)
    opt = LearnedLSTMOptim(make_params(50_000, 1), weights=net, chunk_size=256)
    opt.step()
    peak = peak_transient_bytes(opt.step)
    assert peak > step_memory_bytes(256, net.config)  # the block budget alone is not enough
    assert 0 < peak <= 1.1 * step_memory_bytes(256, net.config, largest_tensor=50_000)


def test_bfloat16_state_halves_state_memory():
    def state_bytes(state_dtype):
        params = make_params(1000, 3)
        opt = LearnedLSTMOptim(params, weights=random_net(), state_dtype=state_dtype)
        opt.step()
        return sum(s["hidden"].nbytes for s in opt.state.values())
    assert state_bytes(torch.bfloat16) * 2 == state_bytes(None) == 1000 * 80 * 4


def test_compiled_step_matches_eager_without_recompiling():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()  # Dynamo's tracing and guards, without Inductor's compile time
    model = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2))
    twin = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2))
    twin.load_state_dict(model.state_dict())
    eager = LearnedLSTMOptim(model.parameters(), weights=random_net())
    compiled = LearnedLSTMOptim(twin.parameters(), weights=random_net())
    step = torch.compile(compiled.step, backend=counter)
    frames = []
    for k in range(6):
        x = torch.randn(5, 8)
        for net, do_step in ((model, eager.step), (twin, step)):
            net.zero_grad(set_to_none=True)  # new grad tensors every step, as in training
            net(x).square().mean().backward()
            do_step()
        frames.append(counter.frame_count)
    assert frames[1] > 0 and frames[-1] == frames[1], frames
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_naive_baseline_computes_the_same_function():
    naive = load_naive()
    assert naive is not None, "benchmarks/naive.py is part of the source checkout"
    net = random_net()
    ours_params, naive_params = make_params(500, 4), make_params(500, 4)
    ours = LearnedLSTMOptim(ours_params, weights=net)
    reference = naive.NaiveLSTMOptimizer(naive_params, net)
    for _ in range(3):
        ours.step()
        reference.step()
    for p, q in zip(ours_params, naive_params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_bench_quick_prints_every_table(one_thread):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["bench", "--quick", "--sizes", "600", "--tensors", "3"])
    text = out.getvalue()
    assert status == 0
    assert "| params | tensors | (a) naive ms | (b) step ms | (c) floor ms |" in text
    assert "| 600 | 1 |" in text and "| 600 | 3 |" in text
    assert "one block of 4096 coordinates" in text
    assert "state bytes per parameter" in text and "bfloat16 160.0" in text
    # default's adaptive net: 5 rows of 20 floats, or 4 in bfloat16 and its running averages'
    # row in float32
    assert "default's net: float32 400.0, bfloat16 240.0" in text
    assert "MetaTrainer" in text and "digits-CNN training" in text


@needs_cuda
def test_cuda_params_keep_state_and_compute_on_cuda():
    cpu_params = make_params(5000, 3)
    cuda_params = [nn.Parameter(p.detach().cuda()) for p in cpu_params]
    for p, q in zip(cuda_params, cpu_params):
        p.grad = q.grad.cuda()
    cuda_opt = LearnedLSTMOptim(cuda_params, weights=random_net(), chunk_size=1000)
    cpu_opt = LearnedLSTMOptim(cpu_params, weights=random_net(), chunk_size=1000)
    for _ in range(3):
        cuda_opt.step()
        cpu_opt.step()
    for p, q in zip(cuda_params, cpu_params):
        assert cuda_opt.state[p]["hidden"].is_cuda
        torch.testing.assert_close(p.cpu(), q, rtol=1e-4, atol=1e-5)


@needs_cuda
def test_cuda_step_memory_stays_within_the_chunk_budget():
    params = make_params(50_000, 1, device="cuda")
    opt = LearnedLSTMOptim(params, weights=random_net(), chunk_size=256)
    opt.step()
    peak = peak_transient_bytes(opt.step, device="cuda")
    assert 0 < peak <= 1.1 * step_memory_bytes(256, random_net().config)
