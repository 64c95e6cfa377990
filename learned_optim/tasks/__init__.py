"""Task families for meta-training and evaluation, by name.

Meta-training uses only offline data allowed for it: quadratics, scikit-learn's digits
(training split) and sample images, and synthetic data.
"""

from __future__ import annotations

from typing import Callable

import torch

from .augment import ReparamFamily, ReparamTask
from .base import FunctionTaskFamily, Task, TaskFamily, named_routes
from .digits import DigitsCNNFamily, DigitsMLPFamily
from .image_patches import PatchAutoencoderFamily
from .neural_art import NeuralArtFamily
from .quadratic import QuadraticFamily
from .synthetic import TeacherRegressionFamily, TeacherRNNFamily
from .valleys import CurvedValleyFamily

__all__ = ["Task", "TaskFamily", "FunctionTaskFamily", "MixtureFamily", "named_routes",
           "TaskPanel", "TASK_FAMILIES", "get_task_family", "QuadraticFamily", "DigitsMLPFamily",
           "DigitsCNNFamily", "NeuralArtFamily", "TeacherRegressionFamily", "TeacherRNNFamily",
           "PatchAutoencoderFamily", "ReparamFamily", "ReparamTask", "CurvedValleyFamily"]


class MixtureFamily(TaskFamily):
    """Samples a member family uniformly by seed, then a task from it (for ``default``)."""

    def __init__(self, members: list[TaskFamily], name: str = "mixture", horizon: int = 200):
        self.members, self.name, self.horizon = members, name, horizon

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)
        member = self.members[int(torch.randint(len(self.members), (1,), generator=g))]
        return member.sample(seed)

    def describe(self):
        return {**super().describe(), "members": [m.describe() for m in self.members]}


class TaskPanel(TaskFamily):
    """A fixed panel of families, each at its own horizon, for choosing the epoch a
    meta-training run keeps (issue 10): the MetaTrainer's validation task ``i`` is sampled from
    ``members[i % len(members)]`` and run for that member's horizon, so every member gets its
    share of the validation tasks. Score a panel with ``validation_score="log_final_loss"``,
    which weighs a factor of 2 the same on every member whatever its loss scale.
    ``sample(seed)`` alone (outside the MetaTrainer) draws from ``members[seed % n]``."""

    def __init__(self, members: list[TaskFamily], name: str = "panel"):
        if not members:
            raise ValueError("a TaskPanel needs at least one member family")
        self.members, self.name = list(members), name
        self.horizon = max(member.horizon for member in self.members)

    def member(self, index: int) -> TaskFamily:
        """The family of validation task ``index``."""
        return self.members[index % len(self.members)]

    def sample(self, seed: int) -> Task:
        return self.member(seed).sample(seed)

    def describe(self):
        return {**super().describe(), "members": [m.describe() for m in self.members]}


def _selection_panel() -> TaskPanel:
    """1,000-step runs of four kinds of problem for choosing ``default``'s kept epoch (issue
    10, eleventh round): tanh digits MLPs (the family chosen on before), synthetic regressions
    with label noise, autoencoders on sample-image patches and tanh RNNs on synthetic
    sequences. Allowed data only; none is a held-out family."""
    return TaskPanel([DigitsMLPFamily(activation="tanh", horizon=1000, name="digits-mlp-tanh-1000"),
                      _noisy_regression(horizon=1000, name="teacher-regression-noisy-1000"),
                      PatchAutoencoderFamily(horizon=1000, name="patch-autoencoder-1000"),
                      TeacherRNNFamily(horizon=1000, name="teacher-rnn-1000")],
                     name="selection-panel-1000")


def _default_mixture() -> MixtureFamily:
    """Architectures, activations, widths, depths and batch sizes for the ``default`` optimizer.

    ReLU is left out on purpose: the ``default`` preset is chosen by validation on ReLU digits
    MLPs (``digits-mlp-relu``), a family it never trains on (the paper's known failure case).
    """
    members: list[TaskFamily] = [QuadraticFamily()]
    for activation in ("sigmoid", "tanh"):
        for hidden, layers, batch in ((20, 1, 128), (40, 2, 64), (80, 1, 32), (10, 2, 256)):
            members.append(DigitsMLPFamily(hidden=hidden, layers=layers, activation=activation,
                                           batch_size=batch, horizon=200,
                                           name=f"digits-mlp-{activation}-{hidden}x{layers}"))
    return MixtureFamily(members, name="mixture", horizon=200)


def _wide_mixture() -> MixtureFamily:
    """A wider distribution for ``default`` (issue 10): quadratics; digits MLPs with sigmoid,
    tanh and ReLU of several widths, depths and batch sizes; and synthetic teacher-student
    regressions at random target and initialisation scales. Only quadratics, the digits
    training split and generated data: every held-out task stays unseen (GELU and ELU, the
    other datasets, autoencoders, RNNs and the Rosenbrock function are never trained on)."""
    members: list[TaskFamily] = [QuadraticFamily()]
    for activation in ("sigmoid", "tanh", "relu"):
        for hidden, layers, batch in ((20, 1, 128), (40, 2, 64), (80, 1, 32), (10, 2, 256)):
            members.append(DigitsMLPFamily(hidden=hidden, layers=layers, activation=activation,
                                           batch_size=batch, horizon=200,
                                           name=f"digits-mlp-{activation}-{hidden}x{layers}"))
    members += [TeacherRegressionFamily()] * 4
    return MixtureFamily(members, name="mixture-wide", horizon=200)


def _noisy_regression(horizon: int = 200, name: str = "teacher-regression-noisy"
                      ) -> TeacherRegressionFamily:
    """Teacher-student regressions whose label noise (0.3 or 1.0 of the signal) leaves an
    irreducible loss, so minibatch gradients stay noisy at the optimum."""
    return TeacherRegressionFamily(horizon=horizon, name=name, noise_levels=(0.3, 1.0))


def _wider_mixture() -> MixtureFamily:
    """The wide mixture plus architectures and losses it lacks (issue 10, ninth round):
    recurrent models (:class:`TeacherRNNFamily`), autoencoders on sample-image patches
    (:class:`PatchAutoencoderFamily`) and regressions with an irreducible loss. Still only
    allowed data: the held-out suite's adding problem, digits autoencoder and diabetes
    regression stay unseen, though RNNs and autoencoders are no longer unseen
    architectures."""
    wide = _wide_mixture()
    members = wide.members + [TeacherRNNFamily()] * 3 + [PatchAutoencoderFamily()] * 3 + [
        _noisy_regression()] * 2
    return MixtureFamily(members, name="mixture-wider", horizon=200)


def _wide_valley_mixture(valleys: Callable[[], TaskFamily] = CurvedValleyFamily,
                         name: str = "mixture-wide-valleys") -> MixtureFamily:
    """The wide mixture plus generated curved valleys (:class:`CurvedValleyFamily`, issue 10,
    twenty-second round) as 2 of its 19 members: narrow bending valleys where a step scale
    that grew along the floor overshoots at a bend, a kind of problem the wide mixture lacks.
    The held-out Rosenbrock function and the stability panel's functions
    (``benchmarks/step_scale_probe.py``) stay unseen. ``valleys`` makes the valley member
    (``mixture-wide-valleys-floor``: :func:`_floor_valleys`)."""
    wide = _wide_mixture()
    return MixtureFamily(wide.members + [valleys()] * 2, name=name, horizon=200)


def _wider_valley_mixture() -> MixtureFamily:
    """The wider mixture plus generated curved valleys (issue 10, thirtieth round) as 3 of its
    28 members, about the share (2 of 19) they have in ``mixture-wide-valleys``: the wider
    mixture's RNNs and autoencoders with the valleys that kept curved-valley problems from
    blowing up. The held-out Rosenbrock function, adding problem and digits autoencoder and
    the stability panel's functions stay unseen."""
    wider = _wider_mixture()
    return MixtureFamily(wider.members + [CurvedValleyFamily()] * 3,
                         name="mixture-wider-valleys", horizon=200)


def _floor_valleys() -> CurvedValleyFamily:
    """Generated curved valleys, half of whose tasks start on their floor (issue 10, after the
    thirty-second round: from floor starts of the stability panel's steep sine valley most
    epochs of the valley recipes climb the wall, 161-330 steps in)."""
    return CurvedValleyFamily(floor_starts=0.5, name="curved-valley-floor")


TASK_FAMILIES: dict[str, Callable[[], TaskFamily]] = {
    "quadratic": QuadraticFamily,
    "digits-mlp": DigitsMLPFamily,
    "digits-mlp-40": lambda: DigitsMLPFamily(hidden=40, name="digits-mlp-40"),
    "digits-mlp-2layer": lambda: DigitsMLPFamily(layers=2, name="digits-mlp-2layer"),
    "digits-mlp-relu": lambda: DigitsMLPFamily(activation="relu", name="digits-mlp-relu"),
    "digits-mlp-200": lambda: DigitsMLPFamily(horizon=200, name="digits-mlp-200"),
    # checkpoint selection for long-horizon meta-training (a family the wide mixture trains on)
    "digits-mlp-tanh-1000": lambda: DigitsMLPFamily(activation="tanh", horizon=1000,
                                                    name="digits-mlp-tanh-1000"),
    "digits-cnn": DigitsCNNFamily,
    "digits-cnn-5": lambda: DigitsCNNFamily(classes=range(5), name="digits-cnn-5"),
    "digits-cnn-2": lambda: DigitsCNNFamily(classes=range(2), name="digits-cnn-2"),
    "digits-cnn-sub": lambda: DigitsCNNFamily(classes=range(5, 10), name="digits-cnn-sub"),
    "neural-art": NeuralArtFamily,
    "neural-art-128-stripes": lambda: NeuralArtFamily(size=128, style="stripes"),
    "mixture": _default_mixture,
    "mixture-wide": _wide_mixture,
    "teacher-regression": TeacherRegressionFamily,
    "mixture-wider": _wider_mixture,
    "teacher-rnn": TeacherRNNFamily,
    "patch-autoencoder": PatchAutoencoderFamily,
    "teacher-regression-noisy": _noisy_regression,
    "selection-panel-1000": _selection_panel,
    "curved-valley": CurvedValleyFamily,
    "mixture-wide-valleys": _wide_valley_mixture,
    "mixture-wider-valleys": _wider_valley_mixture,
    "curved-valley-floor": _floor_valleys,
    # mixture-wide-valleys with its 2 valley members started on the floor half of the time
    "mixture-wide-valleys-floor": lambda: _wide_valley_mixture(_floor_valleys,
                                                               "mixture-wide-valleys-floor"),
    # the wide mixture in rescaled coordinates (issue 10, thirteenth round): each task as it
    # is, or with all its parameters or each tensor rescaled by a log-uniform factor in
    # [0.1, 10], so the step a task wants varies 100-fold at the same gradient statistics
    "mixture-wide-reparam": lambda: ReparamFamily(_wide_mixture(), scale_range=(0.1, 10.0),
                                                  name="mixture-wide-reparam"),
    # the same over a 9-fold range, [1/3, 3] (fourteenth round)
    "mixture-wide-reparam3": lambda: ReparamFamily(_wide_mixture(), scale_range=(1 / 3, 3.0),
                                                   name="mixture-wide-reparam3"),
}


def get_task_family(name: str) -> TaskFamily:
    """The registered task family ``name`` (see :data:`TASK_FAMILIES`)."""
    if name not in TASK_FAMILIES:
        raise ValueError(f"unknown task family {name!r}; known: {sorted(TASK_FAMILIES)}")
    return TASK_FAMILIES[name]()
