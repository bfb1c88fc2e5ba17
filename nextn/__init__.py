"""nextn: speculative decoding with a model's own multi-token-prediction (MTP / NextN) head."""

from .engine import Completion, Engine, EngineConfig
from .errors import ModelFileError, MTPUnavailableError, NextnError
from .sampling import SamplingParams
from .sequence import SpecConfig

__all__ = ["Engine", "EngineConfig", "Completion", "SamplingParams", "SpecConfig", "NextnError",
           "ModelFileError", "MTPUnavailableError"]
__version__ = "0.1.0"
