"""TorchScript export of a model (Catalyst 20.x ``catalyst.utils.tracing``): :func:`trace_model`
turns a module into a ``torch.jit.ScriptModule`` with ``torch.jit.trace`` (recording the
operations run on one example batch) or ``torch.jit.script`` (compiling the Python source, which
keeps data-dependent control flow); :func:`save_traced` and :func:`load_traced` write and open
the file. :mod:`mlcomp.runner.trace` re-exports these and adds :func:`~mlcomp.runner.trace.trace_logdir`,
which traces a finished run's model; ``TracingCallback`` uses this module directly.

TorchScript is deprecated from torch 2.10 on in favour of ``torch.export`` (every ``torch.jit``
entry point warns), but it stays the format that ``torch.jit.load`` and libtorch open without the
model's Python code, so mlcomp keeps it: the calls here silence exactly that deprecation warning,
and :func:`load_traced` opens a file the same way.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.checkpoint import write_atomically

__all__ = ["MODES", "trace_model", "load_traced", "save_traced", "trace_name", "example_input", "check_request"]

logger = logging.getLogger(__name__)

MODES = ("eval", "train")
"""The module modes a model can be traced in (``model.eval()`` / ``model.train()``)."""


@contextlib.contextmanager
def _torchscript():
    """Silence torch's "`torch.jit.*` is deprecated" warnings, and only those, for the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def load_traced(path: str | os.PathLike, map_location: str | torch.device | None = None):
    """Open a file written by :func:`save_traced` (``torch.jit.load`` without its deprecation warning).

    Raises:
        ConfigError: the file does not exist.
    """
    if not Path(path).is_file():
        raise ConfigError(f"traced model {path}: no such file")
    with _torchscript():
        return torch.jit.load(str(path), map_location=map_location)


def check_request(model: torch.nn.Module, mode: str, method_name: str, where: str = "") -> None:
    """Fail before any work on a mode that does not exist or a method the model lacks."""
    if mode not in MODES:
        raise ConfigError(f"trace mode {mode!r} is not allowed; use one of {', '.join(MODES)}")
    if not callable(getattr(model, method_name, None)):
        raise ConfigError(f"{where}model {type(model).__name__} has no method {method_name!r} to trace")


def _prepare(model: torch.nn.Module, mode: str, requires_grad: bool, method_name: str) -> None:
    check_request(model, mode, method_name)
    getattr(model, mode)()
    for parameter in model.parameters():
        parameter.requires_grad_(requires_grad)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return tuple(_to_device(value, device) for value in batch)
    return batch


def _jit_trace(model: torch.nn.Module, batch: Any, method_name: str, check: bool):
    is_kwargs = isinstance(batch, Mapping)
    inputs = dict(batch) if is_kwargs else (tuple(batch) if isinstance(batch, tuple) else (batch,))
    return torch.jit.trace_module(model, {method_name: inputs}, check_trace=check, strict=False,
                                  example_inputs_is_kwarg=is_kwargs)


def _jit_script(model: torch.nn.Module, method_name: str):
    scripted = torch.jit.script(model)
    if not hasattr(scripted, method_name):
        raise ConfigError(f"model {type(model).__name__}: method {method_name!r} is not compiled by "
                          f"torch.jit.script; decorate it with @torch.jit.export")
    return scripted


def trace_model(model: torch.nn.Module, batch: Any, method_name: str = "forward", mode: str = "eval",
                requires_grad: bool = False, script: bool = False, device: str | torch.device | None = None):
    """TorchScript of ``model``'s ``method_name`` (Catalyst 20.x ``trace_model``).

    The model is put in ``mode`` and its parameters' ``requires_grad`` set to ``requires_grad``
    *in place* (the ScriptModule shares the parameters), then traced on ``batch`` with
    ``torch.jit.trace_module`` under ``torch.set_grad_enabled(requires_grad)``. When tracing
    fails (an operation the tracer cannot record), ``torch.jit.script`` is tried instead; with
    ``script=True`` it is used directly and ``batch`` is not needed. In ``eval`` mode the trace is
    checked by running it again (``check_trace``); in ``train`` mode it is not (dropout differs).

    Args:
        model: the module (moved to ``device`` when given).
        batch: the example input of the method: a tensor (one positional argument), a tuple or
            list of tensors (positional arguments) or a dict (keyword arguments), e.g. the
            ``features`` tensor ``[batch, *]`` of one loader batch.
        method_name: the method to export; other methods than ``forward`` need
            ``@torch.jit.export`` to survive ``script``.
        mode: ``"eval"`` or ``"train"``.
        requires_grad: keep gradients on (for fine-tuning the exported model).
        script: use ``torch.jit.script`` instead of tracing.
        device: where to trace; default: where the model is.

    Returns:
        A ``torch.jit.ScriptModule``; save it with ``torch.jit.save``.

    Raises:
        ConfigError: ``mode`` is not allowed, the model has no ``method_name``, or the model can be
            neither traced nor scripted (the message carries both errors).
    """
    _prepare(model, mode, requires_grad, method_name)
    if device is not None:
        model.to(device)
        batch = _to_device(batch, torch.device(device))
    with torch.set_grad_enabled(requires_grad), _torchscript():
        if script:
            return _jit_script(model, method_name)
        try:
            return _jit_trace(model, batch, method_name, check=mode == "eval")
        except Exception as trace_error:  # noqa: BLE001 - any tracer failure: try the compiler
            logger.info("tracing %s.%s failed (%s); trying torch.jit.script", type(model).__name__,
                        method_name, trace_error)
            try:
                return _jit_script(model, method_name)
            except Exception as script_error:  # noqa: BLE001
                raise ConfigError(f"model {type(model).__name__}.{method_name} can be neither traced "
                                  f"({type(trace_error).__name__}: {trace_error}) nor scripted "
                                  f"({type(script_error).__name__}: {script_error})") from script_error


def trace_name(checkpoint: str, mode: str = "eval", method_name: str = "forward",
               requires_grad: bool = False) -> str:
    """File name of a trace: ``traced-{checkpoint}-{mode}.pth``, with ``-{method}`` after
    ``traced`` for another method than ``forward`` and ``-with-grad`` before ``.pth`` when
    gradients are kept (Catalyst 20.x ``get_trace_name``). ``checkpoint`` is the checkpoint's
    name without ``.pth`` (``best``, ``last``, ``stage1.3``)."""
    parts = ["traced"]
    if method_name != "forward":
        parts.append(method_name)
    parts += [checkpoint, mode]
    if requires_grad:
        parts.append("with-grad")
    return "-".join(parts) + ".pth"


def example_input(batch: Any, input_key: str | list[str] | None = "features", where: str = "batch"):
    """The model's input in a loader batch: ``batch[input_key]`` for a dict batch (a tuple of
    values for a list of keys, the whole dict for ``None``), the first element of a tuple or list
    batch, the batch itself when it is a tensor.

    Raises:
        ConfigError: a key is missing from the dict batch (names the key, ``where`` and the keys present).
    """
    if isinstance(batch, Mapping):
        if input_key is None:
            return dict(batch)
        keys = [input_key] if isinstance(input_key, str) else list(input_key)
        missing = [key for key in keys if key not in batch]
        if missing:
            raise ConfigError(f"{where}: runner_params.input_key {missing[0]!r} is not in the batch; "
                              f"its keys are {sorted(batch)}")
        return batch[keys[0]] if len(keys) == 1 else tuple(batch[key] for key in keys)
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def save_traced(traced, out: str | os.PathLike) -> Path:
    """Write a ScriptModule to ``out`` atomically (a temporary file, then a rename); returns the path."""
    buffer = io.BytesIO()
    with _torchscript():
        torch.jit.save(traced, buffer)
    return write_atomically(Path(out), buffer.getbuffer())
