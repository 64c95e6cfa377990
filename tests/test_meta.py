"""MetaTrainer: learning works, the meta-gradient is right, checkpoints resume exactly."""

import math

import pytest
import torch
from torch import nn

from learned_optim import (ConfigError, LearnedLSTMOptim, LSTMOptimizerConfig, LSTMOptimizerNet,
                           fuse_weights, list_pretrained, load_weights, lstm_update,
                           resolve_weights)
from learned_optim.meta import MetaTrainConfig, MetaTrainer
from learned_optim.meta.trainer import _task_seed
from learned_optim.meta.unroll import evaluate, start
from learned_optim.tasks import (FunctionTaskFamily, QuadraticFamily, Task, TaskFamily,
                                 TaskPanel, get_task_family)

from devices import needs_cuda


def tiny_config(**overrides):
    base = dict(epochs=3, tasks_per_epoch=4, horizon=20, unroll=10, validation_tasks=4,
                meta_lr=1e-2, seed=0)
    return MetaTrainConfig(**{**base, **overrides})


def short_quadratics():
    return QuadraticFamily(horizon=20)


def test_meta_training_beats_the_untrained_net_on_quadratics():
    trainer = MetaTrainer(short_quadratics(), tiny_config())
    bundle = trainer.train(progress=False)
    untrained = trainer.history[0]["final_loss"]
    best = bundle.provenance["metrics"]["validation_final_loss"]
    assert best < 0.5 * untrained, (best, untrained)
    assert bundle.provenance["metrics"]["untrained_validation_final_loss"] == untrained


def float64_quadratic_family():
    def make(seed):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(3, 3, generator=g, dtype=torch.float64)
        y = torch.randn(3, generator=g, dtype=torch.float64)
        model = nn.Linear(3, 1, bias=False).double()
        return Task(model=model, params={"weight": torch.randn(1, 3, generator=g,
                                                               dtype=torch.float64)},
                    sample_batch=lambda step: (W, y),
                    loss_fn=lambda out, target: (out.squeeze(1) - target).square().sum())
    return FunctionTaskFamily("quadratic-f64", make, horizon=3)


def test_meta_gradient_matches_finite_differences():
    steps = 3
    trainer = MetaTrainer(float64_quadratic_family(),
                          tiny_config(horizon=steps, unroll=steps))
    for net in trainer.nets.values():
        net.double()
    task = trainer.family.sample(5)
    meta_loss, _ = trainer.meta_loss(task, start(task, trainer.nets), steps)
    meta_loss.backward()
    net = trainer.nets["fc"]

    # Record the optimizee gradients at φ: the estimator treats them as constants.
    recorded, state = [], start(task, trainer.nets)
    with torch.no_grad():
        weights = fuse_weights(net)
        params, hidden = state.params["weight"].detach(), state.hidden["weight"]
        for t in range(steps):
            with torch.enable_grad():
                p = params.clone().requires_grad_()
                (grad,) = torch.autograd.grad(task.loss({"weight": p}, t), p)
            recorded.append(grad.reshape(-1))
            (update,), (hidden,) = lstm_update([recorded[-1]], [hidden], weights)
            params = params + update.view_as(params)

    def replay():
        """Σ_t f(θ_t)/T with the recorded gradients fed to the LSTM."""
        with torch.no_grad():
            weights = fuse_weights(net)
            params, hidden = state.params["weight"].detach(), state.hidden["weight"]
            total = 0.0
            for t in range(steps):
                (update,), (hidden,) = lstm_update([recorded[t]], [hidden], weights)
                params = params + update.view_as(params)
                total += float(task.loss({"weight": params}, t + 1))
            return total / steps

    eps = 1e-5
    checked = 0
    for name, param in net.named_parameters():
        for index in [0, param.numel() // 2, param.numel() - 1]:
            flat = param.data.view(-1)
            original = flat[index].item()
            flat[index] = original + eps
            plus = replay()
            flat[index] = original - eps
            minus = replay()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            analytic = param.grad.view(-1)[index].item()
            assert math.isclose(analytic, numeric, rel_tol=1e-4, abs_tol=1e-8), (
                name, index, analytic, numeric)
            checked += 1
    assert checked == 3 * len(list(net.parameters()))


def test_saved_bundle_gives_the_same_updates_as_the_in_memory_net(tmp_path):
    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=2))
    bundle = trainer.train(progress=False)
    bundle.save_pretrained(tmp_path)

    def run(weights):
        p = nn.Parameter(torch.linspace(-1, 1, 30))
        opt = LearnedLSTMOptim([p], weights=weights)
        for _ in range(5):
            p.grad = p.detach() * 3 - 0.2
            opt.step()
        return p.detach()

    assert torch.equal(run(str(tmp_path)), run(bundle.nets["fc"]))
    loaded = load_weights(tmp_path)
    assert loaded.provenance["seed"] == 0 and loaded.provenance["command"]


def assert_optimizer_follows_the_unroll(task, nets, steps=5, total_steps=None):
    """LearnedLSTMOptim with ``nets["fc"]`` on ``task``'s model sees the losses the
    MetaTrainer's unroll (``evaluate``) records, step by step; returns those losses."""
    losses = evaluate(task, nets, steps)
    model = task.model
    optimizer = LearnedLSTMOptim(model.parameters(), weights=nets["fc"], total_steps=total_steps)
    for step in range(steps):
        optimizer.zero_grad()
        loss = task.loss(dict(model.named_parameters()), step)
        assert math.isclose(float(loss.detach()), losses[step], rel_tol=1e-5), step
        loss.backward()
        optimizer.step()
    return losses


@pytest.mark.parametrize("option", [
    {"parameter_feature": True}, {"tensor_feature": True},
    {"tensor_feature": True, "tensor_statistic": "gradient_change"}, {"progress_feature": True}],
    ids=["parameter", "tensor-snr", "tensor-change", "progress"])
def test_unrolled_training_and_the_optimizer_agree_for_a_net_with_a_fifth_input(option):
    """parameter_feature (θ_t), tensor_feature (each tensor's signal-to-noise ratio or
    gradient change) and progress_feature (t / T): the MetaTrainer's unroll feeds the net the
    input as the optimizer does (told total_steps=T), and the meta-gradient reaches the weights
    that read it."""
    net_config = LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                     output_scale=0.01, **option)
    trainer = MetaTrainer(short_quadratics(), tiny_config(net=net_config.to_dict()))
    with torch.no_grad():
        trainer.nets["fc"].head.weight[:, -1] = 0.5  # the input's head column starts at 0
    task = short_quadratics().sample(3)
    meta_loss, _ = trainer.meta_loss(task, start(task, trainer.nets), 5)
    meta_loss.backward()
    net = trainer.nets["fc"]
    assert net.cells[0].weight_ih.grad[:, 4].abs().sum() > 0
    assert net.head.weight.grad[:, -1].abs().sum() > 0
    assert_optimizer_follows_the_unroll(task, trainer.nets, total_steps=5)


def trainer_whose_head_gets_a_meta_gradient(net_config, steps):
    """A MetaTrainer of a ``net_config`` net on short quadratics, after one backward pass of a
    ``steps``-step meta-loss that must reach both rows (direction, magnitude) of the head;
    returns it and the task."""
    trainer = MetaTrainer(short_quadratics(), tiny_config(net=net_config.to_dict()))
    task = short_quadratics().sample(3)
    meta_loss, _ = trainer.meta_loss(task, start(task, trainer.nets), steps)
    meta_loss.backward()
    head = trainer.nets["fc"].head
    assert head.weight.grad[0].abs().sum() > 0 and head.weight.grad[1].abs().sum() > 0
    return trainer, task


def test_unrolled_training_and_the_optimizer_agree_for_a_net_with_a_nominal_adam_step():
    """nominal_step: the MetaTrainer's unroll adds the same fixed Adam step as the optimizer,
    and the meta-gradient still reaches the head's direction and magnitude rows."""
    net_config = LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                     output_scale=0.01, nominal_step=True)
    trainer, task = trainer_whose_head_gets_a_meta_gradient(net_config, 5)
    losses = assert_optimizer_follows_the_unroll(task, trainer.nets)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("rule", [{}, dict(hypergradient_shrink=3.0, step_scale_bound=0.4)])
def test_unrolled_training_and_the_optimizer_agree_for_a_net_with_a_per_tensor_step_scale(rule):
    """hypergradient_rate: the MetaTrainer's unroll scales each tensor's steps by the same
    hypergradient-adapted factor as the optimizer (also with a shrink factor and a tight
    bound), over more steps than the scale needs to move off 1, and the meta-gradient still
    reaches the head through the scaled step."""
    net_config = LSTMOptimizerConfig(features="adaptive", update="direction_magnitude",
                                     output_scale=0.01, nominal_step=True, hypergradient_rate=0.3,
                                     **rule)
    trainer, task = trainer_whose_head_gets_a_meta_gradient(net_config, 8)
    scaled = assert_optimizer_follows_the_unroll(task, trainer.nets, steps=8)
    unscaled_net = LSTMOptimizerNet(LSTMOptimizerConfig(**{
        **net_config.to_dict(), "hypergradient_rate": 0.0,
        **{name: LSTMOptimizerConfig().to_dict()[name] for name in rule}}))
    unscaled_net.load_state_dict(trainer.nets["fc"].state_dict())
    unscaled = evaluate(task, {"fc": unscaled_net}, 8)
    assert scaled[:2] == unscaled[:2]  # the scale is 1 until there is a previous step
    assert scaled[-1] != unscaled[-1]


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("weight_average_decay,horizon_min,stability_penalty",
                         [(0.0, 0, 0.0), (0.8, 0, 0.0), (0.0, 5, 0.0), (0.0, 0, 2.0)])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, weight_average_decay,
                                                                 horizon_min, stability_penalty):
    config = tiny_config(epochs=3, tasks_per_epoch=2, weight_average_decay=weight_average_decay,
                         horizon_min=horizon_min, stability_penalty=stability_penalty)
    full = MetaTrainer(short_quadratics(), config)
    full.train(progress=False)

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    first = MetaTrainer(short_quadratics(), config, checkpoint_dir=tmp_path)
    with pytest.raises(_Interrupt):
        first.train(progress=False, on_epoch_end=stop_after_first_epoch)
    resumed = MetaTrainer(short_quadratics(), config, checkpoint_dir=tmp_path)
    resumed.load_checkpoint(tmp_path)
    assert resumed.epoch == 1
    resumed.train(progress=False)
    for key, value in full._net_state().items():
        assert torch.equal(value, resumed._net_state()[key]), key
    for key, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    if weight_average_decay:  # the Polyak average φ̄ resumes too
        for key, value in full.average_state.items():
            assert torch.equal(value, resumed.average_state[key]), key
    assert [h["final_loss"] for h in full.history] == [h["final_loss"] for h in resumed.history]


def test_weight_averaging_keeps_the_polyak_average_of_every_meta_update():
    decay = 0.7
    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=2,
                                                          weight_average_decay=decay))
    iterates = [trainer._net_state()]  # φ_0, then φ after each meta-step (a spy, not a stub)
    step = trainer.meta_optimizer.step

    def recording_step(*args, **kwargs):
        result = step(*args, **kwargs)
        iterates.append(trainer._net_state())
        return result

    trainer.meta_optimizer.step = recording_step
    trainer.train(progress=False)
    assert len(iterates) == 1 + 2 * 2  # 2 tasks x 2 truncations of 10 steps
    for key in iterates[0]:
        expected = iterates[0][key].double()
        for phi in iterates[1:]:
            expected = decay * expected + (1 - decay) * phi[key].double()
        assert torch.allclose(trainer.average_state[key].double(), expected, atol=1e-6), key
        # φ trains on unaveraged; the average lags behind it
        assert torch.equal(trainer._net_state()[key], iterates[-1][key]), key
    assert any(not torch.equal(trainer.average_state[k], iterates[-1][k]) for k in iterates[0])


def test_with_weight_averaging_validation_scores_and_keeps_the_average():
    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=2,
                                                          weight_average_decay=0.9))
    trainer.train(progress=False)
    current = trainer._net_state()
    averaged = trainer.validate()
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in current.items())  # put back
    plain = MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=2))
    plain._load_nets(trainer.average_state)
    assert plain.validate() == averaged  # the same tasks, scored with φ̄'s weights
    plain._load_nets(current)
    assert plain.validate() != averaged
    # one epoch: it is kept if it beats the untrained net; then the kept weights are φ̄
    assert trainer.best_metric < trainer.history[0]["final_loss"]
    assert all(torch.equal(v, trainer.average_state[k]) for k, v in trainer.best_state.items())


def test_resume_with_another_config_is_refused(tmp_path):
    MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=1),
                checkpoint_dir=tmp_path).train(progress=False)
    other = MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=1, seed=3))
    with pytest.raises(RuntimeError, match="another config"):
        other.load_checkpoint(tmp_path)


def test_conv_and_fc_nets_are_trained_jointly():
    family = get_task_family("digits-cnn")
    trainer = MetaTrainer(family, tiny_config(epochs=1, tasks_per_epoch=1, horizon=4, unroll=2,
                                              validation_tasks=1))
    assert sorted(trainer.nets) == ["conv", "fc"]
    before = trainer._net_state()
    trainer.train_task(family.sample(1))
    after = trainer._net_state()
    for route in ("conv", "fc"):
        changed = [k for k in before if k.startswith(route) and not torch.equal(before[k], after[k])]
        assert changed, route


def test_any_user_module_is_a_task():
    class TinyRegressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, x):
            return self.body(x).squeeze(1)

    def make(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 3, generator=g)
        y = x @ torch.randn(3, generator=g)
        torch.manual_seed(seed)
        return Task(model=TinyRegressor(), sample_batch=lambda step: (x, y),
                    loss_fn=nn.functional.mse_loss)

    trainer = MetaTrainer(FunctionTaskFamily("tiny-regression", make, horizon=20),
                          tiny_config(epochs=2, tasks_per_epoch=3))
    bundle = trainer.train(progress=False)
    assert bundle.provenance["task"]["name"] == "tiny-regression"
    assert math.isfinite(bundle.provenance["metrics"]["validation_final_loss"])


def test_non_finite_meta_losses_are_skipped_then_stop_the_run():
    class NaNAfterStart(TaskFamily):
        name, horizon = "nan-task", 6

        def sample(self, seed):
            model = nn.Linear(2, 1)
            return Task(model=model, sample_batch=lambda step: (torch.ones(4, 2), step),
                        loss_fn=lambda out, step: out.sum() * (math.nan if step > 0 else 1.0))

    trainer = MetaTrainer(NaNAfterStart(), tiny_config(horizon=6, unroll=2, max_bad_updates=2,
                                                       validation_tasks=1))
    with pytest.raises(RuntimeError, match="non-finite meta-updates in a row"):
        trainer.train(progress=False)
    assert trainer.skipped_updates == 2
    assert all(torch.isfinite(v).all() for v in trainer._net_state().values())


@pytest.mark.parametrize("field,value", [("epochs", 0), ("unroll", -1), ("meta_lr", 0.0),
                                         ("grad_clip", float("nan")), ("loss_weights", "late"),
                                         ("seed", -1), ("net", {"hidden_size": 3}),
                                         ("weight_average_decay", 1.0),
                                         ("weight_average_decay", float("nan")),
                                         ("horizon_min", -1), ("horizon_min", 21),
                                         ("horizon_min", 5.0), ("horizon_min", True),
                                         ("validation_score", "geometric")])
def test_invalid_config_values(field, value):
    with pytest.raises(ConfigError, match=field if field != "net" else "missing"):
        tiny_config(**{field: value})


def test_bad_task_loss_and_models_without_parameters():
    with pytest.raises(ValueError, match="no trainable parameters"):
        Task(model=nn.ReLU(), sample_batch=lambda s: (torch.ones(2), None),
             loss_fn=lambda out, _: out.sum())
    task = Task(model=nn.Linear(2, 3), sample_batch=lambda s: (torch.ones(4, 2), None),
                loss_fn=lambda out, _: out)
    with pytest.raises(ValueError, match="must be a scalar"):
        task.loss(task.params, 0)


def test_every_bundled_optimizer_beats_its_untrained_initialisation():
    """Each shipped optimizer, on fresh tasks of its own family, against the net it started
    from (same seed, untrained), over a short horizon to keep CI fast."""
    for name in list_pretrained():
        bundle = resolve_weights(name)
        provenance = bundle.provenance
        family = get_task_family(provenance["task_family"])
        config = MetaTrainConfig.from_dict(provenance["config"])
        untrained = {route: LSTMOptimizerNet(config.net_config, seed=config.seed + k)
                     for k, route in enumerate(sorted(bundle.nets))}
        steps = min(family.horizon, 40)
        trained_loss = untrained_loss = 0.0
        for seed in (123_456, 654_321):
            trained_loss += sum(evaluate(family.sample(seed), bundle.nets, steps))
            untrained_loss += sum(evaluate(family.sample(seed), untrained, steps))
        assert trained_loss < untrained_loss, (name, trained_loss, untrained_loss)


def test_every_bundled_optimizer_is_what_its_preset_command_writes():
    """The shipped bundles came from `meta-train --preset NAME`, and the preset still holds
    the recipe that wrote them (so re-running the command recorded in each bundle reproduces
    it): same preset, training and validation families, command and MetaTrainConfig."""
    from learned_optim.meta.presets import PRESETS, preset_command

    assert set(list_pretrained()) == set(PRESETS)
    for name in list_pretrained():
        provenance = resolve_weights(name).provenance
        preset = PRESETS[name]
        assert provenance["preset"] == name, name
        assert provenance["task_family"] == preset.task, name
        # the command that wrote it, to whichever --out folder; or, for a run of one of issue
        # 10's rounds (benchmarks/default_variants.py), the preset command that reproduces it:
        # the preset holds the same config (checked below)
        command = provenance["command"]
        if command.startswith("python benchmarks/default_variants.py --variants "):
            command = provenance["reproduce"]
        assert command.startswith(preset_command(name, "")), name
        validation = get_task_family(preset.validation_task or preset.task).describe()
        assert provenance["validation_task"] == validation, name
        expected = MetaTrainConfig(**{**preset.config, "seed": provenance["seed"]})
        recorded = MetaTrainConfig.from_dict(provenance["config"])
        # bundles and presets from before an optional net field omit it: its default
        recorded.net = recorded.net_config.to_dict()
        expected.net = expected.net_config.to_dict()
        assert recorded == expected, name


def test_final_step_weighting_leaves_phi_alone_on_truncations_without_a_weighted_step():
    trainer = MetaTrainer(short_quadratics(), tiny_config(loss_weights="final"))
    task = trainer.family.sample(2)
    first, state = trainer.meta_loss(task, start(task, trainer.nets), 10)  # steps 1..10
    late, _ = trainer.meta_loss(task, state.detach(), 10)  # steps 11..20: f(θ_20) counts
    before = trainer._net_state()
    trainer._meta_update(late)  # a real update: Adam now has momentum
    moved = trainer._net_state()
    assert any(not torch.equal(v, moved[k]) for k, v in before.items())
    again, _ = trainer.meta_loss(task, start(task, trainer.nets), 10)  # no weighted step
    trainer._meta_update(again)  # must not move φ, even with Adam's momentum
    assert all(torch.equal(v, trainer._net_state()[k]) for k, v in moved.items())


def test_log_loss_objective_is_the_mean_log_of_the_unrolled_losses():
    trainer = MetaTrainer(short_quadratics(), tiny_config(meta_objective="log_loss"))
    task = short_quadratics().sample(7)
    losses = evaluate(task, trainer.nets, 5)  # f(θ_0) .. f(θ_5), without a graph
    meta_loss, state = trainer.meta_loss(task, start(task, trainer.nets), 5)
    expected = sum(math.log(f + 1e-8) for f in losses[1:]) / 5
    assert state.step == 5
    assert math.isclose(float(meta_loss.detach()), expected, rel_tol=1e-5)
    meta_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in trainer._meta_params())
    plain = MetaTrainer(short_quadratics(), tiny_config())
    plain_loss, _ = plain.meta_loss(task, start(task, plain.nets), 5)
    assert math.isclose(float(plain_loss.detach()), sum(losses[1:]) / 5, rel_tol=1e-5)


def drifting_target_family():
    """A 3-d regression whose targets come 0.5 nearer every step for 4 steps, then move 0.5
    away every step: its loss falls, then climbs back up whatever the optimizer does, so the
    stability term is active and the best loss so far is not the start."""
    def make(seed):
        g = torch.Generator().manual_seed(seed)
        inputs = torch.randn(8, 3, generator=g)
        targets = torch.randn(8, generator=g)
        params = {"weight": 0.5 * torch.randn(1, 3, generator=g), "bias": torch.zeros(1)}
        return Task(model=nn.Linear(3, 1), params=params,
                    sample_batch=lambda step: (inputs, targets + 0.5 * abs(step - 4)),
                    loss_fn=lambda out, target: (out.squeeze(1) - target).square().mean())
    return FunctionTaskFamily("drifting-target", make, horizon=10)


def stability_terms(losses, penalty, tolerance):
    """λ max(0, log((f_t + ε) / (min_{s<t} f_s + ε)) - log τ) for t = 1.., from f_0, f_1, ..."""
    terms, best = [], losses[0]
    for f in losses[1:]:
        rise = math.log((f + 1e-8) / (best + 1e-8))
        terms.append(penalty * max(0.0, rise - math.log(tolerance)))
        best = min(best, f)
    return terms


@pytest.mark.parametrize("objective", ["loss", "log_loss"])
@pytest.mark.parametrize("seed, tolerance", [(4, 1.0), (4, 1.5), (9, 1.0)])
def test_stability_term_adds_lambda_times_the_log_rise_over_the_best_loss_so_far(
        objective, seed, tolerance):
    """Over two truncations of 5 steps the term compares every step with the best loss of the
    whole run before it, not of its truncation; τ is the rise that costs nothing."""
    family, penalty = drifting_target_family(), 3.0
    trainer = MetaTrainer(family, tiny_config(horizon=10, unroll=5, meta_objective=objective,
                                              stability_penalty=penalty,
                                              stability_tolerance=tolerance))
    task = family.sample(seed)
    losses = evaluate(task, trainer.nets, 10)  # f(θ_0) .. f(θ_10), without a graph
    penalties = stability_terms(losses, penalty, tolerance)
    assert max(penalties) > 0  # the term is active
    assert min(losses[:5]) < losses[0]  # and the best so far is not the start
    base = [math.log(f + 1e-8) if objective == "log_loss" else f for f in losses[1:]]
    expected = [b + p for b, p in zip(base, penalties)]

    first, state = trainer.meta_loss(task, start(task, trainer.nets), 5)
    assert math.isclose(float(first.detach()), sum(expected[:5]) / 5, rel_tol=1e-5)
    second, state = trainer.meta_loss(task, state.detach(), 5)
    assert math.isclose(float(second.detach()), sum(expected[5:]) / 5, rel_tol=1e-5)
    assert math.isclose(float(state.best_loss), min(losses[:11]), rel_tol=1e-6)


def test_stability_term_changes_the_meta_gradient_only_when_the_loss_climbs():
    def meta_gradient(family, penalty, seed):
        trainer = MetaTrainer(family, tiny_config(horizon=6, unroll=6, meta_objective="log_loss",
                                                  stability_penalty=penalty,
                                                  stability_tolerance=2.0))
        task = family.sample(seed)
        meta_loss, _ = trainer.meta_loss(task, start(task, trainer.nets), 6)
        meta_loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in trainer._meta_params()]), \
            evaluate(task, trainer.nets, 6)

    drifting = drifting_target_family()
    plain, losses = meta_gradient(drifting, 0.0, 4)
    assert max(stability_terms(losses, 1.0, 2.0)) > 0
    penalised, _ = meta_gradient(drifting, 5.0, 4)
    assert torch.isfinite(penalised).all()
    assert not torch.allclose(plain, penalised)
    # a run that never climbs 2x above its best so far: the term is 0 and so is its gradient
    quadratics = short_quadratics()
    plain, losses = meta_gradient(quadratics, 0.0, 7)
    assert max(stability_terms(losses, 1.0, 2.0)) == 0
    penalised, _ = meta_gradient(quadratics, 5.0, 7)
    assert torch.equal(plain, penalised)


@pytest.mark.parametrize("field, value", [
    ("stability_penalty", -1.0), ("stability_penalty", float("nan")),
    ("stability_penalty", float("inf")), ("stability_penalty", True),
    ("stability_penalty", "1"), ("stability_tolerance", 0.5),
    ("stability_tolerance", float("inf")), ("stability_tolerance", False)])
def test_bad_stability_settings_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"{field} must be a finite number"):
        tiny_config(**{field: value})


def test_linear_weighting_counts_step_t_by_t_over_the_horizon():
    trainer = MetaTrainer(short_quadratics(), tiny_config(loss_weights="linear", horizon=20))
    task = short_quadratics().sample(7)
    losses = evaluate(task, trainer.nets, 10)  # f(θ_0) .. f(θ_10), without a graph
    first, state = trainer.meta_loss(task, start(task, trainer.nets), 5)  # steps 1..5
    later, _ = trainer.meta_loss(task, state.detach(), 5)  # steps 6..10
    # the mean over a truncation's steps of w_t f(θ_t), w_t = t / 20
    assert math.isclose(float(first.detach()), sum(t / 20 * losses[t] for t in range(1, 6)) / 5,
                        rel_tol=1e-5)
    assert math.isclose(float(later.detach()), sum(t / 20 * losses[t] for t in range(6, 11)) / 5,
                        rel_tol=1e-5)


def test_random_horizons_are_log_uniform_between_horizon_min_and_horizon():
    trainer = MetaTrainer(short_quadratics(), tiny_config(horizon=2000, horizon_min=200))
    horizons = [trainer.sample_horizon(seed) for seed in range(4000)]
    assert min(horizons) >= 200 and max(horizons) <= 2000
    assert min(horizons) < 210 and max(horizons) > 1900
    # log-uniform: half below the geometric midpoint sqrt(200 * 2000) = 632 (uniform: 24%)
    assert 0.46 < sum(h < 632 for h in horizons) / len(horizons) < 0.54
    # the mean is (2000 - 200) / ln(10) = 782: the cost of a fixed 782-step horizon
    assert abs(sum(horizons) / len(horizons) - 782) < 25
    assert [trainer.sample_horizon(seed) for seed in range(50)] == horizons[:50]  # seeded
    fixed = MetaTrainer(short_quadratics(), tiny_config(horizon=20))
    assert {fixed.sample_horizon(seed) for seed in range(50)} == {20}


def test_each_meta_batch_unrolls_its_own_drawn_horizon():
    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=1, tasks_per_epoch=6, horizon=40,
                                                          horizon_min=4, unroll=10))
    unrolled = []  # (steps per truncation) of every task, recorded by a spy on meta_loss
    meta_loss = trainer.meta_loss

    def recording_meta_loss(task, state, steps, horizon=None):
        if state.step == 0:
            unrolled.append((horizon, []))
        unrolled[-1][1].append(steps)
        return meta_loss(task, state, steps, horizon)

    trainer.meta_loss = recording_meta_loss
    trainer.train(progress=False)
    drawn = [trainer.sample_horizon(_task_seed(trainer.config.seed, 1, index))
             for index in range(6)]  # one meta-batch per task, epoch 1
    assert [horizon for horizon, _ in unrolled] == drawn
    assert len(set(drawn)) > 1  # not all the same horizon
    for horizon, steps in unrolled:
        assert sum(steps) == horizon and max(steps) <= 10


def test_loss_weights_follow_the_drawn_horizon_not_the_longest():
    trainer = MetaTrainer(short_quadratics(), tiny_config(loss_weights="final", horizon=20,
                                                          horizon_min=5))
    task = short_quadratics().sample(2)
    losses = evaluate(task, trainer.nets, 10)
    # a run drawn 10 steps long: its last step, f(θ_10), is the one that counts
    final, _ = trainer.meta_loss(task, start(task, trainer.nets), 10, horizon=10)
    assert math.isclose(float(final.detach()), losses[10], rel_tol=1e-5) and final.requires_grad
    longest, _ = trainer.meta_loss(task, start(task, trainer.nets), 10)  # T = 20: no weight yet
    assert not longest.requires_grad
    linear = MetaTrainer(short_quadratics(), tiny_config(loss_weights="linear", horizon=20,
                                                         horizon_min=5))
    value, _ = linear.meta_loss(task, start(task, linear.nets), 5, horizon=10)
    assert math.isclose(float(value.detach()), sum(t / 10 * losses[t] for t in range(1, 6)) / 5,
                        rel_tol=1e-5)


def test_unknown_meta_objective_is_refused():
    with pytest.raises(ConfigError, match="meta_objective must be 'loss' or 'log_loss'"):
        tiny_config(meta_objective="log")


class _CountingQuadratics(QuadraticFamily):
    """Quadratics that record the seed of every task they hand out (a spy, not a stub)."""

    def __init__(self, horizon, name):
        super().__init__(horizon=horizon)
        self.name, self.seeds = name, []

    def sample(self, seed):
        self.seeds.append(seed)
        return super().sample(seed)


def test_a_panel_validates_task_i_on_member_i_mod_n_at_that_members_horizon():
    short, long = _CountingQuadratics(5, "short"), _CountingQuadratics(30, "long")
    trainer = MetaTrainer(short_quadratics(), tiny_config(validation_tasks=5),
                          validation_family=TaskPanel([short, long]))
    metrics = trainer.validate()
    offset_seed = [_task_seed(trainer.config.seed + 1_000_000_007, 0, i) for i in range(5)]
    assert short.seeds == offset_seed[0::2] and long.seeds == offset_seed[1::2]
    # the same tasks run by hand for each member's own horizon
    finals = []
    for index, seed in enumerate(offset_seed):
        member = (short, long)[index % 2]
        losses = evaluate(QuadraticFamily(horizon=member.horizon).sample(seed), trainer.nets,
                          member.horizon)
        tail = losses[-max(1, member.horizon // 10):]
        finals.append(sum(tail) / len(tail))
    assert math.isclose(metrics["final_loss"], sum(finals) / 5, rel_tol=1e-9)
    assert metrics["score"] == metrics["final_loss"]  # validation_score="final_loss"
    logged = MetaTrainer(short_quadratics(), tiny_config(validation_tasks=5,
                                                         validation_score="log_final_loss"),
                         validation_family=TaskPanel([short, long])).validate()
    assert math.isclose(logged["score"], sum(math.log(f + 1e-8) for f in finals) / 5,
                        rel_tol=1e-9)
    assert logged["final_loss"] == metrics["final_loss"]


def test_the_kept_epoch_is_the_one_with_the_best_score_not_the_best_final_loss(monkeypatch):
    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=3, tasks_per_epoch=1,
                                                          validation_score="log_final_loss"))
    # epoch 0 (untrained), 1, 2, 3: epoch 2 has the lowest score, epoch 3 the lowest mean
    scripted = iter([dict(final_loss=9.0, mean_loss=9.0, score=9.0),
                     dict(final_loss=5.0, mean_loss=5.0, score=3.0),
                     dict(final_loss=4.0, mean_loss=4.0, score=1.0),
                     dict(final_loss=2.0, mean_loss=2.0, score=2.0)])
    kept = {}

    def scripted_validate():
        return next(scripted)

    monkeypatch.setattr(trainer, "validate", scripted_validate)
    bundle = trainer.train(progress=False, on_epoch_end=lambda t: kept.setdefault(
        t.epoch, t._scored_state()))
    metrics = bundle.provenance["metrics"]
    assert metrics["best_epoch"] == 2 and metrics["validation_best_score"] == 1.0
    assert metrics["validation_final_loss"] == 4.0
    assert metrics["validation_score"] == "log_final_loss"
    assert all(torch.equal(v, kept[2][k]) for k, v in trainer.best_state.items())
    assert any(not torch.equal(v, kept[3][k]) for k, v in trainer.best_state.items())


def test_a_history_from_before_validation_score_is_still_ranked_by_final_loss():
    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=1))
    trainer.history = [{"epoch": 0, "final_loss": 3.0, "mean_loss": 3.0, "meta_loss": None},
                       {"epoch": 1, "final_loss": 1.0, "mean_loss": 2.0, "meta_loss": 0.5},
                       {"epoch": 2, "final_loss": 2.0, "mean_loss": 1.0, "meta_loss": 0.4}]
    metrics = trainer.provenance()["metrics"]
    assert metrics["best_epoch"] == 1 and metrics["validation_best_score"] == 1.0


def test_keep_epochs_writes_every_epochs_scored_weights_and_the_best_is_the_bundle(tmp_path):
    from learned_optim.meta.presets import keep_every_epoch
    from learned_optim.weights import WeightsBundle

    trainer = MetaTrainer(short_quadratics(), tiny_config(epochs=3, tasks_per_epoch=2,
                                                          weight_average_decay=0.5))
    bundle = trainer.train(progress=False, on_epoch_end=keep_every_epoch(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-01", "epoch-02", "epoch-03"]
    epochs = {n: WeightsBundle.from_pretrained(tmp_path / f"epoch-0{n}") for n in (1, 2, 3)}
    assert [epochs[n].provenance["epoch_kept"] for n in (1, 2, 3)] == [1, 2, 3]
    best = bundle.provenance["metrics"]["best_epoch"]
    for name, tensor in bundle.nets["fc"].state_dict().items():
        assert torch.equal(epochs[best].nets["fc"].state_dict()[name], tensor), name
    # the kept files are φ̄ (what validation scored), and they differ from epoch to epoch
    last = epochs[3].nets["fc"].state_dict()
    assert all(torch.equal(last[k], trainer.average_state[f"fc.{k}"]) for k in last)
    assert any(not torch.equal(epochs[1].nets["fc"].state_dict()[k], last[k]) for k in last)
    # a folder the optimizer loads
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)
    LearnedLSTMOptim([param], weights=str(tmp_path / "epoch-02")).step()
    assert torch.isfinite(param).all() and not torch.equal(param, torch.ones(3))



def test_a_task_moved_to_a_device_draws_the_same_batches_there_and_is_itself_unchanged():
    task = get_task_family("digits-mlp").sample(3)
    assert task.to("cpu") is task  # already there: nothing copied
    moved = task.to("meta")  # a device every machine has (shapes, no data)
    inputs, targets = moved.sample_batch(5)
    original_inputs, original_targets = task.sample_batch(5)
    assert inputs.device.type == targets.device.type == "meta"
    assert inputs.shape == original_inputs.shape and targets.shape == original_targets.shape
    assert all(value.device.type == "meta" for value in moved.params.values())
    assert all(p.device.type == "meta" for p in moved.model.parameters())
    assert moved.routes == task.routes and moved.loss_fn is task.loss_fn
    assert all(value.device.type == "cpu" for value in task.params.values())
    assert all(p.device.type == "cpu" for p in task.model.parameters())


def test_meta_training_on_the_cpu_named_explicitly_is_bit_for_bit_the_default(tmp_path):
    config = tiny_config(epochs=2, tasks_per_epoch=2, weight_average_decay=0.8)
    plain = MetaTrainer(short_quadratics(), config).train(progress=False)
    named = MetaTrainer(short_quadratics(), config, device="cpu").train(progress=False)
    for key, value in plain.nets["fc"].state_dict().items():
        assert torch.equal(value, named.nets["fc"].state_dict()[key]), key
    assert named.provenance["device"] == "cpu"


def test_a_device_with_a_process_group_is_refused_before_the_group_is_used():
    with pytest.raises(ConfigError, match="process group"):
        MetaTrainer(short_quadratics(), tiny_config(), device="cuda", process_group=object())
    for cpu in ("cpu:0", torch.device("cpu", 0)):  # the CPU by another name is not refused:
        with pytest.raises(RuntimeError, match="not initialized"):  # the group is used next
            MetaTrainer(short_quadratics(), tiny_config(), device=cpu, process_group=object())


@needs_cuda
def test_meta_training_on_cuda_matches_the_cpu_and_resumes_on_the_cpu(tmp_path):
    family = get_task_family("mixture-wide-reparam3")  # digits, quadratics, regressions, rescaled
    config = tiny_config(epochs=2, tasks_per_epoch=4, horizon=30, weight_average_decay=0.8)
    on_cpu = MetaTrainer(family, config)
    on_cpu.train(progress=False)
    on_cuda = MetaTrainer(family, config, device="cuda", checkpoint_dir=tmp_path)
    bundle = on_cuda.train(progress=False)
    assert bundle.provenance["device"] == "cuda"
    assert all(p.device.type == "cpu" for p in bundle.nets["fc"].parameters())
    for key, value in on_cpu._net_state().items():
        torch.testing.assert_close(on_cuda._net_state()[key], value, rtol=1e-3, atol=1e-4)
    assert [h["final_loss"] for h in on_cuda.history] == pytest.approx(
        [h["final_loss"] for h in on_cpu.history], rel=1e-3)
    resumed = MetaTrainer(family, tiny_config(epochs=3, tasks_per_epoch=4, horizon=30,
                                              weight_average_decay=0.8))
    resumed.load_checkpoint(tmp_path)  # written on CUDA, read on the CPU
    resumed.train(progress=False)
    assert resumed.epoch == 3 and len(resumed.history) == 4


def test_a_rescaled_task_moved_to_a_device_keeps_its_scales():
    from learned_optim.tasks import ReparamTask

    inner = get_task_family("digits-mlp").sample(0)
    task = ReparamTask(inner, {name: 2.0 for name in inner.params})
    moved = task.to("meta")
    assert isinstance(moved, ReparamTask) and moved.scales == task.scales
    assert all(value.device.type == "meta" for value in moved.params.values())
    assert task.to("cpu") is task


def test_start_from_fine_tunes_a_bundle_and_records_it(tmp_path):
    """MetaTrainer.start_from: training starts at the bundle's weights (the untrained score
    is the bundle's, not a fresh net's), moves away from them, and the provenance names the
    start; another net config, another set of routes or a trainer already trained are
    refused."""
    net_fields = dict(hidden_size=20, num_layers=2, preprocessing="log_sign", p=10.0,
                      features="adaptive", update="direction_magnitude", output_scale=0.01)
    source = MetaTrainer(short_quadratics(), tiny_config(epochs=2, net=net_fields, seed=1))
    source_bundle = source.train(progress=False)
    fresh = MetaTrainer(short_quadratics(), tiny_config(epochs=1, net=net_fields))
    fresh.train(progress=False)
    tuned = MetaTrainer(short_quadratics(), tiny_config(epochs=1, net=net_fields))
    tuned.start_from(source_bundle)
    for key, value in source_bundle.nets["fc"].state_dict().items():
        assert torch.equal(tuned.nets["fc"].state_dict()[key], value)
    bundle = tuned.train(progress=False)
    # epoch 0 scores the start: the source's weights, not the fresh net's
    assert tuned.history[0]["final_loss"] != fresh.history[0]["final_loss"]
    again = MetaTrainer(short_quadratics(), tiny_config(epochs=1, net=net_fields))
    again.start_from(source_bundle)
    assert again.validate()["final_loss"] == tuned.history[0]["final_loss"]
    assert bundle.fingerprint() != source_bundle.fingerprint()
    assert bundle.provenance["initial_weights"] == {"name": source_bundle.name,
                                                    "fingerprint": source_bundle.fingerprint()}
    assert "initial_weights" not in fresh.best_bundle().provenance
    # a run resumed from its checkpoint keeps the record, without calling start_from again
    first = MetaTrainer(short_quadratics(), tiny_config(epochs=1, net=net_fields),
                        checkpoint_dir=tmp_path / "ckpt")
    first.start_from(source_bundle)
    first.train(progress=False)
    resumed = MetaTrainer(short_quadratics(), tiny_config(epochs=2, net=net_fields))
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.train(progress=False).provenance["initial_weights"] == \
        bundle.provenance["initial_weights"]
    with pytest.raises(RuntimeError, match="before train"):
        tuned.start_from(source_bundle)
    other = MetaTrainer(short_quadratics(), tiny_config(net=dict(net_fields, hidden_size=12)))
    with pytest.raises(ConfigError, match="net config"):
        other.start_from(source_bundle)
    routed = MetaTrainer(short_quadratics(), tiny_config(net=net_fields), routes=["conv", "fc"])
    with pytest.raises(ConfigError, match="routes"):
        routed.start_from(source_bundle)


def test_the_fine_tuning_variant_starts_from_the_pinned_default(monkeypatch, tmp_path):
    """benchmarks/default_variants.py: finetune-default-wider-e4 is default's recipe for 4
    epochs on the wider mixture, started from the bundled default with its pinned
    fingerprint; a bundle whose fingerprint differs is refused, and other variants start
    fresh."""
    from benchmark_scripts import load_benchmark
    module = load_benchmark("default_variants")
    family, validation, fields = module.VARIANTS["finetune-default-wider-e4"]
    recipe = module.VARIANTS["adaptive-wide-log-800-val1000-avg-nominal-hyper-b30"]
    assert (family, validation) == ("mixture-wider", recipe[1])
    assert fields == dict(recipe[2], epochs=4)
    start = module.starting_weights("finetune-default-wider-e4")
    assert start.fingerprint() == "ed02343c9b0a1989"
    assert start.nets["fc"].config.identity_dict() == \
        MetaTrainConfig(**fields).net_config.identity_dict()
    assert module.starting_weights("adaptive-wide-log-800-val1000-avg-nominal-hyper-b30") is None
    # the control: the same fine-tuning on default's own mixture
    assert module.VARIANTS["finetune-default-wide-e4"] == ("mixture-wide", validation, fields)
    assert module.starting_weights("finetune-default-wide-e4").fingerprint() == \
        start.fingerprint()
    # the same tensors with a departure warmup added start it too, with the warmup off
    warm = start.with_net_config(departure_warmup=300).save_pretrained(tmp_path / "warm")
    monkeypatch.setitem(module.STARTS, "finetune-default-wider-e4",
                        (str(warm), "ed02343c9b0a1989"))
    again = module.starting_weights("finetune-default-wider-e4")
    assert again.fingerprint() == "ed02343c9b0a1989"
    assert again.nets["fc"].config.departure_warmup == 0
    monkeypatch.setitem(module.STARTS, "finetune-default-wider-e4", ("default", "0" * 16))
    with pytest.raises(ValueError, match="fingerprint"):
        module.starting_weights("finetune-default-wider-e4")


def test_the_ramped_fine_tuning_starts_from_defaults_tensors_under_its_own_rule():
    """Forty-third round: default's recipe for 4 epochs on its own mixture, trained with the
    departure ramped in over 300 steps and the step scale bounded to [1/100, 100]; it starts
    from the pinned tensors under that config, which the trainer accepts."""
    from benchmark_scripts import load_benchmark
    module = load_benchmark("default_variants")
    name = "finetune-default-ramped-b100-wide-e4"
    family, validation, fields = module.VARIANTS[name]
    control = module.VARIANTS["finetune-default-wide-e4"]
    assert (family, validation) == control[:2]
    assert {k: v for k, v in fields.items() if k != "net"} == \
        {k: v for k, v in control[2].items() if k != "net"}
    assert fields["net"] == dict(control[2]["net"], departure_warmup=300,
                                 step_scale_bound=math.log(100.0))
    start = module.starting_weights(name)
    control_start = module.starting_weights("finetune-default-wide-e4")
    config = start.nets["fc"].config
    assert (config.departure_warmup, config.step_scale_bound) == (300, math.log(100.0))
    assert all(torch.equal(a, b) for a, b in zip(start.nets["fc"].state_dict().values(),
                                                 control_start.nets["fc"].state_dict().values()))
    trainer = module.variant_trainer(name)
    trainer.start_from(start)  # raises if the configs differ


def test_the_recipes_trained_from_scratch_under_the_ramp_change_only_the_net_config():
    """Forty-fourth, forty-fifth and forty-seventh rounds: default's recipe and the
    curved-valley recipe from a fresh net, with the departure ramped in over 300 steps (and
    the bound at ln 100 or at default's ln 30); nothing else in the recipes differs."""
    from benchmark_scripts import load_benchmark
    module = load_benchmark("default_variants")
    fields = module.VARIANTS["finetune-default-ramped-b100-wide-e4"][2]
    # forty-fourth round: default's recipe from a fresh net under the same rule
    fresh_name = "adaptive-wide-log-800-val1000-avg-nominal-hyper-ramped-b100"
    recipe = module.VARIANTS["adaptive-wide-log-800-val1000-avg-nominal-hyper-b30"]
    assert module.VARIANTS[fresh_name] == recipe[:2] + (dict(recipe[2], net=fields["net"]),)
    assert module.starting_weights(fresh_name) is None
    # forty-fifth round: the same under default's own bound
    ramped_name = "adaptive-wide-log-800-val1000-avg-nominal-hyper-ramped"
    ramped = module.VARIANTS[ramped_name]
    assert ramped == recipe[:2] + (dict(recipe[2], net=dict(recipe[2]["net"],
                                                            departure_warmup=300)),)
    assert ramped[2]["net"]["step_scale_bound"] == pytest.approx(math.log(30.0))
    assert module.starting_weights(ramped_name) is None
    # forty-seventh round: the curved-valley recipe under the same warmup
    valleys = module.VARIANTS["adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30"]
    valleys_ramped = module.VARIANTS[
        "adaptive-wide-valleys-log-800-val1000-avg-nominal-hyper-b30-ramped"]
    assert valleys_ramped == valleys[:2] + (dict(valleys[2], net=ramped[2]["net"]),)
    assert valleys_ramped[0] == "mixture-wide-valleys"
