"""Exception types raised by learned_optim.

Every error says what is wrong and how to fix it. The types subclass the built-in exception a
PyTorch user would expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing
weights), so existing ``except`` clauses keep working.
"""

__all__ = [
    "WeightsError",
    "WeightsFormatError",
    "WeightsNotFoundError",
    "ConfigError",
    "StateDictError",
    "TaskError",
    "CheckpointError",
    "MetaTrainingError",
]


class WeightsError(ValueError):
    """Base class: a weights bundle could not be used."""


class WeightsFormatError(WeightsError):
    """A weights file is corrupted, foreign, unsafe (pickle) or does not match its config."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weights under the given name, path or Hub repo id."""


class ConfigError(WeightsError):
    """A JSON config is malformed, has unknown/missing fields, wrong types or a newer version."""


class StateDictError(ValueError):
    """An optimizer ``state_dict`` does not belong to this optimizer (other optimizer or weights)."""


class TaskError(ValueError):
    """A meta-training task is unusable: its loss is not a finite scalar that depends on its
    parameters, its model has no trainable parameters, or it routes to a net that is missing."""


class CheckpointError(RuntimeError):
    """A MetaTrainer checkpoint cannot be resumed: unreadable, foreign, or another config."""


class MetaTrainingError(RuntimeError):
    """Meta-training stopped: too many non-finite meta-updates in a row (the best φ is kept)."""
