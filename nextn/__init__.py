"""nextn: speculative decoding with a model's own multi-token-prediction (MTP / NextN) head."""

import os

# torch's OpenMP threads busy-wait after each parallel region by default, taking the cores from the native
# kernels' threads between ops (a prompt's prefill alternates both: 10x slower native ops). The runtime reads
# the policy when torch loads it; unless the user chose one, nextn's is set for that moment only, so that
# programs this process starts (llama-server in the benchmarks) keep their own defaults.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch  # noqa: E402,F401  (loads the OpenMP runtime with that policy)
    del os.environ["OMP_WAIT_POLICY"]

from .engine.config import EngineConfig
from .engine.engine import Completion, Engine
from .engine.params import SamplingParams
from .engine.sequence import SpecConfig
from .errors import ModelFileError, MTPUnavailableError, NextnError

__all__ = ["Engine", "EngineConfig", "Completion", "SamplingParams", "SpecConfig", "NextnError",
           "ModelFileError", "MTPUnavailableError"]
__version__ = "0.1.0"
