"""Exceptions raised by neuroude.

Every error raised for bad user input is a subclass of `NeuroudeError`, so a
caller can catch all of them at once. Each also subclasses the built-in type a
Python user would expect (`ValueError`, `FileNotFoundError`), so existing
handlers keep working.
"""


class NeuroudeError(Exception):
    """Base class of every error neuroude raises on purpose."""


class DataError(NeuroudeError, ValueError):
    """A recording or array is malformed: wrong shape, dtype, values or times."""


class DataFileError(NeuroudeError, OSError):
    """A data, checkpoint or run file is missing, unreadable or corrupt."""


class ConfigError(NeuroudeError, ValueError):
    """A run configuration or model argument is invalid."""


class RunFolderError(NeuroudeError, FileExistsError):
    """A run folder already contains results that would be overwritten."""


class TrainingError(NeuroudeError, RuntimeError):
    """A fit could not go on, for example after too many non-finite steps."""
