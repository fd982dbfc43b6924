"""neuroude: universal differential equations fitted to neural recordings.

    import neuroude as nu
    recording = nu.load_grasshopper()
    config = nu.RunConfig()
    run = nu.fit_run(config, "runs/receptor-neuron")
    print(run.summary())
    nu.write_report(run.folder.root)    # runs/receptor-neuron/report.html
"""

import importlib

# Names are imported on first use, so `neuroude --help` and Ctrl-C during start-up do not wait on JAX.
_SOURCES = {
    "build_model": "build", "load_data": "build",
    "RunConfig": "config", "load_config": "config",
    "Recording": "data", "load_grasshopper": "data", "load_npz": "data", "load_recording": "data", "save_npz": "data",
    "SDE": "dynamics",
    "ConfigError": "errors", "DataError": "errors", "DataFileError": "errors", "NeuroudeError": "errors",
    "RunFolderError": "errors", "TrainingError": "errors",
    "LatentUDE": "model",
    "write_report": "report",
    "evaluate_run": "workflow", "fit_run": "workflow", "load_run": "workflow", "sample_run": "workflow",
}


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'neuroude' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SOURCES])


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
