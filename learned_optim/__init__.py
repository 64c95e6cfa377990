"""learned_optim: the learned LSTM optimizer of Andrychowicz et al. (2016) for PyTorch.

Replace ``torch.optim.Adam(model.parameters())`` with
``learned_optim.LearnedLSTMOptim(model.parameters())``.

Reference: M. Andrychowicz, M. Denil, S. Gomez, M. W. Hoffman, D. Pfau, T. Schaul,
B. Shillingford, N. de Freitas. "Learning to learn by gradient descent by gradient descent".
NeurIPS 2016. arXiv:1606.04474.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    MetaTrainingError,
    StateDictError,
    TaskError,
    WeightsError,
    WeightsFormatError,
    WeightsNotFoundError,
)
from .network import LSTMOptimizerConfig, LSTMOptimizerNet  # noqa: E402
from .optimizer import LearnedLSTMOptim  # noqa: E402
from .routing import route_param_groups  # noqa: E402
from .update import fuse_weights, lstm_step, lstm_update  # noqa: E402
from .weights import WeightsBundle, list_pretrained, load_weights, resolve_weights  # noqa: E402

__all__ = [
    "__version__",
    "LearnedLSTMOptim",
    "LSTMOptimizerConfig",
    "LSTMOptimizerNet",
    "WeightsBundle",
    "list_pretrained",
    "load_weights",
    "resolve_weights",
    "route_param_groups",
    "fuse_weights",
    "lstm_step",
    "lstm_update",
    "CheckpointError",
    "ConfigError",
    "MetaTrainingError",
    "StateDictError",
    "TaskError",
    "WeightsError",
    "WeightsFormatError",
    "WeightsNotFoundError",
]
