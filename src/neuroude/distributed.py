"""Multi-host fits: start JAX's distributed runtime from `training.distributed`.

After `jax.distributed.initialize`, `jax.devices()` lists the devices of every
process, and a fit shards each minibatch over all of them with the same
data-parallel code as on the devices of one machine. Every process runs the
same program on the same data and seed, so all of them draw the same
minibatches and hold the same replicated parameters.

NOTE: every process writes a whole run folder, so processes need separate output folders.
"""

from __future__ import annotations

import logging

import jax

from .config import TrainingConfig
from .errors import TrainingError

logger = logging.getLogger("neuroude")


def initialize_distributed(training: TrainingConfig) -> bool:
    """Connect this process to the others of a multi-host fit; return whether the fit is distributed.

    Does nothing without `training.distributed`, or when the runtime was
    already started in this process. It must run before the first JAX
    computation, because JAX fixes the list of devices then.
    """
    setting = training.distributed
    if setting is None:
        return False
    if jax.distributed.is_initialized():
        logger.debug("JAX's distributed runtime is already running; training.distributed is not applied again")
        return True

    try:
        jax.distributed.initialize(
            coordinator_address=setting.coordinator_address,
            num_processes=setting.num_processes,
            process_id=setting.process_id,
            local_device_ids=setting.local_device_ids,
            initialization_timeout=setting.initialization_timeout,
        )
    except (RuntimeError, ValueError) as error:
        raise TrainingError(
            f"jax.distributed.initialize failed with training.distributed = {setting.model_dump()}: {error}. "
            "It must run before any JAX computation in the process, and without coordinator_address, "
            "num_processes and process_id it needs a cluster environment that JAX detects (Slurm, Open MPI, "
            "Cloud TPU)."
        ) from None
    logger.info("process %d of %d: %d local devices, %d in all", jax.process_index(), jax.process_count(),
                jax.local_device_count(), jax.device_count())
    return True
