"""neuroude: universal differential equations fitted to neural recordings.

    import neuroude as nu
    recording = nu.load_grasshopper()
    config = nu.RunConfig()
    run = nu.fit_run(config, "runs/receptor-neuron")
    print(run.summary())
    nu.write_report(run.folder.root)    # runs/receptor-neuron/report.html
"""

from .build import build_model, load_data
from .config import RunConfig, load_config
from .data import Recording, load_grasshopper, load_npz, load_recording, save_npz
from .dynamics import SDE
from .errors import ConfigError, DataError, DataFileError, NeuroudeError, RunFolderError, TrainingError
from .model import LatentUDE
from .report import write_report
from .workflow import evaluate_run, fit_run, load_run, sample_run

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "ConfigError",
    "DataError",
    "DataFileError",
    "LatentUDE",
    "NeuroudeError",
    "Recording",
    "RunConfig",
    "RunFolderError",
    "TrainingError",
    "build_model",
    "evaluate_run",
    "fit_run",
    "load_config",
    "load_data",
    "load_grasshopper",
    "load_npz",
    "load_recording",
    "load_run",
    "sample_run",
    "save_npz",
    "write_report",
]
