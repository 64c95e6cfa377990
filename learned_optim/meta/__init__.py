"""Meta-training of the LSTM optimizer (Andrychowicz et al. 2016, Section 2)."""

from .config import MetaTrainConfig
from .trainer import MetaTrainer

__all__ = ["MetaTrainConfig", "MetaTrainer"]
