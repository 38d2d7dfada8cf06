"""The GPUs of this computer: declared (``--gpus 0,1,2,3``, for tests and for machines where
detection is not wanted), or detected through NVML (the ``nvidia-ml-py`` package, imported as
``pynvml``) when it is importable, else through ``torch.cuda`` — but only when an NVIDIA driver is
present (``/proc/driver/nvidia/gpus`` lists a GPU, or ``nvidia-smi`` is on the PATH): importing
torch takes seconds, which a worker on a machine without GPUs (and every ``dag submit --wait``)
would pay at start for nothing.

A GPU is described as ``{"index": int, "memory": bytes, "name": str}`` (the ``Computer.gpus``
format); usage as ``{"index", "utilization" (percent), "memory_used" (bytes)}``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

from mlcomp.errors import ConfigError

__all__ = ["parse_gpus", "detect_gpus", "gpu_usage", "nvidia_driver_present"]

PROC_GPUS = "/proc/driver/nvidia/gpus"
"""Where the NVIDIA kernel driver lists the GPUs it drives (one folder per GPU, on Linux)."""


def parse_gpus(text: str | None) -> list[int] | None:
    """Parses a declared GPU list: ``"0,1,3"`` → ``[0, 1, 3]``, ``""`` → ``[]``, ``None`` → ``None``
    (detect).

    Raises:
        ConfigError: an item is not a non-negative integer, or an index repeats.
    """
    if text is None:
        return None
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not all(item.isdigit() for item in items):
        raise ConfigError(f"--gpus: expected comma-separated GPU indices like 0,1,2, got {text!r}")
    indices = [int(item) for item in items]
    if len(set(indices)) != len(indices):
        raise ConfigError(f"--gpus: GPU indices repeat in {text!r}")
    return indices


def detect_gpus(declared: list[int] | None = None) -> list[dict]:
    """The GPUs this worker offers: the ``declared`` indices as they are (memory 0, name
    ``"declared"``), else NVML's, else torch's when an NVIDIA driver is present
    (:func:`nvidia_driver_present`), else none."""
    if declared is not None:
        return [{"index": int(i), "memory": 0, "name": "declared"} for i in declared]
    if importlib.util.find_spec("pynvml") is not None:
        gpus = _nvml_gpus()
        if gpus is not None:
            return gpus
    if not nvidia_driver_present():
        return []
    return _torch_gpus()


def nvidia_driver_present(proc_gpus: str = PROC_GPUS) -> bool:
    """Whether an NVIDIA driver runs here: ``proc_gpus`` lists at least one GPU, or
    ``nvidia-smi`` is on the PATH (the driver installs it; this covers systems without procfs)."""
    try:
        if os.listdir(proc_gpus):
            return True
    except OSError:
        pass
    return shutil.which("nvidia-smi") is not None


def _nvml_gpus() -> list[dict] | None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append({"index": index, "memory": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                         "name": name.decode() if isinstance(name, bytes) else str(name)})
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _torch_gpus() -> list[dict]:
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [{"index": i, "memory": int(torch.cuda.get_device_properties(i).total_memory),
             "name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())]


def gpu_usage(gpus: list[dict]) -> list[dict]:
    """Current utilization of the detected ``gpus`` through NVML; ``[]`` for declared GPUs or
    without NVML."""
    if not gpus or gpus[0].get("name") == "declared" or importlib.util.find_spec("pynvml") is None:
        return []
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        usage = []
        for gpu in gpus:
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu["index"])
            usage.append({"index": gpu["index"],
                          "utilization": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                          "memory_used": int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)})
        return usage
    finally:
        pynvml.nvmlShutdown()
