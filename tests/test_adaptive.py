"""The config options of issue 10: adaptive (scale-free) features and the direction-magnitude
head. Same network, same update rule; these pin down the math and the properties."""

import copy
import math

import pytest
import torch

from learned_optim import (LearnedLSTMOptim, LSTMOptimizerConfig, LSTMOptimizerNet, WeightsBundle,
                           fuse_weights, lstm_step, lstm_update)
from learned_optim.errors import ConfigError
from learned_optim.network import (ADAM_FEATURE, FEATURE_CLIP, MOMENTUM_DECAYS,
                                   SECOND_MOMENT_DECAY)
from learned_optim.update import (StepWorkspace, accumulator_row, adaptive_features,
                                  departure_ramp, lstm_step_, run_progress, step_memory_bytes,
                                  tensor_statistic, tensor_step_scale, update_bound,
                                  with_progress, write_progress_)
from test_update import mixed_gradients

ADAPTIVE = dict(features="adaptive", update="direction_magnitude", output_scale=0.01)
NOMINAL = dict(ADAPTIVE, nominal_step=True)
WARMUP = dict(NOMINAL, departure_warmup=3)
CONFIGS = [ADAPTIVE, dict(features="adaptive"),
           dict(ADAPTIVE, magnitude_scale=3.0, hidden_size=8, num_layers=1), NOMINAL, WARMUP]


def net_of(seed=0, **config):
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**config), seed=seed)
    with torch.no_grad():  # move away from the Adam start so every weight matters
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return net.requires_grad_(False)


def run_steps(net, grads, chunk_size=None, split=None, values=None):
    """Steps of lstm_update over ``grads`` (and the parameter values ``values``, for nets with
    parameter_feature), the coordinates split into tensors of sizes ``split``."""
    weights = fuse_weights(net)
    n = grads[0].shape[0]
    hidden = net.initial_state(n, dtype=grads[0].dtype)
    parts = split or [n]
    updates = []
    for step, grad in enumerate(grads):
        params = None if values is None else list(values[step].split(parts))
        ups, states = lstm_update(list(grad.split(parts)), list(hidden.split(parts)), weights,
                                  chunk_size=chunk_size, params=params)
        updates.append(torch.cat(ups))
        hidden = torch.cat(states)
    return updates, hidden


def reference_adaptive(net, grads):
    """A per-coordinate loop in plain Python floats for the accumulators, nn.LSTMCell for the
    layers and the head as written in the docstring."""
    cfg = net.config
    decays = list(MOMENTUM_DECAYS) + [SECOND_MOMENT_DECAY]
    n = grads[0].shape[0]
    acc = [[0.0] * 8 for _ in range(n)]
    states = [[(torch.zeros(1, cfg.hidden_size, dtype=torch.float64),) * 2
               for _ in range(cfg.num_layers)] for _ in range(n)]
    out = []
    for grad in grads:
        step = []
        for k in range(n):
            g = float(grad[k])
            a = acc[k]
            for j, beta in enumerate(decays[:-1]):
                a[j] = beta * a[j] + (1 - beta) * g
            a[3] = decays[-1] * a[3] + (1 - decays[-1]) * g * g
            for j, beta in enumerate(decays):
                a[4 + j] = beta * a[4 + j] + (1 - beta)
            root = math.sqrt(a[3] / a[7]) + 1e-12
            x = [g / root] + [a[j] / a[4 + j] / root for j in range(3)]
            x = [min(max(v, -FEATURE_CLIP), FEATURE_CLIP) for v in x]
            inp = torch.tensor([x], dtype=torch.float64)
            for layer, cell in enumerate(net.cells):
                h, c = cell(inp, states[k][layer])
                states[k][layer] = (h, c)
                inp = h
            z = torch.cat([inp[0], torch.tensor(x, dtype=torch.float64)])
            d, s = (net.head.weight @ z + net.head.bias).tolist()
            nominal = x[2] if cfg.nominal_step else 0.0  # Adam's m_0.9 / sqrt(v)
            step.append(cfg.output_scale * (d * math.exp(min(cfg.magnitude_scale * s, 80.0))
                                            - nominal))
        out.append(torch.tensor(step, dtype=torch.float64))
    return out


@pytest.mark.parametrize("config", [ADAPTIVE, NOMINAL], ids=["learned-step", "nominal-step"])
def test_matches_the_per_coordinate_reference(config):
    net = net_of(3, **config).double()
    grads = [mixed_gradients(23, torch.float64, seed=s) for s in range(4)]
    for got, want in zip(run_steps(net, grads)[0], reference_adaptive(net, grads)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-15)


def assert_steps_like_adam(net):
    """Six steps of ``net`` (float64) on 50 coordinates end where
    torch.optim.Adam(lr=0.01, eps=1e-12) ends from the same start and gradients."""
    learned = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    adam = torch.nn.Parameter(learned.detach().clone())
    ours = LearnedLSTMOptim([learned], weights=net)
    theirs = torch.optim.Adam([adam], lr=0.01, betas=(0.9, 0.999), eps=1e-12)
    for step in range(6):
        grad = mixed_gradients(50, torch.float64, seed=step) + 0.01
        for p, opt in ((learned, ours), (adam, theirs)):
            p.grad = grad.clone()
            opt.step()
    torch.testing.assert_close(learned.detach(), adam.detach(), rtol=1e-9, atol=1e-12)


def test_untrained_net_with_a_silent_lstm_steps_exactly_like_adam():
    # The head starts at d = -m_0.9/sqrt(v), s = 0; with its weights on h zeroed, the rule is
    # Adam(lr=output_scale, betas=(0.9, 0.999), eps=1e-12). torch.optim.Adam is the reference.
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**ADAPTIVE), seed=0).double()
    with torch.no_grad():
        net.head.weight[:, :net.config.hidden_size] = 0.0
    assert_steps_like_adam(net)


def test_nominal_step_with_a_silent_head_is_exactly_adam():
    # nominal_step adds -output_scale * m_0.9/sqrt(v) outside the head: with every head weight
    # and bias zeroed (d = 0) the learned part vanishes and the rule is Adam(lr=output_scale,
    # eps=1e-12) whatever the LSTM does; torch.optim.Adam is the reference.
    net = net_of(7, **NOMINAL).double()
    with torch.no_grad():
        net.head.weight[0] = 0.0
        net.head.bias[0] = 0.0
    assert_steps_like_adam(net)


def test_nominal_step_net_starts_with_the_learned_direction_off_the_adam_feature():
    # The Adam step is already outside the head, so the head's direction row must not add a
    # second one: its weight on the Adam feature starts at 0 (at -1 without nominal_step).
    hidden = LSTMOptimizerConfig(**ADAPTIVE).hidden_size
    column = hidden + ADAM_FEATURE
    plain = LSTMOptimizerNet(LSTMOptimizerConfig(**ADAPTIVE), seed=0)
    nominal = LSTMOptimizerNet(LSTMOptimizerConfig(**NOMINAL), seed=0)
    assert float(plain.head.weight[0, column].detach()) == -1.0
    assert float(nominal.head.weight[0, column].detach()) == 0.0
    torch.testing.assert_close(nominal.head.weight[:, :hidden], plain.head.weight[:, :hidden])
    assert "nominal_step=True" in repr(nominal) and "nominal_step" not in repr(plain)


def test_departure_warmup_multiplies_the_learned_departure_by_t_over_n():
    # Without a step scale the state depends on the gradients alone, so on the same gradients
    # a net with departure_warmup=N steps like Adam (its head silenced) plus min(1, t/N) times
    # the departure of the same net without warmup.
    whole = net_of(7, **NOMINAL).double()
    warm = WeightsBundle({"fc": whole}).with_net_config(departure_warmup=4).nets["fc"]
    adam_only = copy.deepcopy(whole)
    with torch.no_grad():
        adam_only.head.weight[0] = 0.0
        adam_only.head.bias[0] = 0.0
    grads = [mixed_gradients(60, torch.float64, seed=s) for s in range(7)]
    full, _ = run_steps(whole, grads)
    nominal, _ = run_steps(adam_only, grads)
    ramped, _ = run_steps(warm, grads)
    for t, (f, a, r) in enumerate(zip(full, nominal, ramped), start=1):
        torch.testing.assert_close(r, a + min(1.0, t / 4) * (f - a), rtol=1e-9, atol=1e-15)
    assert not torch.allclose(full[0], ramped[0])  # the departure is not zero to begin with


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_departure_ramp_reads_the_step_count_from_the_bias_correction_weight(dtype):
    config = LSTMOptimizerConfig(**dict(NOMINAL, departure_warmup=300))
    accumulators = torch.zeros(3, 8, dtype=dtype)
    for t in range(1, 401):
        _, accumulators = adaptive_features(torch.tensor([1.0, -2.0, 0.0], dtype=dtype),
                                            accumulators)
        if t in (1, 2, 150, 299, 300, 400):
            expected = torch.full((3,), min(1.0, t / 300), dtype=dtype)
            torch.testing.assert_close(departure_ramp(accumulators, config), expected,
                                       rtol=1e-4, atol=0.0)
    # the limit w = 1 (float32 reaches it after ~16,000 steps), and a corrupted NaN, read as 1
    limit = torch.tensor([[0.0] * 7 + [1.0], [0.0] * 7 + [math.nan]], dtype=dtype)
    assert departure_ramp(limit, config).tolist() == [1.0, 1.0]


def test_departure_warmup_goes_on_where_a_restored_state_stopped():
    torch.manual_seed(0)
    net = net_of(3, **dict(WARMUP, departure_warmup=10))
    grads = [torch.randn(30) for _ in range(6)]
    p = torch.nn.Parameter(torch.zeros(30))
    straight = LearnedLSTMOptim([p], weights=net)
    q = torch.nn.Parameter(torch.zeros(30))
    first = LearnedLSTMOptim([q], weights=net)
    for step, grad in enumerate(grads):
        p.grad = grad.clone()
        straight.step()
        if step < 3:
            q.grad = grad.clone()
            first.step()
    resumed = LearnedLSTMOptim([q], weights=net)
    resumed.load_state_dict(first.state_dict())
    for grad in grads[3:]:
        q.grad = grad.clone()
        resumed.step()
    assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize("field,value,problem", [
    ("departure_warmup", True, "an integer number of steps"),
    ("departure_warmup", -1, "an integer number of steps"),
    ("departure_warmup", 10_001, "an integer number of steps"),
    ("departure_warmup", 2.5, "an integer number of steps")])
def test_departure_warmup_must_be_a_step_count(field, value, problem):
    with pytest.raises(ConfigError, match=problem):
        LSTMOptimizerConfig(**{**NOMINAL, field: value})


def test_departure_warmup_needs_the_nominal_step():
    with pytest.raises(ConfigError, match="0 unless nominal_step=True"):
        LSTMOptimizerConfig(**dict(ADAPTIVE, departure_warmup=100))


def test_departure_warmup_off_keeps_the_fingerprint_of_weights_that_predate_it():
    config = LSTMOptimizerConfig(**NOMINAL)
    assert "departure_warmup" not in config.identity_dict()
    assert LSTMOptimizerConfig(**WARMUP).identity_dict()["departure_warmup"] == 3


@pytest.mark.parametrize("config", CONFIGS)
def test_steps_do_not_depend_on_the_scale_of_the_gradient(config):
    net = net_of(1, **config).double()
    grads = [torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
             for s in range(5)]
    base, _ = run_steps(net, grads)
    for scale in (1e-3, 1e4):  # far above epsilon = 1e-12
        scaled, _ = run_steps(net, [g * scale for g in grads])
        for a, b in zip(base, scaled):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


def test_paper_features_do_depend_on_the_scale():  # the contrast: log/sign is not invariant
    net = net_of(1).double()
    grads = [torch.randn(40, dtype=torch.float64)]
    assert not torch.allclose(run_steps(net, grads)[0][0], run_steps(net, [grads[0] * 1e4])[0][0])


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("chunk_size,split", [(1, None), (7, None), (64, [5, 300, 3, 93]),
                                              (256, [1] * 9 + [392])])
def test_bit_exact_across_chunks_and_splits(config, chunk_size, split):
    net = net_of(2, **config)
    grads = [mixed_gradients(401, seed=s) for s in range(3)]
    whole, whole_hidden = run_steps(net, grads)
    parts, parts_hidden = run_steps(net, grads, chunk_size=chunk_size, split=split)
    assert all(torch.equal(a, b) for a, b in zip(whole, parts))
    assert torch.equal(whole_hidden, parts_hidden)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 8, 37])
def test_in_place_step_is_bit_identical(config, dtype, rows):
    net = net_of(4, **config).to(dtype)
    weights = fuse_weights(net)
    hidden = net.initial_state(rows, dtype=dtype)
    workspace = StepWorkspace(64, net.config, dtype=dtype)
    workspace.hidden.fill_(float("nan"))
    for seed in range(3):  # three steps, so the accumulators are read back
        grad = mixed_gradients(rows, dtype, seed=seed)
        expected_update, hidden = lstm_step(grad, hidden, weights)
        workspace.grad[:rows] = grad
        if seed == 0:
            workspace.hidden[:rows] = net.initial_state(rows, dtype=dtype)
        update = lstm_step_(workspace, rows, weights)
        assert torch.equal(update, expected_update)
        assert torch.equal(workspace.hidden[:rows], hidden)
    assert workspace.nbytes <= step_memory_bytes(64, net.config, dtype)


@pytest.mark.parametrize("config", [ADAPTIVE, CONFIGS[2], NOMINAL,
                                    dict(NOMINAL, hypergradient_rate=0.3),
                                    dict(WARMUP, hypergradient_rate=0.3)])
def test_update_bound_holds_for_any_gradient_and_state(config):
    net = net_of(5, **config).double()
    bound = update_bound(net)
    assert math.isfinite(bound)
    weights = fuse_weights(net)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(500, net.config.state_rows, net.config.hidden_size, generator=g,
                         dtype=torch.float64) * 50
    hidden[:, -1, 4:8] = torch.rand(500, 4, generator=g, dtype=torch.float64)  # weights in (0,1)
    hidden[:, -1, 3] = hidden[:, -1, 3].abs()  # a second moment is >= 0
    grad = torch.randn(500, generator=g, dtype=torch.float64) * 1e6
    update, _ = lstm_step(grad, hidden, weights)
    assert update.abs().max() <= bound


def test_meta_gradient_reaches_every_weight():
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**ADAPTIVE), seed=0)
    grads = [mixed_gradients(30, seed=s) for s in range(3)]
    weights = fuse_weights(net)
    hidden = net.initial_state(30)
    total = 0.0
    for grad in grads:
        (update,), (hidden,) = lstm_update([grad], [hidden], weights)
        total = total + update.square().sum()
    total.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_old_configs_without_the_new_fields_still_load():
    old = dict(hidden_size=20, num_layers=2, preprocessing="log_sign", p=10.0, output_scale=0.1)
    config = LSTMOptimizerConfig.from_dict(old)
    assert (config.features, config.update, config.magnitude_scale) == \
        ("gradient", "additive", 1.0)
    assert config.state_rows == 4 and config.input_size == 2


@pytest.mark.parametrize("fields,message", [
    (dict(features="momentum"), "features='momentum'.*'gradient', 'adaptive'"),
    (dict(update="multiplicative"), "update='multiplicative'"),
    (dict(magnitude_scale=0.0), "magnitude_scale=0.0"),
    (dict(magnitude_scale=float("inf")), "magnitude_scale=inf"),
    (dict(features="adaptive", hidden_size=6), "hidden_size=6.*at least 8"),
    (dict(update="direction_magnitude"), "update='direction_magnitude'.*unless "
                                         "features='adaptive'"),
    (dict(features="adaptive", nominal_step=True), "nominal_step=True.*unless "
                                                    "update='direction_magnitude'"),
    (dict(ADAPTIVE, nominal_step=1), "nominal_step=1.*true or false"),
])
def test_bad_new_fields_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        LSTMOptimizerConfig(**fields)


def test_optimizer_keeps_the_accumulators_through_state_dict(tmp_path):
    bundle = WeightsBundle({"fc": net_of(6, **ADAPTIVE)}, name="adaptive-test")
    bundle.save_pretrained(tmp_path / "b")

    def model_and_optimizer():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        return model, LearnedLSTMOptim(model.parameters(), weights=str(tmp_path / "b"))

    def train(model, optimizer, steps, start):
        for step in range(start, start + steps):
            x = torch.randn(16, 5, generator=torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()

    model, optimizer = model_and_optimizer()
    train(model, optimizer, 3, 0)
    state = optimizer.state[model[0].weight]["hidden"]
    assert state.shape == (20, 5, 20)
    assert (state[:, 4, 4:8] > 0).all()  # bias-correction weights have started to grow
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    train(model, optimizer, 3, 3)
    resumed_model, resumed = model_and_optimizer()
    resumed_model.load_state_dict(saved_model)
    resumed.load_state_dict(saved)
    train(resumed_model, resumed, 3, 3)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


# -- parameter_feature: the parameter value as one more input ----------------------------------

WITH_PARAM = dict(ADAPTIVE, parameter_feature=True)


def test_parameter_feature_is_the_clipped_value_read_by_the_head_and_the_lstm():
    net = net_of(7, **WITH_PARAM).double()
    assert net.config.input_size == 5 and net.cells[0].weight_ih.shape[1] == 5
    assert net.head.weight.shape == (2, 20 + 5)
    grads = [torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
             for s in range(3)]
    values = [torch.linspace(-30, 30, 50, dtype=torch.float64)] * 3
    moved, _ = run_steps(net, grads, values=values)
    same, _ = run_steps(net, grads, values=[v.clamp(-FEATURE_CLIP, FEATURE_CLIP) for v in values])
    assert all(torch.equal(a, b) for a, b in zip(moved, same))  # clipped to +-10
    other, _ = run_steps(net, grads, values=[v * 0.5 for v in values])
    assert not torch.allclose(moved[0], other[0])  # the step depends on θ
    # with θ's column of the first layer and of the head at zero, θ changes nothing
    zeroed = copy.deepcopy(net)
    zeroed.cells[0].weight_ih[:, 4] = 0.0
    zeroed.head.weight[:, -1] = 0.0
    first, _ = run_steps(zeroed, grads, values=values)
    second, _ = run_steps(zeroed, grads, values=[v * 0.5 for v in values])
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_untrained_net_with_a_parameter_feature_still_starts_like_adam():
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**WITH_PARAM), seed=0)
    assert torch.equal(net.head.weight[:, 20:], torch.tensor([[0.0, 0, -1, 0, 0], [0, 0, 0, 0, 0]]))


@pytest.mark.parametrize("chunk_size,split", [(1, None), (7, None), (64, [5, 300, 3, 93])])
def test_parameter_feature_is_bit_exact_across_chunks_and_splits(chunk_size, split):
    net = net_of(2, **WITH_PARAM)
    grads = [mixed_gradients(401, seed=s) for s in range(3)]
    values = [mixed_gradients(401, seed=10 + s) * 1e3 for s in range(3)]
    whole, whole_hidden = run_steps(net, grads, values=values)
    parts, parts_hidden = run_steps(net, grads, chunk_size, split, values=values)
    assert all(torch.equal(a, b) for a, b in zip(whole, parts))
    assert torch.equal(whole_hidden, parts_hidden)


@pytest.mark.parametrize("rows", [1, 37])
def test_parameter_feature_in_place_step_is_bit_identical(rows):
    net = net_of(4, **WITH_PARAM)
    weights = fuse_weights(net)
    hidden = net.initial_state(rows)
    workspace = StepWorkspace(64, net.config)
    workspace.param.fill_(float("nan"))  # the padding must not be read
    workspace.hidden[:rows] = hidden
    for seed in range(3):
        grad, value = mixed_gradients(rows, seed=seed), mixed_gradients(rows, seed=5 + seed)
        expected_update, hidden = lstm_step(grad, hidden, weights, value)
        workspace.grad[:rows], workspace.param[:rows] = grad, value
        assert torch.equal(lstm_step_(workspace, rows, weights), expected_update)
        assert torch.equal(workspace.hidden[:rows], hidden)
    assert workspace.nbytes <= step_memory_bytes(64, net.config)


def test_a_net_reading_the_parameter_needs_its_value():
    net = net_of(1, **WITH_PARAM)
    with pytest.raises(ValueError, match=r"parameter_feature=True\): pass param="):
        lstm_step(torch.ones(3), net.initial_state(3), fuse_weights(net))
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        lstm_step(torch.ones(3), net.initial_state(3), fuse_weights(net), torch.ones(4))


def test_parameter_feature_needs_adaptive_features_and_is_off_in_old_configs():
    with pytest.raises(ConfigError, match="parameter_feature=True.*unless features='adaptive'"):
        LSTMOptimizerConfig(parameter_feature=True)
    with pytest.raises(ConfigError, match="parameter_feature=1"):
        LSTMOptimizerConfig(features="adaptive", parameter_feature=1)
    old = LSTMOptimizerConfig.from_dict(dict(ADAPTIVE, hidden_size=20, num_layers=2,
                                             preprocessing="log_sign", p=10.0))
    assert old.parameter_feature is False and old.input_size == 4


def test_optimizer_feeds_each_parameter_its_own_value(tmp_path):
    """LearnedLSTMOptim's step equals lstm_update given θ, for a contiguous and a transposed
    (non-contiguous) parameter, in blocks that span both."""
    net = net_of(8, **WITH_PARAM)
    WeightsBundle({"fc": net}, name="param-feature-test").save_pretrained(tmp_path / "b")
    g = torch.Generator().manual_seed(0)
    plain = torch.nn.Parameter(torch.randn(6, 5, generator=g) * 4)
    transposed = torch.nn.Parameter((torch.randn(7, 3, generator=g) * 4).t())
    params = [plain, transposed]
    assert not transposed.is_contiguous()
    optimizer = LearnedLSTMOptim(params, weights=str(tmp_path / "b"), chunk_size=8)
    weights = fuse_weights(net)
    hidden = [net.initial_state(p.numel()) for p in params]
    for step in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        before = [p.detach().clone() for p in params]
        updates, hidden = lstm_update([gr.reshape(-1) for gr in grads], hidden, weights,
                                      params=[b.reshape(-1) for b in before])
        for p, gr in zip(params, grads):
            p.grad = gr
        optimizer.step()
        for p, b, u in zip(params, before, updates):
            torch.testing.assert_close(p.detach(), b + u.view(b.shape), rtol=0, atol=1e-6)


# -- tensor_feature: each tensor's gradient signal-to-noise ratio as one more input -----------

WITH_TENSOR = dict(ADAPTIVE, tensor_feature=True)
WITH_CHANGE = dict(WITH_TENSOR, tensor_statistic="gradient_change")
WITH_SCALE = dict(NOMINAL, hypergradient_rate=0.3)  # each tensor's steps scaled (rate 0.3)
# the same scale shrinking 3x faster than it grows, within [1/e, e]
WITH_SHRINK = dict(WITH_SCALE, hypergradient_shrink=3.0, step_scale_bound=1.0)


def reference_signal_to_noise(grads):
    """Mean over coordinates of clip(|m̂_0.9| / (sqrt(v̂) + 1e-12), 0, 10) after ``grads``, in
    plain Python floats, with Adam's bias correction (1 - beta^t)."""
    n, t = grads[0].shape[0], len(grads)
    total = 0.0
    for k in range(n):
        m = v = 0.0
        for grad in grads:
            g = float(grad[k])
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        ratio = abs(m / (1 - 0.9 ** t)) / (math.sqrt(v / (1 - 0.999 ** t)) + 1e-12)
        total += min(ratio, FEATURE_CLIP)
    return total / n


def test_tensor_feature_is_each_tensors_mean_adam_ratio_after_the_step():
    net = net_of(9, **WITH_TENSOR).double()
    assert net.config.input_size == 5 and net.head.weight.shape == (2, 25)
    g = torch.Generator().manual_seed(0)
    # tensor 0 gets consistent gradients (ratio near 1), tensor 1 pure noise (ratio small)
    grads = [torch.cat([1.0 + 0.1 * torch.randn(6, generator=g, dtype=torch.float64),
                        torch.randn(40, generator=g, dtype=torch.float64)]) for _ in range(12)]
    weights, hidden = fuse_weights(net), [net.initial_state(n, dtype=torch.float64) for n in (6, 40)]
    for step, grad in enumerate(grads):
        _, hidden = lstm_update(list(grad.split([6, 40])), hidden, weights)
        for index, (start, stop) in enumerate([(0, 6), (6, 46)]):
            column = hidden[index][:, 4, 8]
            want = reference_signal_to_noise([gr[start:stop] for gr in grads[:step + 1]])
            torch.testing.assert_close(column, torch.full_like(column, want), rtol=1e-12, atol=0)
    assert float(hidden[0][0, 4, 8]) > 0.9 and float(hidden[1][0, 4, 8]) < 0.5


def test_tensor_feature_is_read_at_the_next_step_by_the_lstm_and_the_head():
    net = net_of(10, **WITH_TENSOR).double()
    grads = [torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
             for s in range(4)]
    whole, _ = run_steps(net, grads)
    split, _ = run_steps(net, grads, split=[10, 20])  # other tensors, other feature values
    # the first step reads the fresh state's 0, the second 1 (one gradient: |m̂| = sqrt(v̂))
    assert torch.equal(whole[0], split[0])
    torch.testing.assert_close(whole[1], split[1], rtol=1e-9, atol=0)
    assert not torch.allclose(whole[2], split[2])
    silent = copy.deepcopy(net)  # with its column of the first layer and head at zero ...
    with torch.no_grad():
        silent.cells[0].weight_ih[:, 4] = 0.0
        silent.head.weight[:, -1] = 0.0
    whole, _ = run_steps(silent, grads)
    split, _ = run_steps(silent, grads, split=[10, 20])
    assert all(torch.equal(a, b) for a, b in zip(whole, split))  # ... it changes nothing


def test_untrained_net_with_a_tensor_feature_still_starts_like_adam():
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**WITH_TENSOR), seed=0)
    assert torch.equal(net.head.weight[:, 20:], torch.tensor([[0.0, 0, -1, 0, 0], [0, 0, 0, 0, 0]]))


@pytest.mark.parametrize("config", [WITH_TENSOR, WITH_CHANGE, WITH_SCALE, WITH_SHRINK],
                         ids=["snr", "change", "step-scale", "step-scale-shrink"])
def test_per_tensor_nets_are_scale_free_and_bit_exact_across_chunks(config):
    net = net_of(11, **config)
    grads = [mixed_gradients(401, seed=s) for s in range(4)]
    split = [5, 300, 3, 93]
    whole, whole_hidden = run_steps(net, grads, split=split)
    for chunk_size in (1, 7, 64):
        parts, parts_hidden = run_steps(net, grads, chunk_size=chunk_size, split=split)
        assert all(torch.equal(a, b) for a, b in zip(whole, parts))
        assert torch.equal(whole_hidden, parts_hidden)
    double = net.double()
    grads = [torch.randn(401, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
             for s in range(4)]  # far above epsilon = 1e-12, unlike mixed_gradients
    base, _ = run_steps(double, grads, split=split)
    scaled, _ = run_steps(double, [g * 1e4 for g in grads], split=split)
    for a, b in zip(base, scaled):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("config", [WITH_TENSOR, WITH_CHANGE, WITH_SCALE, WITH_SHRINK],
                         ids=["snr", "change", "step-scale", "step-scale-shrink"])
def test_per_tensor_in_place_step_is_bit_identical(config):
    net = net_of(12, **config)
    weights = fuse_weights(net)
    hidden = net.initial_state(37)
    hidden[:, 4, 8] = 0.7  # as with_tensor_feature (with_step_scale for WITH_SCALE) leaves it
    hidden[:, 4, 9:] = torch.randn(37, 11, generator=torch.Generator().manual_seed(5))
    workspace = StepWorkspace(64, net.config)
    workspace.hidden[:37] = hidden
    for seed in range(3):
        workspace.grad[:37] = grad = mixed_gradients(37, seed=seed)
        expected_update, hidden = lstm_step(grad, hidden, weights)
        assert torch.equal(lstm_step_(workspace, 37, weights), expected_update)
        assert torch.equal(workspace.hidden[:37], hidden)
    assert float(hidden[0, 4, 8]) == pytest.approx(0.7)  # kept for the caller to refresh
    assert workspace.nbytes <= step_memory_bytes(64, net.config)


def test_tensor_feature_needs_adaptive_features_and_is_off_in_old_configs():
    with pytest.raises(ConfigError, match="tensor_feature=True.*unless features='adaptive'"):
        LSTMOptimizerConfig(tensor_feature=True)
    with pytest.raises(ConfigError, match="hidden_size=8.*at least 9 .*tensor_feature=True"):
        LSTMOptimizerConfig(**dict(WITH_TENSOR, hidden_size=8))
    old = LSTMOptimizerConfig.from_dict(dict(ADAPTIVE, hidden_size=20, num_layers=2,
                                             preprocessing="log_sign", p=10.0))
    assert old.tensor_feature is False and old.input_size == 4


def reference_gradient_change(latest, previous):
    """clip(log(|latest - previous| / |previous|), -10, 10) in plain Python floats."""
    change = math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(latest, previous)))
    before = math.sqrt(sum(float(b) ** 2 for b in previous))
    return min(max(math.log(change / before), -FEATURE_CLIP), FEATURE_CLIP)


def test_gradient_change_feature_is_each_tensors_log_relative_change_after_the_step():
    net = net_of(14, **WITH_CHANGE).double()
    assert net.config.input_size == 5 and net.config.gradient_column == 9
    g = torch.Generator().manual_seed(1)
    # tensor 0's gradient shrinks slowly along one direction (steps too small: rho << 0),
    # tensor 1's is noise (rho near log sqrt(2))
    direction = torch.randn(6, generator=g, dtype=torch.float64)
    grads = [torch.cat([direction * 0.999 ** t, torch.randn(40, generator=g, dtype=torch.float64)])
             for t in range(5)]
    weights, hidden = fuse_weights(net), [net.initial_state(n, dtype=torch.float64) for n in (6, 40)]
    for step, grad in enumerate(grads):
        _, hidden = lstm_update(list(grad.split([6, 40])), hidden, weights)
        for index, (start, stop) in enumerate([(0, 6), (6, 46)]):
            state = hidden[index][:, 4]
            previous = grads[step - 1][start:stop] if step else torch.zeros(stop - start,
                                                                            dtype=torch.float64)
            assert torch.equal(state[:, 9], grad[start:stop]) and torch.equal(state[:, 10],
                                                                              previous)
            want = reference_gradient_change(grad[start:stop], previous) if step else 0.0
            torch.testing.assert_close(state[:, 8], torch.full_like(state[:, 8], want),
                                       rtol=1e-12, atol=1e-12)
    assert float(hidden[0][0, 4, 8]) == pytest.approx(math.log(1e-3), rel=1e-3)
    assert abs(float(hidden[1][0, 4, 8]) - math.log(2) / 2) < 0.5


def test_gradient_change_feature_is_minus_ten_for_a_constant_gradient_and_finite_for_huge_ones():
    config = LSTMOptimizerConfig(**WITH_CHANGE)
    hidden = torch.zeros(3, config.state_rows, config.hidden_size)
    rows = accumulator_row(hidden, config)  # a view: the writes below reach it
    assert float(tensor_statistic(rows, config)) == 0.0  # fresh: no previous gradient
    assert tensor_statistic(rows[:0], config).shape == ()
    hidden[:, 4, 9:11] = torch.tensor([[2.0, 2.0], [-1.0, -1.0], [0.5, 0.5]])
    assert float(tensor_statistic(rows, config)) == -FEATURE_CLIP
    hidden[:, 4, 9:11] = torch.tensor([[3e38, -3e38], [1e38, 1e38], [0.0, 0.0]])
    value = float(tensor_statistic(rows, config))
    assert value == pytest.approx(math.log(6e38 / math.hypot(3e38, 1e38)), rel=1e-5)
    hidden[:, 4, 9:11] = torch.tensor([[1.0, 1e-6], [0.0, 0.0], [0.0, 0.0]])
    assert float(tensor_statistic(rows, config)) == FEATURE_CLIP  # clipped at 10
    assert float(tensor_statistic(rows, LSTMOptimizerConfig(**WITH_TENSOR))) != FEATURE_CLIP


def test_tensor_statistic_option_is_validated_and_signal_to_noise_in_old_configs():
    with pytest.raises(ConfigError, match="tensor_statistic='change'.*one of"):
        LSTMOptimizerConfig(**dict(WITH_TENSOR, tensor_statistic="change"))
    with pytest.raises(ConfigError, match="tensor_statistic.*unless tensor_feature=True"):
        LSTMOptimizerConfig(**dict(ADAPTIVE, tensor_statistic="gradient_change"))
    with pytest.raises(ConfigError, match="hidden_size=10.*at least 11 .*gradient_change"):
        LSTMOptimizerConfig(**dict(WITH_CHANGE, hidden_size=10))
    LSTMOptimizerConfig(**dict(WITH_CHANGE, hidden_size=11))
    old = LSTMOptimizerConfig.from_dict(dict(WITH_TENSOR, hidden_size=20, num_layers=2,
                                             preprocessing="log_sign", p=10.0))
    assert old.tensor_statistic == "signal_to_noise" and not old.keeps_gradients
    both = LSTMOptimizerConfig(**dict(WITH_CHANGE, progress_feature=True))
    assert (both.progress_column, both.gradient_column) == (9, 10)


@pytest.mark.parametrize("config", [WITH_TENSOR, WITH_CHANGE, WITH_SCALE, WITH_SHRINK],
                         ids=["snr", "change", "step-scale", "step-scale-shrink"])
def test_optimizer_gives_each_parameter_its_own_tensor_state_and_keeps_it(tmp_path, config):
    """LearnedLSTMOptim equals lstm_update for a per-tensor net, in blocks that span and
    split parameters, and its state_dict carries the feature (and, for gradient_change, the
    last two gradients; for the step scale, the scale and the previous step) to a resumed
    optimizer."""
    net = net_of(13, **config)
    WeightsBundle({"fc": net}, name="tensor-feature-test").save_pretrained(tmp_path / "b")
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(6, 5, generator=g)),
              torch.nn.Parameter(torch.randn(3, generator=g))]
    optimizer = LearnedLSTMOptim(params, weights=str(tmp_path / "b"), chunk_size=8)
    weights = fuse_weights(net)
    hidden = [net.initial_state(p.numel()) for p in params]
    all_grads = [[torch.randn(p.shape, generator=g) + 0.5 for p in params] for _ in range(6)]
    for step, grads in enumerate(all_grads[:4]):
        before = [p.detach().clone() for p in params]
        updates, hidden = lstm_update([gr.reshape(-1) for gr in grads], hidden, weights)
        for p, gr in zip(params, grads):
            p.grad = gr
        optimizer.step()
        for p, b, u in zip(params, before, updates):
            torch.testing.assert_close(p.detach(), b + u.view(b.shape), rtol=0, atol=1e-6)
        if step == 1:
            saved = copy.deepcopy(optimizer.state_dict())
            saved_params = [p.detach().clone() for p in params]
    for p, h in zip(params, hidden):
        torch.testing.assert_close(optimizer.state[p]["hidden"], h, rtol=0, atol=1e-6)
    resumed_params = [torch.nn.Parameter(v) for v in saved_params]
    resumed = LearnedLSTMOptim(resumed_params, weights=str(tmp_path / "b"), chunk_size=8)
    resumed.load_state_dict(saved)
    for grads in all_grads[2:4]:
        for p, gr in zip(resumed_params, grads):
            p.grad = gr
        resumed.step()
    for a, b in zip(params, resumed_params):
        assert torch.equal(a, b)


# -- progress_feature: the fraction of the run done, t / T, as one more input ------------------

WITH_PROGRESS = dict(ADAPTIVE, progress_feature=True)


def test_run_progress_is_the_fraction_done_clipped_to_one_and_zero_when_unknown():
    assert [run_progress(t, 8) for t in (0, 2, 8, 20)] == [0.0, 0.25, 1.0, 1.0]
    assert run_progress(5, None) == 0.0


def progress_steps(net, grads, total_steps, chunk_size=None, split=None):
    """lstm_update over ``grads`` told the progress t / total_steps of each step."""
    weights = fuse_weights(net)
    parts = split or [grads[0].shape[0]]
    hidden = [net.initial_state(n, dtype=grads[0].dtype) for n in parts]
    updates = []
    for t, grad in enumerate(grads):
        ups, hidden = lstm_update(list(grad.split(parts)), hidden, weights,
                                  chunk_size=chunk_size, progress=run_progress(t, total_steps))
        updates.append(torch.cat(ups))
    return updates, hidden


def test_progress_is_written_before_each_step_and_read_by_the_lstm_and_the_head():
    net = net_of(14, **WITH_PROGRESS).double()
    assert net.config.input_size == 5 and net.config.progress_column == 8
    grads = [torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
             for s in range(4)]
    short, hidden = progress_steps(net, grads, total_steps=4)
    assert torch.equal(hidden[0][:, 4, 8], torch.full((30,), 0.75, dtype=torch.float64))
    long, _ = progress_steps(net, grads, total_steps=400)
    assert torch.equal(short[0], long[0])  # t = 0: both read 0
    assert not torch.allclose(short[1], long[1])  # 0.25 against 0.0025
    with torch.no_grad():  # silence the head's progress column: the LSTM still reads it
        only_lstm = copy.deepcopy(net)
        only_lstm.head.weight[:, -1] = 0.0
        only_head = copy.deepcopy(net)
        only_head.cells[0].weight_ih[:, 4] = 0.0
        silent = copy.deepcopy(only_lstm)
        silent.cells[0].weight_ih[:, 4] = 0.0
    for reader in (only_lstm, only_head):
        a, _ = progress_steps(reader, grads, total_steps=4)
        b, _ = progress_steps(reader, grads, total_steps=400)
        assert not torch.allclose(a[1], b[1])
    a, _ = progress_steps(silent, grads, total_steps=4)
    b, _ = progress_steps(silent, grads, total_steps=None)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_progress_feature_is_bit_exact_across_chunks_and_splits_and_starts_like_adam():
    net = net_of(15, **WITH_PROGRESS)
    grads = [mixed_gradients(401, seed=s) for s in range(4)]
    whole, whole_hidden = progress_steps(net, grads, 6, split=[5, 300, 3, 93])
    for chunk_size in (1, 7, 64):
        parts, parts_hidden = progress_steps(net, grads, 6, chunk_size=chunk_size)
        assert all(torch.equal(a, b) for a, b in zip(whole, parts))
        assert torch.equal(torch.cat(whole_hidden), torch.cat(parts_hidden))
    fresh = LSTMOptimizerNet(LSTMOptimizerConfig(**WITH_PROGRESS), seed=0)
    assert torch.equal(fresh.head.weight[:, 20:],
                       torch.tensor([[0.0, 0, -1, 0, 0], [0, 0, 0, 0, 0]]))


def test_progress_in_place_write_and_step_are_bit_identical():
    net = net_of(16, **WITH_PROGRESS, tensor_feature=True)
    assert net.config.progress_column == 9  # after the tensor feature
    weights = fuse_weights(net)
    hidden = net.initial_state(37)
    workspace = StepWorkspace(64, net.config)
    for t in range(3):
        expected = with_progress(hidden, run_progress(t, 3), net.config)
        write_progress_(accumulator_row(hidden, net.config), run_progress(t, 3), net.config)
        assert torch.equal(hidden, expected)
        workspace.hidden[:37] = hidden
        workspace.grad[:37] = grad = mixed_gradients(37, seed=t)
        expected_update, hidden = lstm_step(grad, hidden, weights)
        assert torch.equal(lstm_step_(workspace, 37, weights), expected_update)
        assert torch.equal(workspace.hidden[:37], hidden)


def test_a_net_reading_the_progress_needs_it_and_old_configs_have_it_off():
    net = net_of(17, **WITH_PROGRESS)
    with pytest.raises(ValueError, match="progress_feature=True.*progress=run_progress"):
        lstm_update([torch.ones(3)], [net.initial_state(3)], fuse_weights(net))
    with pytest.raises(ConfigError, match="progress_feature=True.*unless features='adaptive'"):
        LSTMOptimizerConfig(progress_feature=True)
    with pytest.raises(ConfigError, match="hidden_size=9.*at least 10 .*progress_feature=True"):
        LSTMOptimizerConfig(**dict(WITH_PROGRESS, tensor_feature=True, hidden_size=9))
    old = LSTMOptimizerConfig.from_dict(dict(ADAPTIVE, hidden_size=20, num_layers=2,
                                             preprocessing="log_sign", p=10.0))
    assert old.progress_feature is False and old.input_size == 4


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_invalid_total_steps_is_refused_by_name(bad):
    params = [torch.nn.Parameter(torch.zeros(3))]
    net = net_of(0, **WITH_PROGRESS)
    with pytest.raises(ValueError, match="Invalid total_steps"):
        LearnedLSTMOptim(params, weights=net, total_steps=bad)
    optimizer = LearnedLSTMOptim(params, weights=net, total_steps=10)
    with pytest.raises(ValueError, match="Invalid total_steps"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))],
                                   "total_steps": bad})
    assert len(optimizer.param_groups) == 1


def test_optimizer_tells_the_net_t_over_total_steps_and_resumes_exactly(tmp_path):
    """LearnedLSTMOptim(total_steps=T) equals lstm_update with progress t / T at step t, per
    param group, and a resumed optimizer goes on from the saved step count."""
    net = net_of(18, **WITH_PROGRESS)
    WeightsBundle({"fc": net}, name="progress-test").save_pretrained(tmp_path / "b")
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(6, 5, generator=g)),
              torch.nn.Parameter(torch.randn(3, generator=g))]
    optimizer = LearnedLSTMOptim([{"params": params[:1], "total_steps": 4},
                                  {"params": params[1:]}], weights=str(tmp_path / "b"),
                                 chunk_size=8, total_steps=6)
    weights = fuse_weights(net)
    hidden = [net.initial_state(p.numel()) for p in params]
    all_grads = [[torch.randn(p.shape, generator=g) + 0.5 for p in params] for _ in range(6)]
    for step, grads in enumerate(all_grads):
        before = [p.detach().clone() for p in params]
        for index, total in enumerate((4, 6)):
            [update], [hidden[index]] = lstm_update(
                [grads[index].reshape(-1)], [hidden[index]], weights,
                progress=run_progress(step, total))
            params[index].grad = grads[index]
            if index == 0:
                first_update = update
        optimizer.step()
        torch.testing.assert_close(params[0].detach(), before[0] + first_update.view(6, 5),
                                   rtol=0, atol=1e-6)
        if step == 2:
            saved = copy.deepcopy(optimizer.state_dict())
            saved_params = [p.detach().clone() for p in params]
    for p, h in zip(params, hidden):
        torch.testing.assert_close(optimizer.state[p]["hidden"], h, rtol=0, atol=1e-6)
    resumed_params = [torch.nn.Parameter(v) for v in saved_params]
    resumed = LearnedLSTMOptim([{"params": resumed_params[:1]}, {"params": resumed_params[1:]}],
                               weights=str(tmp_path / "b"), chunk_size=8)
    resumed.load_state_dict(saved)  # brings total_steps back with the groups
    assert [grp["total_steps"] for grp in resumed.param_groups] == [4, 6]
    for grads in all_grads[3:]:
        for p, gr in zip(resumed_params, grads):
            p.grad = gr
        resumed.step()
    for a, b in zip(params, resumed_params):
        assert torch.equal(a, b)


def test_nets_without_the_progress_input_ignore_total_steps():
    net = net_of(19, **ADAPTIVE)
    results = []
    for total in (None, 3):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 7))
        optimizer = LearnedLSTMOptim([p], weights=net, total_steps=total)
        for _ in range(4):
            p.grad = p.detach() * 2 - 0.3
            optimizer.step()
        results.append(p.detach())
    assert torch.equal(*results)


def test_a_state_dict_saved_before_total_steps_existed_still_loads():
    net = net_of(20, **ADAPTIVE)
    p = torch.nn.Parameter(torch.ones(4))
    optimizer = LearnedLSTMOptim([p], weights=net)
    p.grad = torch.ones(4)
    optimizer.step()
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        del group["total_steps"]
    resumed = LearnedLSTMOptim([torch.nn.Parameter(p.detach().clone())], weights=net,
                               total_steps=50)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["total_steps"] == 50
    resumed.param_groups[0]["params"][0].grad = torch.ones(4)
    resumed.step()


def test_model_card_names_the_tensor_statistic():
    from learned_optim.model_card import model_card_text
    cards = {name: model_card_text(WeightsBundle({"fc": net_of(0, **config)}, name=name))
             for name, config in [("snr", WITH_TENSOR), ("change", WITH_CHANGE)]}
    assert "signal-to-noise" in cards["snr"] and "gradient change" not in cards["snr"]
    assert "log relative gradient change" in cards["change"]
    assert "signal-to-noise" not in cards["change"]


def test_model_card_says_a_nominal_step_net_adds_a_fixed_adam_step():
    from learned_optim.model_card import model_card_text
    cards = {name: model_card_text(WeightsBundle({"fc": net_of(0, **config)}, name=name))
             for name, config in [("plain", ADAPTIVE), ("nominal", NOMINAL),
                                  ("warmup", WARMUP)]}
    assert "plus a fixed Adam step" in cards["nominal"]
    assert "Adam step" not in cards["plain"]
    assert "ramped" not in cards["nominal"]
    assert ("plus a fixed Adam step, the learned part ramped up over the first 3 steps"
            in cards["warmup"])


# -- hypergradient_rate: each tensor's steps scaled by a factor adapted online ----------------


def reference_log_scales(unscaled, splits, beta, step_scale_bound=math.log(100.0),
                         hypergradient_shrink=1.0):
    """ℓ_t of every tensor in plain Python floats: ℓ_0 = 0 and
    ℓ_t = clip(ℓ_{t-1} - β k^[c > 0] c, ±B) with c = cos(∇_t, g_{t-1}), from the steps
    ``unscaled`` of the same net without the scale (the scale changes no state the LSTM
    reads)."""
    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return dot / norms if norms > 0 else 0.0

    def moved(ell, c):
        bound, shrink = step_scale_bound, hypergradient_shrink
        return min(max(ell - beta * (shrink if c > 0 else 1.0) * c, -bound), bound)

    scales, now = [], [0.0] * len(splits)
    for step, (grad, _) in enumerate(unscaled):
        if step:
            previous = unscaled[step - 1][1]
            now = [moved(ell, cosine(g.tolist(), d.tolist()))
                   for ell, g, d in zip(now, grad.split(splits), previous.split(splits))]
        scales.append(list(now))
    return scales


@pytest.mark.parametrize("beta,rule", [(0.3, {}), (1.0, {}),
                                       (0.3, dict(step_scale_bound=0.5)),
                                       (0.3, dict(hypergradient_shrink=4.0)),
                                       (1.0, dict(step_scale_bound=1.5, hypergradient_shrink=3.0))])
def test_each_tensors_step_is_scaled_by_its_hypergradient_adapted_factor(beta, rule):
    """The steps equal those of the same net without the scale times e^{ℓ_t}, with ℓ_t the
    reference's for each tensor (with the config's bound B and shrink factor k); ℓ is kept
    in the state, and stays within ±B."""
    splits = [6, 40]
    plain = net_of(20, **NOMINAL).double()
    scaled_net = LSTMOptimizerNet(LSTMOptimizerConfig(**dict(NOMINAL, hypergradient_rate=beta,
                                                             **rule)))
    scaled_net.load_state_dict(plain.state_dict())
    scaled_net = scaled_net.double().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(46, generator=g, dtype=torch.float64) + 0.5 for _ in range(12)]
    unscaled, _ = run_steps(plain, grads, split=splits)
    want = reference_log_scales(list(zip(grads, unscaled)), splits, beta, **rule)
    weights = fuse_weights(scaled_net)
    hidden = [scaled_net.initial_state(n, dtype=torch.float64) for n in splits]
    column = scaled_net.config.step_scale_column
    for step, grad in enumerate(grads):
        updates, hidden = lstm_update(list(grad.split(splits)), hidden, weights)
        for update, plain_update, state, ell in zip(updates, unscaled[step].split(splits),
                                                    hidden, want[step]):
            torch.testing.assert_close(state[:, 4, column], torch.full_like(state[:, 4, 0], ell),
                                       rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(update, plain_update * math.exp(ell), rtol=1e-12,
                                       atol=0)
    assert any(abs(ell) > 0.1 for ells in want for ell in ells)  # the scale did move
    if "step_scale_bound" in rule:  # the bound was reached, and held
        assert max(abs(ell) for ells in want for ell in ells) == rule["step_scale_bound"]


def test_step_scale_grows_while_steps_go_downhill_and_shrinks_when_they_overshoot():
    """With a silent head the net is Adam(lr=output_scale) (nominal_step): under a constant
    gradient every step goes against the next gradient (cos = -1, ℓ grows by β a step up to
    ln 100); under a gradient that flips sign every step, every step overshoots (ℓ falls)."""
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**dict(NOMINAL, hypergradient_rate=1.0)))
    with torch.no_grad():
        net.head.weight.zero_()
    net.requires_grad_(False)
    weights, column = fuse_weights(net), net.config.step_scale_column
    for sign_flip, want in ((1.0, [0.0, 1.0, 2.0, 3.0, 4.0, math.log(100.0)]),
                            (-1.0, [0.0, -1.0, -2.0, -3.0, -4.0, -math.log(100.0)])):
        hidden = net.initial_state(5)
        seen = []
        for step in range(6):
            grad = torch.full((5,), 0.7) * sign_flip ** step  # Adam's step: ∓lr each
            _, (hidden,) = lstm_update([grad], [hidden], weights)
            seen.append(float(hidden[0, 4, column]))
        assert seen == pytest.approx(want, abs=1e-6)


def test_step_scale_shrinks_k_times_faster_than_it_grows_and_stops_at_its_bound():
    """hypergradient_shrink k: after an overshoot (cos = +1) ℓ falls by kβ, after a step
    that kept going downhill (cos = -1) it grows by β; step_scale_bound B caps |ℓ| (the
    silent-head net of the test above: Adam(lr=output_scale) steps)."""
    config = LSTMOptimizerConfig(**dict(NOMINAL, hypergradient_rate=0.5, hypergradient_shrink=3.0,
                                        step_scale_bound=1.2))
    net = LSTMOptimizerNet(config)
    with torch.no_grad():
        net.head.weight.zero_()
    net.requires_grad_(False)
    weights, column = fuse_weights(net), config.step_scale_column
    # Adam's steps stay negative (its momentum outweighs a single flipped gradient), so a
    # positive gradient says the last step went downhill (+β) and a negative one that it
    # overshot (-kβ = -1.5): three downhill (the third capped at B = 1.2), overshoot,
    # downhill, overshoot (capped at -B)
    signs = [1, 1, 1, 1, -1, 1, -1]
    want = [0.0, 0.5, 1.0, 1.2, -0.3, 0.2, -1.2]
    hidden, seen = net.initial_state(5), []
    for sign in signs:
        _, (hidden,) = lstm_update([torch.full((5,), 0.7 * sign)], [hidden], weights)
        seen.append(float(hidden[0, 4, column]))
    assert seen == pytest.approx(want, abs=1e-6)


def test_a_tighter_step_scale_bound_tightens_update_bound():
    loose = net_of(5, **dict(NOMINAL, hypergradient_rate=0.3))
    tight = LSTMOptimizerNet(LSTMOptimizerConfig(**dict(NOMINAL, hypergradient_rate=0.3,
                                                        step_scale_bound=math.log(10.0))))
    tight.load_state_dict(loose.state_dict())
    assert update_bound(tight) == pytest.approx(update_bound(loose) / 10, rel=1e-12)


def test_step_scale_is_zero_for_a_fresh_state_and_finite_for_any_input():
    config = LSTMOptimizerConfig(**WITH_SCALE)
    fresh = LSTMOptimizerNet(config).initial_state(4)
    assert float(tensor_step_scale(fresh[:, 4], torch.randn(4), config)) == 0.0
    assert float(tensor_step_scale(fresh[:0, 4], torch.zeros(0), config)) == 0.0
    state = fresh.clone()
    state[:, 4, config.step_scale_column + 1] = torch.tensor([3e38, -3e38, float("nan"), 1.0])
    grad = torch.tensor([float("inf"), 3e38, 1.0, -3e38])
    value = tensor_step_scale(state[:, 4], grad, config)
    assert torch.isfinite(value) and abs(float(value)) <= math.log(100.0)
    # maximize: the net steps along -∇, so the cosine's sign flips
    state[:, 4, config.step_scale_column + 1] = -torch.ones(4)
    down = float(tensor_step_scale(state[:, 4], torch.ones(4), config))
    assert down == pytest.approx(0.3) and float(
        tensor_step_scale(state[:, 4], torch.ones(4), config, maximize=True)) == pytest.approx(-0.3)


def test_optimizer_scales_maximize_steps_like_the_update_rule_on_the_negated_gradient(tmp_path):
    net = net_of(21, **WITH_SCALE)
    WeightsBundle({"fc": net}, name="step-scale-test").save_pretrained(tmp_path / "b")
    g = torch.Generator().manual_seed(1)
    param = torch.nn.Parameter(torch.randn(30, generator=g))
    optimizer = LearnedLSTMOptim([param], weights=str(tmp_path / "b"), maximize=True)
    weights, hidden = fuse_weights(net), [net.initial_state(30)]
    for _ in range(6):
        grad = torch.randn(30, generator=g) + 1.0
        before = param.detach().clone()
        (update,), hidden = lstm_update([-grad], hidden, weights)
        param.grad = grad
        optimizer.step()
        torch.testing.assert_close(param.detach(), before + update, rtol=0, atol=1e-6)
    column = net.config.step_scale_column
    assert float(optimizer.state[param]["hidden"][0, 4, column]) == pytest.approx(
        float(hidden[0][0, 4, column])) != 0.0


def test_optimizer_step_scale_reads_each_tensors_factor():
    """LearnedLSTMOptim.step_scale(p) is e^ℓ of p's last step: with the silent-head net
    (Adam(lr=output_scale) steps, β = 1) a constant gradient grows ℓ by 1 a step after the
    first, a sign-flipping one shrinks it by 1, each tensor on its own; 1.0 before any step
    and for weights without the rule; a tensor the optimizer does not hold is refused."""
    net = LSTMOptimizerNet(LSTMOptimizerConfig(**dict(NOMINAL, hypergradient_rate=1.0)))
    with torch.no_grad():
        net.head.weight.zero_()
    steady, flipping = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(3))
    optimizer = LearnedLSTMOptim([{"params": [steady]}, {"params": [flipping]}], weights=net)
    assert optimizer.step_scale(steady) == optimizer.step_scale(flipping) == 1.0
    for step in range(4):
        steady.grad, flipping.grad = torch.full((5,), 0.7), torch.full((3,), 0.7 * (-1) ** step)
        optimizer.step()
        assert optimizer.step_scale(steady) == pytest.approx(math.exp(step), rel=1e-5)
        assert optimizer.step_scale(flipping) == pytest.approx(math.exp(-step), rel=1e-5)
    with pytest.raises(ValueError, match="not one of the optimizer's parameters"):
        optimizer.step_scale(torch.nn.Parameter(torch.zeros(5)))
    plain = LearnedLSTMOptim([steady], weights=net_of(5, **NOMINAL))
    steady.grad = torch.ones(5)
    plain.step()
    plain.step()
    assert plain.step_scale(steady) == 1.0


@pytest.mark.parametrize("fields,message", [
    (dict(NOMINAL, step_scale_bound=1.0), "step_scale_bound=1.0.*unless hypergradient_rate > 0"),
    (dict(NOMINAL, hypergradient_shrink=2.0),
     "hypergradient_shrink=2.0.*unless hypergradient_rate > 0"),
    (dict(WITH_SCALE, step_scale_bound=0.0), r"step_scale_bound=0.0.*a number in \(0, ln 100"),
    (dict(WITH_SCALE, step_scale_bound=5.0), r"step_scale_bound=5.0.*a number in \(0, ln 100"),
    (dict(WITH_SCALE, step_scale_bound=float("inf")), "step_scale_bound=inf"),
    (dict(WITH_SCALE, step_scale_bound=True), "step_scale_bound=True"),
    (dict(WITH_SCALE, hypergradient_shrink=0.5), r"hypergradient_shrink=0.5.*\[1, 100\]"),
    (dict(WITH_SCALE, hypergradient_shrink=float("nan")), "hypergradient_shrink=nan"),
    (dict(WITH_SCALE, hypergradient_shrink="3"), "hypergradient_shrink='3'"),
])
def test_bad_step_scale_rules_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        LSTMOptimizerConfig(**fields)


@pytest.mark.parametrize("fields,message", [
    (dict(hypergradient_rate=0.03), "hypergradient_rate=0.03.*unless features='adaptive'"),
    (dict(ADAPTIVE, hypergradient_rate=-0.1), r"hypergradient_rate=-0.1.*a number in \[0, 1\]"),
    (dict(ADAPTIVE, hypergradient_rate=2.0), r"hypergradient_rate=2.0.*a number in \[0, 1\]"),
    (dict(ADAPTIVE, hypergradient_rate=True), "hypergradient_rate=True"),
    (dict(ADAPTIVE, hypergradient_rate=float("nan")), "hypergradient_rate=nan"),
    (dict(ADAPTIVE, hypergradient_rate=0.03, hidden_size=9),
     "hidden_size=9.*at least 10 .*hypergradient_rate > 0"),
])
def test_bad_hypergradient_rates_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        LSTMOptimizerConfig(**fields)


def test_step_scale_is_off_in_old_configs_and_named_by_repr_and_model_card():
    from learned_optim.model_card import model_card_text
    old = LSTMOptimizerConfig.from_dict(dict(ADAPTIVE, hidden_size=20, num_layers=2,
                                             preprocessing="log_sign", p=10.0))
    assert old.hypergradient_rate == 0.0 and not old.scales_steps and not old.per_tensor
    assert "hypergradient_rate" not in old.identity_dict()  # old fingerprints are unchanged
    scaled = net_of(0, **WITH_SCALE)
    assert scaled.config.per_tensor and "hypergradient_rate=0.3" in repr(scaled)
    card = model_card_text(WeightsBundle({"fc": scaled}, name="scaled"))
    assert "per-tensor scale adapted by hypergradient descent (rate 0.3)" in card
    ruled = LSTMOptimizerNet(LSTMOptimizerConfig(**dict(WITH_SCALE, hypergradient_shrink=10.0,
                                                        step_scale_bound=math.log(10.0))))
    assert "step_scale_bound=2.30259, hypergradient_shrink=10" in repr(ruled)
    assert ("(rate 0.3, shrinking 10x faster than it grows, within 1/10 to 10)"
            in model_card_text(WeightsBundle({"fc": ruled}, name="ruled")))
    assert "step_scale_bound" in ruled.config.identity_dict()
    assert "step_scale_bound" not in scaled.config.identity_dict()  # default: fingerprint kept
    assert "hypergradient" not in model_card_text(WeightsBundle({"fc": net_of(0, **NOMINAL)},
                                                                name="nominal"))
