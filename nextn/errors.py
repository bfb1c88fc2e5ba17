"""User-facing errors: one message that names the file, the key or tensor, and what to do."""


class NextnError(Exception):
    """An error the user can act on. The CLI prints its message alone, without a traceback."""


class ModelFileError(NextnError):
    """A model file is missing, not GGUF, truncated, or lacks something the engine needs."""


class MTPUnavailableError(NextnError):
    """MTP speculation was asked for but no usable MTP head is available."""
