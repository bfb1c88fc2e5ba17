"""nextn: speculative decoding with a model's own multi-token-prediction (MTP / NextN) head."""

import os

# torch's OpenMP threads busy-wait after each parallel region by default, taking the cores from the native
# kernels' threads between ops (a prompt's prefill alternates both: 10x slower native ops); set before torch
# loads its OpenMP runtime, unless the user chose otherwise
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .engine.config import EngineConfig
from .engine.engine import Completion, Engine
from .engine.params import SamplingParams
from .engine.sequence import SpecConfig
from .errors import ModelFileError, MTPUnavailableError, NextnError

__all__ = ["Engine", "EngineConfig", "Completion", "SamplingParams", "SpecConfig", "NextnError",
           "ModelFileError", "MTPUnavailableError"]
__version__ = "0.1.0"
