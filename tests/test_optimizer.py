"""LearnedLSTMOptim as a torch.optim.Optimizer: torch's generic optimizer checks, for this one."""

import copy
import pickle

import pytest
import torch
from torch import nn

from learned_optim import LearnedLSTMOptim, StateDictError
from learned_optim.network import SECOND_MOMENT_WEIGHT_COLUMN
from learned_optim.update import departure_ramp
from nets import random_net, sign_descent_net


def quadratic_problem(seed=0, n=10):
    g = torch.Generator().manual_seed(seed)
    W, y = torch.randn(n, n, generator=g), torch.randn(n, generator=g)
    theta = nn.Parameter(torch.randn(n, generator=g))
    return theta, lambda: (W @ theta - y).square().sum()


def run(opt, loss_fn, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def make_params(seed=0, shapes=((7, 5), (5,), (3, 4, 2))):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * 0.1).to(p.dtype)


def test_goes_in_the_right_direction_with_a_sign_descent_net():
    theta, loss_fn = quadratic_problem()
    losses = run(LearnedLSTMOptim([theta], weights=sign_descent_net(0.02)), loss_fn, 60)
    assert losses[-1] < 0.5 * losses[0]


def test_maximize_flips_the_direction():
    theta, loss_fn = quadratic_problem()
    losses = run(LearnedLSTMOptim([theta], weights=sign_descent_net(0.02), maximize=True),
                 loss_fn, 20)
    assert losses[-1] > losses[0]
    # maximize on f is exactly minimize with the negated gradient
    a, b = make_params(), make_params()
    opt_a = LearnedLSTMOptim(a, weights=random_net(), maximize=True)
    opt_b = LearnedLSTMOptim(b, weights=random_net())
    for step in range(3):
        set_grads(a, step)
        set_grads(b, step)
        for p in b:
            p.grad.neg_()
        opt_a.step()
        opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_closure_is_called_and_its_loss_returned():
    theta, loss_fn = quadratic_problem()
    opt = LearnedLSTMOptim([theta], weights=sign_descent_net())
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    before = theta.detach().clone()
    loss = opt.step(closure)
    assert len(calls) == 1 and torch.is_tensor(loss)
    assert not torch.equal(theta, before)


def displacements(lrs, steps=4, **kwargs):
    """Per-step parameter change for each lr, starting from zero params, same gradients."""
    out = []
    for lr in lrs:
        params = [nn.Parameter(torch.zeros(6, 4)), nn.Parameter(torch.zeros(9))]
        opt = LearnedLSTMOptim(params, weights=random_net(), lr=lr, **kwargs)
        moves = []
        for step in range(steps):
            set_grads(params, step)
            before = [p.detach().clone() for p in params]
            opt.step()
            moves.append(torch.cat([(p - b).flatten() for p, b in zip(params, before)]))
        out.append(moves)
    return out


def test_lr_scales_the_update_linearly():
    base, half, triple = displacements([1.0, 0.5, 3.0])
    for b, h, t in zip(base, half, triple):
        torch.testing.assert_close(h, 0.5 * b, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(t, 3.0 * b, rtol=1e-6, atol=1e-9)
    assert base[0].abs().min() > 0  # the net moves every coordinate


def test_lr_zero_moves_nothing_but_advances_the_state():
    params = make_params()
    before = [p.detach().clone() for p in params]
    opt = LearnedLSTMOptim(params, weights=random_net(), lr=0.0)
    set_grads(params, 0)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert opt.state[params[0]]["hidden"].abs().sum() > 0


def test_groups_with_different_lr():
    a, b = nn.Parameter(torch.zeros(5)), nn.Parameter(torch.zeros(5))
    opt = LearnedLSTMOptim([{"params": [a]}, {"params": [b], "lr": 0.25}], weights=random_net())
    a.grad = torch.full((5,), 0.3)
    b.grad = torch.full((5,), 0.3)
    opt.step()
    torch.testing.assert_close(b.detach(), 0.25 * a.detach(), rtol=1e-6, atol=0)
    assert opt.param_groups[0]["lr"] == 1.0 and opt.param_groups[1]["lr"] == 0.25


@pytest.mark.parametrize("make_scheduler", [
    lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5),
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 / (1 + epoch)),
    lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
], ids=["StepLR", "CosineAnnealingLR", "LambdaLR", "ReduceLROnPlateau"])
def test_lr_schedulers_drive_the_step(make_scheduler):
    (reference,) = displacements([1.0], steps=6)
    params = [nn.Parameter(torch.zeros(6, 4)), nn.Parameter(torch.zeros(9))]
    opt = LearnedLSTMOptim(params, weights=random_net())
    scheduler = make_scheduler(opt)
    lrs = []
    for step in range(6):
        set_grads(params, step)
        before = [p.detach().clone() for p in params]
        lr = opt.param_groups[0]["lr"]
        opt.step()
        move = torch.cat([(p - b).flatten() for p, b in zip(params, before)])
        torch.testing.assert_close(move, lr * reference[step], rtol=1e-6, atol=1e-9)
        lrs.append(lr)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(1.0)  # a flat metric: the lr must drop
        else:
            scheduler.step()
    assert len(set(lrs)) > 2, lrs


def test_params_without_grad_are_untouched_and_get_no_state():
    used, unused = nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(4))
    before = unused.detach().clone()
    opt = LearnedLSTMOptim([used, unused], weights=random_net())
    used.grad = torch.randn(4)
    opt.step()
    assert torch.equal(unused, before) and unused not in opt.state
    opt.zero_grad()
    assert used.grad is None
    snapshot = used.detach().clone()
    opt.step()  # every grad is None now: nothing moves
    assert torch.equal(used, snapshot)


def test_zero_gradient_still_steps_because_of_the_lstm_biases():
    p = nn.Parameter(torch.zeros(3))
    opt = LearnedLSTMOptim([p], weights=random_net())
    p.grad = torch.zeros(3)
    opt.step()
    assert p.abs().sum() > 0


def train_steps(opt, params, first, last):
    for step in range(first, last):
        set_grads(params, step)
        opt.step()


@pytest.mark.parametrize("dtype,state_dtype", [(torch.float32, None),
                                               (torch.float64, None),
                                               (torch.bfloat16, None),
                                               (torch.float32, torch.bfloat16)])
def test_state_dict_round_trip_is_bit_exact(dtype, state_dtype):
    params = [p.detach().to(dtype).requires_grad_() for p in make_params()]
    opt = LearnedLSTMOptim(params, weights=random_net(), state_dtype=state_dtype)
    train_steps(opt, params, 0, 3)
    saved = copy.deepcopy(opt.state_dict())
    clones = [p.detach().clone().requires_grad_() for p in params]
    fresh = LearnedLSTMOptim(clones, weights=random_net(), state_dtype=state_dtype)
    fresh.load_state_dict(saved)
    for p, q in zip(params, clones):
        assert fresh.state[q]["hidden"].dtype == opt.state[p]["hidden"].dtype
        assert torch.equal(fresh.state[q]["hidden"], opt.state[p]["hidden"])
    train_steps(opt, params, 3, 6)
    train_steps(fresh, clones, 3, 6)
    for p, q in zip(params, clones):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["hidden"], fresh.state[q]["hidden"])
        assert float(fresh.state[q]["step"]) == 6


def test_loaded_state_does_not_alias_the_source():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    train_steps(opt, params, 0, 1)
    saved = opt.state_dict()  # not copied
    clones = [p.detach().clone().requires_grad_() for p in params]
    fresh = LearnedLSTMOptim(clones, weights=random_net())
    fresh.load_state_dict(saved)
    before = opt.state[params[0]]["hidden"].clone()
    train_steps(fresh, clones, 1, 2)
    assert torch.equal(opt.state[params[0]]["hidden"], before)


def test_state_holds_only_tensors_and_records_the_weights():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    train_steps(opt, params, 0, 1)
    state = opt.state_dict()
    for entry in state["state"].values():
        assert set(entry) == {"step", "hidden"}
        assert all(torch.is_tensor(v) for v in entry.values())
    assert state["state"][0]["hidden"].shape == (35, 4, 20)
    identity = state["learned_optim"]
    assert identity["weights_fingerprint"] == opt.weights.fingerprint()


def test_state_dict_from_adam_is_refused():
    params = make_params()
    adam = torch.optim.Adam(params)
    set_grads(params, 0)
    adam.step()
    opt = LearnedLSTMOptim(params, weights=random_net())
    with pytest.raises(StateDictError, match="not made by LearnedLSTMOptim.*exp_avg"):
        opt.load_state_dict(adam.state_dict())


def test_state_dict_from_other_weights_is_refused():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net(0))
    train_steps(opt, params, 0, 1)
    other = LearnedLSTMOptim(params, weights=random_net(1))
    with pytest.raises(StateDictError, match="made with weights.*fingerprint"):
        other.load_state_dict(opt.state_dict())


def test_state_dict_for_other_parameters_is_refused():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    train_steps(opt, params, 0, 1)
    with pytest.raises(StateDictError, match="param groups of sizes"):
        LearnedLSTMOptim(params[:2], weights=random_net()).load_state_dict(opt.state_dict())
    reshaped = make_params(shapes=((5, 5), (5,), (3, 4, 2)))
    with pytest.raises(StateDictError, match="hidden state of parameter 0 has shape"):
        LearnedLSTMOptim(reshaped, weights=random_net()).load_state_dict(opt.state_dict())


def test_deepcopy_and_pickle_keep_the_nets():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    train_steps(opt, params, 0, 2)
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert twin.weights.fingerprint() == opt.weights.fingerprint()
        twin_params = [p for g in twin.param_groups for p in g["params"]]
        ref_params = [p.detach().clone().requires_grad_() for p in params]
        ref = LearnedLSTMOptim(ref_params, weights=random_net())
        ref.load_state_dict(copy.deepcopy(opt.state_dict()))
        train_steps(twin, twin_params, 2, 4)
        train_steps(ref, ref_params, 2, 4)
        assert all(torch.equal(a, b) for a, b in zip(twin_params, ref_params))


def test_repr_names_the_weights_and_groups():
    text = repr(LearnedLSTMOptim(make_params(), weights=random_net(), lr=0.5))
    assert text.startswith("LearnedLSTMOptim (weights='<in-memory>'")
    assert "Parameter Group 0" in text and "lr: 0.5" in text and "route: auto" in text


def test_step_hooks_run():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    set_grads(params, 0)
    opt.step()
    assert calls == ["pre", "post"]


def test_add_param_group():
    a, b = make_params()[:2]
    opt = LearnedLSTMOptim([a], weights=random_net(), lr=0.5)
    opt.add_param_group({"params": [b], "lr": 0.1})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["route"] == "auto"
    set_grads([a, b], 0)
    opt.step()
    assert b in opt.state


def linear_loss(params, seed, poison=False):
    """A loss whose gradient is a fixed random tensor per parameter (inf if poisoned)."""
    g = torch.Generator().manual_seed(seed)
    directions = [torch.randn(p.shape, generator=g) * 0.1 for p in params]
    if poison:
        directions[1][0] = float("inf")
    return sum((p * d).sum() for p, d in zip(params, directions))


def test_grad_scaler_on_cpu():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    params, reference = make_params(), make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    ref = LearnedLSTMOptim(reference, weights=random_net())
    for step in range(2):
        ref.zero_grad()
        linear_loss(reference, step).backward()
        ref.step()
        opt.zero_grad()
        scaler.scale(linear_loss(params, step)).backward()
        scaler.step(opt)
        scaler.update()
    # scaling by a power of two and unscaling is exact: same result as no scaler
    assert all(torch.equal(p, q) for p, q in zip(params, reference))
    # an inf gradient: the scaler skips the step, nothing moves, the state does not advance
    hidden = opt.state[params[0]]["hidden"].clone()
    before = [p.detach().clone() for p in params]
    opt.zero_grad()
    scaler.scale(linear_loss(params, 5, poison=True)).backward()
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert torch.equal(opt.state[params[0]]["hidden"], hidden)
    assert scaler.get_scale() < 1024.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_low_and_double_precision_params(dtype):
    params = [p.detach().to(dtype).requires_grad_() for p in make_params()]
    reference = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    ref = LearnedLSTMOptim(reference, weights=random_net())
    train_steps(opt, params, 0, 3)
    train_steps(ref, reference, 0, 3)
    expected_state = torch.float64 if dtype == torch.float64 else torch.float32
    assert opt.state[params[0]]["hidden"].dtype == expected_state
    for p, r in zip(params, reference):
        assert p.dtype == dtype
        tol = 1e-5 if dtype == torch.float64 else 2e-2
        torch.testing.assert_close(p.float(), r.detach(), rtol=tol, atol=tol)


def test_bf16_state_halves_state_memory():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net(), state_dtype=torch.bfloat16)
    train_steps(opt, params, 0, 1)
    hidden = opt.state[params[0]]["hidden"]
    assert hidden.dtype == torch.bfloat16 and hidden.element_size() == 2


ADAPTIVE_NET = dict(features="adaptive", update="direction_magnitude", output_scale=0.01,
                    nominal_step=True, hypergradient_rate=0.03, departure_warmup=300)


def test_a_16_bit_state_keeps_the_running_averages_in_float32():
    """The decay-0.999 averages move by 1e-3 of a difference per step, less than half a
    bfloat16 ulp: stored in bfloat16 the second moment's bias-correction weight w_v stopped at
    0.25 after about 290 steps (v-hat 4x too large, the departure ramp stuck at 0.96). They
    depend on the gradients alone, so they must match a float32 state's bit for bit."""
    net = random_net(0, **ADAPTIVE_NET)
    config = net.config
    runs = {}
    for state_dtype in (None, torch.bfloat16, torch.float16):
        params = make_params()
        opt = LearnedLSTMOptim(params, weights=net, state_dtype=state_dtype)
        train_steps(opt, params, 0, 400)
        runs[state_dtype] = opt, params
    wide, wide_params = runs[None]
    for state_dtype in (torch.bfloat16, torch.float16):
        opt, params = runs[state_dtype]
        for p, q in zip(params, wide_params):
            state = opt.state[p]
            assert state["hidden"].dtype == state_dtype
            assert state["hidden"].shape == (p.numel(), 2 * config.num_layers, 20)
            assert state["accumulators"].dtype == torch.float32
            assert state["accumulators"].shape == (p.numel(), 1, 20)
            # momenta, second moment and their weights: the gradients' alone
            assert torch.equal(state["accumulators"][:, 0, :8],
                               wide.state[q]["hidden"][:, 4, :8])
            weight = state["accumulators"][:, 0, SECOND_MOMENT_WEIGHT_COLUMN]
            torch.testing.assert_close(weight, torch.full_like(weight, 1 - 0.999 ** 400))
            assert torch.equal(departure_ramp(state["accumulators"][:, 0], config),
                               torch.ones(p.numel()))
        assert opt.step_scale(params[0]) == pytest.approx(wide.step_scale(wide_params[0]),
                                                          rel=0.05)


@pytest.mark.parametrize("param_dtype,state_dtype,kept_apart_in", [
    (torch.float32, torch.float32, None), (torch.float64, torch.float32, None),
    (torch.float64, torch.bfloat16, torch.float64), (torch.bfloat16, torch.float16, torch.float32)])
def test_only_a_16_bit_state_keeps_its_accumulators_apart_in_the_compute_dtype(
        param_dtype, state_dtype, kept_apart_in):
    params = [p.detach().to(param_dtype).requires_grad_() for p in make_params()]
    opt = LearnedLSTMOptim(params, weights=random_net(0, **ADAPTIVE_NET), state_dtype=state_dtype)
    train_steps(opt, params, 0, 2)
    state = opt.state[params[0]]
    assert state["hidden"].dtype == state_dtype
    if kept_apart_in is None:
        assert set(state) == {"step", "hidden"} and state["hidden"].shape[1] == 5
    else:
        assert state["accumulators"].dtype == kept_apart_in
        assert state["hidden"].shape[1] == 4 and state["accumulators"].shape[1] == 1


@pytest.mark.parametrize("state_dtype,version", [(None, 1), (torch.bfloat16, 2)])
def test_an_adaptive_16_bit_state_dict_round_trips_and_says_its_format(state_dtype, version):
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net(0, **ADAPTIVE_NET), state_dtype=state_dtype)
    train_steps(opt, params, 0, 3)
    saved = copy.deepcopy(opt.state_dict())
    assert saved["learned_optim"]["format_version"] == version
    assert ("accumulators" in saved["state"][0]) == (version == 2)
    clones = [p.detach().clone().requires_grad_() for p in params]
    fresh = LearnedLSTMOptim(clones, weights=random_net(0, **ADAPTIVE_NET),
                             state_dtype=state_dtype)
    fresh.load_state_dict(saved)
    train_steps(opt, params, 3, 6)
    train_steps(fresh, clones, 3, 6)
    for p, q in zip(params, clones):
        assert torch.equal(p, q)
        assert opt.state[p].keys() == fresh.state[q].keys()
        for key in opt.state[p]:
            assert opt.state[p][key].dtype == fresh.state[q][key].dtype
            assert torch.equal(opt.state[p][key], fresh.state[q][key])


def test_a_version_1_bfloat16_state_dict_loads_with_its_accumulators_widened():
    """Before format version 2 a bfloat16 state held the accumulator row in bfloat16, as the
    last row of "hidden"; loading it keeps the (h, c) rows and widens that row to float32."""
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net(0, **ADAPTIVE_NET),
                           state_dtype=torch.bfloat16)
    train_steps(opt, params, 0, 3)
    old = copy.deepcopy(opt.state_dict())
    old["learned_optim"]["format_version"] = 1
    for group in old["param_groups"]:
        group["learned_optim"] = old["learned_optim"]
    rows = {}
    for index, entry in old["state"].items():
        rows[index] = entry.pop("accumulators").to(torch.bfloat16)
        entry["hidden"] = torch.cat([entry["hidden"], rows[index]], dim=1)  # (n, 5, 20)
    clones = [p.detach().clone().requires_grad_() for p in params]
    fresh = LearnedLSTMOptim(clones, weights=random_net(0, **ADAPTIVE_NET),
                             state_dtype=torch.bfloat16)
    fresh.load_state_dict(old)
    for index, (p, q) in enumerate(zip(params, clones)):
        assert torch.equal(fresh.state[q]["hidden"], opt.state[p]["hidden"])
        assert fresh.state[q]["accumulators"].dtype == torch.float32
        assert torch.equal(fresh.state[q]["accumulators"], rows[index].float())
    train_steps(fresh, clones, 3, 4)
    assert all(torch.isfinite(q).all() for q in clones)
    assert float(fresh.state[clones[0]]["step"]) == 4


def test_accumulators_of_the_wrong_shape_are_refused():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net(0, **ADAPTIVE_NET),
                           state_dtype=torch.bfloat16)
    train_steps(opt, params, 0, 2)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][1]["accumulators"] = saved["state"][1]["accumulators"][:4]
    before = [p.detach().clone() for p in params]
    with pytest.raises(StateDictError, match=r"accumulators of parameter 1 has shape \(4, 1, 20\)"
                       r", but the parameter of shape \(5,\) needs \(5, 1, 20\)"):
        opt.load_state_dict(saved)
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_non_contiguous_params_match_contiguous_ones():
    base = torch.randn(6, 5)
    strided = base.clone().t().requires_grad_()  # a leaf that is not contiguous
    assert not strided.is_contiguous()
    dense = base.clone().t().contiguous().requires_grad_()
    opt_s = LearnedLSTMOptim([strided], weights=random_net(), chunk_size=7)
    opt_d = LearnedLSTMOptim([dense], weights=random_net(), chunk_size=7)
    for step in range(3):
        g = torch.randn(5, 6)
        strided.grad, dense.grad = g.clone(), g.clone()
        opt_s.step()
        opt_d.step()
    assert torch.equal(strided, dense)


def test_complex_params_are_optimized_as_real_pairs():
    z = torch.randn(4, 3, dtype=torch.complex64, requires_grad=True)
    r = torch.view_as_real(z.detach().clone()).requires_grad_()
    opt_z = LearnedLSTMOptim([z], weights=random_net())
    opt_r = LearnedLSTMOptim([r], weights=random_net())
    for _ in range(3):
        g = torch.randn(4, 3, dtype=torch.complex64)
        z.grad = g
        r.grad = torch.view_as_real(g).clone()
        opt_z.step()
        opt_r.step()
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 100, 4096])
def test_optimizer_is_bit_exact_across_chunk_sizes(chunk_size):
    ref_params, params = make_params(), make_params()
    ref = LearnedLSTMOptim(ref_params, weights=random_net(), chunk_size=10_000)
    opt = LearnedLSTMOptim(params, weights=random_net(), chunk_size=chunk_size)
    train_steps(ref, ref_params, 0, 3)
    train_steps(opt, params, 0, 3)
    assert all(torch.equal(p, q) for p, q in zip(params, ref_params))


def test_optimizer_is_bit_exact_across_tensor_splits():
    whole = nn.Parameter(torch.randn(60))
    parts = [nn.Parameter(t.clone()) for t in whole.detach().split([1, 20, 39])]
    opt_w = LearnedLSTMOptim([whole], weights=random_net(), chunk_size=16)
    opt_p = LearnedLSTMOptim(parts, weights=random_net(), chunk_size=16)
    for step in range(3):
        g = torch.randn(60)
        whole.grad = g.clone()
        for part, piece in zip(parts, g.split([1, 20, 39])):
            part.grad = piece.clone()
        opt_w.step()
        opt_p.step()
    assert torch.equal(whole.detach(), torch.cat([p.detach() for p in parts]))


def test_sparse_gradients_are_refused():
    dense = nn.Parameter(torch.randn(4))
    emb = nn.Embedding(10, 3, sparse=True)
    opt = LearnedLSTMOptim([{"params": [dense]}, {"params": emb.parameters()}],
                           weights=random_net())
    dense.grad = torch.ones(4)
    emb(torch.tensor([1, 2])).sum().backward()
    before = dense.detach().clone()
    with pytest.raises(RuntimeError, match="does not support sparse gradients.*SparseAdam"):
        opt.step()
    assert torch.equal(dense, before) and not opt.state  # nothing moved, no state made


def test_non_finite_gradients_never_reach_the_params():
    params = make_params()
    opt = LearnedLSTMOptim(params, weights=random_net())
    train_steps(opt, params, 0, 1)
    before = [p.detach().clone() for p in params]
    hidden = [opt.state[p]["hidden"].clone() for p in params]
    set_grads(params, 1)
    params[0].grad[0, 0] = float("nan")
    params[2].grad[1, 1, 1] = float("-inf")
    with pytest.warns(RuntimeWarning, match="skipped 2 parameter.*NaN or inf"):
        opt.step()
    for index in (0, 2):
        assert torch.equal(params[index], before[index])
        assert torch.equal(opt.state[params[index]]["hidden"], hidden[index])
    assert not torch.equal(params[1], before[1])
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("kwargs,error,phrase", [
    ({"lr": -1.0}, ValueError, "Invalid learning rate"),
    ({"lr": float("nan")}, ValueError, "Invalid learning rate"),
    ({"lr": "1e-3"}, TypeError, "Invalid learning rate"),
    ({"chunk_size": 0}, ValueError, "Invalid chunk_size"),
    ({"chunk_size": 2.5}, ValueError, "Invalid chunk_size"),
    ({"state_dtype": torch.int32}, ValueError, "Invalid state_dtype"),
    ({"maximize": "yes"}, TypeError, "maximize must be a bool"),
])
def test_invalid_arguments(kwargs, error, phrase):
    with pytest.raises(error, match=phrase):
        LearnedLSTMOptim(make_params(), weights=random_net(), **kwargs)


def test_unknown_route_and_non_float_params_are_refused():
    with pytest.raises(ValueError, match="route 'conv' is not in the weights.*\\['fc'\\]"):
        LearnedLSTMOptim([{"params": make_params(), "route": "conv"}], weights=random_net())
    with pytest.raises(ValueError, match="floating point or complex"):
        LearnedLSTMOptim([torch.zeros(3, dtype=torch.long)], weights=random_net())
