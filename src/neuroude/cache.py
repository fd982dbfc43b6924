"""JAX's persistent compilation cache for the `neuroude` command.

Compiling the training step of a fit takes seconds to minutes, and the same
configuration compiles to the same XLA programs every time. With the cache on,
a second fit of the same configuration reads the compiled programs from disk.
The command line turns it on; library users call `enable_compilation_cache`
themselves, because it changes process-wide JAX settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("neuroude")

CACHE_VARIABLE = "NEUROUDE_COMPILATION_CACHE"
DISABLED = ("", "0", "off", "false", "no")

# Every program is cached, however fast it compiles. Building a model compiles about a hundred
# small initialisation programs of about 35 ms each, and reading them back is faster than that.
# A warm receptor-neuron fit reached its second step after 7.7 s with a 0.5 s threshold and after
# about 4 s with none (`benchmarks/warm_start.py`, table in benchmarks/README.md).
MIN_COMPILE_SECONDS = 0.0


def default_cache_dir() -> Path | None:
    """Return the cache folder: $NEUROUDE_COMPILATION_CACHE, else $XDG_CACHE_HOME/neuroude/jax or ~/.cache/neuroude/jax.

    Returns None when the variable is set to one of "", "0", "off", "false" or
    "no", which turns the cache off.
    """
    value = os.environ.get(CACHE_VARIABLE)
    if value is not None:
        return None if value.strip().lower() in DISABLED else Path(value).expanduser()

    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuroude" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in `path` (default: `default_cache_dir()`); return the folder.

    A folder that cannot be created only logs a warning and leaves the cache
    off, since the fit itself does not need it.
    """
    import jax

    folder = Path(path).expanduser() if path is not None else default_cache_dir()
    if folder is None:
        return None

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("compilation cache disabled: could not create %s (%s)", folder, error)
        return None

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    logger.debug("compilation cache in %s", folder)
    return folder
