"""The rows of the evidence table: which optimizee, for how many steps, with which optimizers.

* ``paper``: the experiments of Andrychowicz et al. (2016), Section 3, on offline data (8x8
  digits for MNIST and CIFAR, scikit-learn's sample images for neural art), each with the
  bundled optimizer meta-trained for it and with ``default``.
* ``transfer``: what no bundled optimizer was meta-trained on: 1,000 and 10,000 steps,
  scikit-learn datasets used for evaluation only, and a self-attention model on sequences;
  with ``default`` and the paper's digits-MLP optimizer.

Digits rows use the 397 *test* images, never seen in meta-training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..tasks.base import TaskFamily
from ..tasks.digits import DigitsCNNFamily, DigitsMLPFamily
from ..tasks.heldout import (AddingRNNFamily, DigitsAutoencoderFamily, RosenbrockFamily,
                             TabularFamily)
from ..tasks.neural_art import NeuralArtFamily
from ..tasks.quadratic import QuadraticFamily
from ..tasks.image_patches import PatchAutoencoderFamily
from ..tasks.synthetic import TeacherRegressionFamily, TeacherRNNFamily
from ..tasks.transfer import (IrisFamily, LinnerudFamily, SequenceAttentionFamily,
                              SyntheticClassificationFamily, SyntheticRegressionFamily)
from .baselines import LR_GRID, QUICK_LR_GRID
from .runner import OptimizerSpec

__all__ = ["Row", "Protocol", "SUITES", "QUICK_ROWS", "PROTOCOLS", "protocol_for", "learned"]


def learned(weights: str, state_dtype: str | None = None) -> OptimizerSpec:
    """A learned optimizer, used as is (lr = 1, no tuning): a bundled name or a bundle folder
    (labelled by the folder's name)."""
    label = (weights.rstrip("/").rsplit("/", 1)[-1] if "/" in weights else weights) + (
        f" ({state_dtype} state)" if state_dtype else "")
    return OptimizerSpec(label, "learned", weights=weights, state_dtype=state_dtype)


@dataclass(frozen=True)
class Row:
    """One optimizee of the table."""

    name: str
    family: Callable[[], TaskFamily]
    horizon: int
    learned: tuple[OptimizerSpec, ...]
    description: str
    #: what the paper (or a follow-up) reported for this row, shown next to our result
    expectation: str = ""


@dataclass(frozen=True)
class Protocol:
    """How baselines are tuned and how every optimizer is measured."""

    lr_grid: tuple[float, ...] = LR_GRID
    tuning_seeds: tuple[int, ...] = (1000, 1001, 1002)
    test_seeds: tuple[int, ...] = tuple(range(2000, 2010))
    timing_steps: int = 50
    baselines: tuple[str, ...] = ("sgd", "nesterov", "rmsprop", "adam")


_QUICK = dict(lr_grid=QUICK_LR_GRID, tuning_seeds=(1000,), test_seeds=(2000, 2001, 2002),
              timing_steps=10)
#: (suite, quick) -> protocol; the heldout and validation suites compare with tuned Adam only
PROTOCOLS = {
    "full": Protocol(),
    "quick": Protocol(**_QUICK),
    "heldout": Protocol(test_seeds=tuple(range(3000, 3005)), baselines=("adam",)),
    "heldout-quick": Protocol(**{**_QUICK, "baselines": ("adam",)}),
}


def protocol_for(suite: str, quick: bool) -> Protocol:
    """The protocol of ``suite``: heldout and validation tune Adam only, on 5 test seeds."""
    if suite in ("heldout", "validation"):
        return PROTOCOLS["heldout-quick" if quick else "heldout"]
    return PROTOCOLS["quick" if quick else "full"]

_MLP = (learned("l2l-digits-mlp"), learned("default"))
_CNN = (learned("l2l-digits-cnn"), learned("default"))
_CNN_SUB = (learned("l2l-digits-cnn"), learned("l2l-digits-cnn-sub"), learned("default"))
_ART = (learned("l2l-neural-art"), learned("default"))
_TRANSFER = (learned("default"), learned("l2l-digits-mlp"))


def _mlp(**options) -> Callable[[], TaskFamily]:
    return lambda: DigitsMLPFamily(split="test", **options)


def _cnn(classes) -> Callable[[], TaskFamily]:
    return lambda: DigitsCNNFamily(classes=classes, split="test")


PAPER_ROWS = (
    Row("quadratic", QuadraticFamily, 100, (learned("l2l-quadratic"), learned("default")),
        "10-d quadratics ||W theta - y||^2 (Sec. 3.1)", "LSTM beats all baselines"),
    Row("digits-mlp", _mlp(), 100, _MLP + (learned("l2l-digits-mlp", "bfloat16"),),
        "MLP 64-20-10 sigmoid, batch 128 (Sec. 3.2, MNIST)", "LSTM beats Adam/RMSprop/NAG"),
    Row("digits-mlp-200", _mlp(), 200, _MLP, "same, 200 steps (trained for 100)",
        "LSTM generalizes"),
    Row("digits-mlp-40", _mlp(hidden=40), 100, _MLP, "40 hidden units", "LSTM generalizes"),
    Row("digits-mlp-2layer", _mlp(layers=2), 100, _MLP, "2 hidden layers",
        "LSTM generalizes"),
    Row("digits-mlp-relu", _mlp(activation="relu"), 100, _MLP, "ReLU instead of sigmoid",
        "LSTM fails"),
    Row("digits-cnn", _cnn(range(10)), 100, _CNN,
        "3x(conv+BN+ReLU+pool), fc 32, 10 classes (Sec. 3.3, CIFAR-10)",
        "LSTM learns faster than baselines"),
    Row("digits-cnn-5", _cnn(range(5)), 100, _CNN_SUB,
        "labels 0-4 (CIFAR-5); -sub was trained on labels 5-9 only",
        "LSTM and LSTM-sub learn faster"),
    Row("digits-cnn-2", _cnn(range(2)), 100, _CNN_SUB, "labels 0-1 (CIFAR-2)",
        "LSTM and LSTM-sub learn faster"),
    Row("neural-art", NeuralArtFamily, 100, _ART,
        "style transfer on 64x64 pixels (Sec. 3.4)", "LSTM beats baselines"),
    Row("neural-art-128-stripes", lambda: NeuralArtFamily(size=128, style="stripes"), 100, _ART,
        "128x128 (4x the parameters) and a style never seen", "LSTM generalizes"),
)

TRANSFER_ROWS = (
    Row("digits-mlp-1000", _mlp(horizon=1000), 1000,
        _TRANSFER + (learned("default", "bfloat16"),), "digits MLP, 1,000 steps",
        "official code issue #18: may fail beyond its horizon"),
    Row("digits-mlp-10000", _mlp(horizon=10000), 10000, _TRANSFER,
        "digits MLP, 10,000 steps", "may fail beyond its horizon"),
    Row("iris", IrisFamily, 200, _TRANSFER, "iris, MLP 4-16-3 tanh, batch 32"),
    Row("linnerud", LinnerudFamily, 200, _TRANSFER, "linnerud, linear regression 3->3"),
    Row("make-classification", SyntheticClassificationFamily, 200, _TRANSFER,
        "make_classification, ReLU MLP 20-32-2", "ReLU: the paper's failure case"),
    Row("make-regression", SyntheticRegressionFamily, 200, _TRANSFER,
        "make_regression, tanh MLP 10-32-1, squared error"),
    Row("sequence-attention", SequenceAttentionFamily, 200, _TRANSFER,
        "self-attention regressor on synthetic sequences (not an image model)"),
)

_DEFAULT = (learned("default"),)

#: never meta-trained on and never used to choose weights or design variants
HELDOUT_ROWS = (
    Row("wine-gelu", lambda: TabularFamily("wine", hidden=32, activation="gelu", batch_size=16,
                                           horizon=300, name="wine-gelu"), 300, _DEFAULT,
        "wine, MLP 13-32-3 GELU, batch 16"),
    Row("breast-cancer-elu", lambda: TabularFamily("breast_cancer", hidden=16, activation="elu",
                                                   batch_size=32, horizon=500,
                                                   name="breast-cancer-elu"), 500, _DEFAULT,
        "breast cancer, MLP 30-16-2 ELU, batch 32"),
    Row("diabetes-regression", lambda: TabularFamily("diabetes", hidden=32, batch_size=32,
                                                     horizon=1000, name="diabetes-regression"),
        1000, _DEFAULT, "diabetes, ReLU MLP 10-32-1, squared error, standardised targets"),
    Row("diabetes-raw-scale", lambda: TabularFamily("diabetes", hidden=32, batch_size=None,
                                                    horizon=1000, raw_targets=True,
                                                    name="diabetes-raw-scale"),
        1000, _DEFAULT, "same, raw targets (loss ~3e4 at start), full batch"),
    Row("moons-2layer", lambda: TabularFamily("moons", hidden=32, layers=2, batch_size=16,
                                              horizon=2000, name="moons-2layer"), 2000,
        _DEFAULT, "make_moons, ReLU MLP 2-32-32-2, batch 16"),
    Row("digits-relu-batch8", lambda: DigitsMLPFamily(hidden=64, activation="relu",
                                                      batch_size=8, horizon=3000, split="test",
                                                      name="digits-relu-batch8"),
        3000, _DEFAULT, "digits test images, ReLU MLP 64-64-10, batch 8"),
    Row("digits-autoencoder", DigitsAutoencoderFamily, 1000, _DEFAULT,
        "digits test images, autoencoder 64-16-64"),
    Row("adding-rnn", AddingRNNFamily, 1000, _DEFAULT,
        "Elman RNN (16 units) on the adding problem, 10 steps"),
    Row("rosenbrock", RosenbrockFamily, 10000, _DEFAULT, "2-d Rosenbrock function"),
)

#: for choosing checkpoints and design variants (issue: keep the held-out suite held out)
VALIDATION_ROWS = (
    Row("val-digits-relu", lambda: DigitsMLPFamily(activation="relu", horizon=300,
                                                   name="val-digits-relu"), 300, _DEFAULT,
        "digits train images, ReLU MLP 64-20-10, 300 steps"),
    Row("val-quadratic-1000", lambda: QuadraticFamily(horizon=1000), 1000, _DEFAULT,
        "10-d quadratics, 1,000 steps"),
    Row("val-digits-tanh-wide", lambda: DigitsMLPFamily(hidden=128, activation="tanh",
                                                        batch_size=32, horizon=1000,
                                                        name="val-digits-tanh-wide"),
        1000, _DEFAULT, "digits train images, tanh MLP 64-128-10, batch 32"),
    Row("val-teacher-raw-scale",
        lambda: TeacherRegressionFamily(horizon=1000, name="val-teacher-raw-scale",
                                        target_scale=300.0, normalised_loss=False),
        1000, _DEFAULT, "synthetic teacher-student regression, targets x300, plain squared "
                        "error (loss ~1e5 at start)"),
    Row("val-digits-sigmoid-5000", lambda: DigitsMLPFamily(horizon=5000,
                                                           name="val-digits-sigmoid-5000"),
        5000, _DEFAULT, "digits train images, the paper's sigmoid MLP 64-20-10, 5,000 steps"),
    # ninth round (issue 10): the kinds of problem `default` lost on held out, from allowed data
    Row("val-teacher-rnn", lambda: TeacherRNNFamily(horizon=1000, name="val-teacher-rnn"),
        1000, _DEFAULT, "synthetic teacher-student sequence regression, tanh RNNs"),
    Row("val-patch-autoencoder", lambda: PatchAutoencoderFamily(
        horizon=1000, name="val-patch-autoencoder"), 1000, _DEFAULT,
        "autoencoders on 8x8 grey patches of the sample images"),
    Row("val-teacher-noisy", lambda: TeacherRegressionFamily(
        horizon=1000, name="val-teacher-noisy", noise_levels=(1.0,)), 1000, _DEFAULT,
        "synthetic teacher-student regression, label noise as large as the signal"),
)

SUITES: dict[str, tuple[Row, ...]] = {"paper": PAPER_ROWS, "transfer": TRANSFER_ROWS,
                                      "heldout": HELDOUT_ROWS, "validation": VALIDATION_ROWS}
#: the rows ``--quick`` keeps from each suite
QUICK_ROWS = {"paper": ("quadratic", "digits-mlp"), "transfer": ("iris", "sequence-attention"),
              "heldout": ("wine-gelu", "adding-rnn"), "validation": ("val-digits-relu",)}
