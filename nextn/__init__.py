"""nextn: speculative decoding with a model's own multi-token-prediction (MTP / NextN) head."""

from .engine.config import EngineConfig
from .engine.engine import Completion, Engine
from .engine.params import SamplingParams
from .engine.sequence import SpecConfig
from .errors import ModelFileError, MTPUnavailableError, NextnError

__all__ = ["Engine", "EngineConfig", "Completion", "SamplingParams", "SpecConfig", "NextnError",
           "ModelFileError", "MTPUnavailableError"]
__version__ = "0.1.0"
