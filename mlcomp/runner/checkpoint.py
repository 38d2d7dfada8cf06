"""Checkpoint files: model-only and full (resumable) checkpoints, saved atomically.

A *model* checkpoint (``best.pth``, ``last.pth``, ``{stage}.{epoch}.pth``) holds
``model_state_dict``, ``stage``, ``epoch``, ``valid_metrics`` and ``hparams``. A *full* checkpoint
(``*_full.pth``) adds ``optimizer_state_dict``, ``scheduler_state_dict``,
``criterion_state_dict``, ``callbacks`` (name → ``state_dict()``), ``rng`` (python, numpy, torch,
cuda: the generators at the moment of saving), ``loader_rng`` (the generators at the start of the
current loader, before its iterator drew a permutation), ``position`` and ``runner`` (counters
and metrics, see :meth:`mlcomp.runner.runner.Runner.state_dict`) and ``checkpoint_data``.

Every checkpoint holds only what ``torch.load(weights_only=True)`` of the installed torch reads
back (``save_checkpoint`` checks it, naming the key of anything else: :func:`check_plain`), and is
read that way, which never runs code from the file: a pickled payload is refused.
:func:`resolve_checkpoint` is the one place a checkpoint name (``best``, ``last``, a file name, a
path) becomes a file, confined where asked to the run's logdir and the folders the settings allow
(``checkpoint_dirs``). The names and their files are the table of :mod:`mlcomp.checkpoint_names`
(re-exported here: :data:`NAMED`, :data:`FILES`, :func:`checkpoint_path`, ...).
"""
from __future__ import annotations

import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import torch

from mlcomp.checkpoint_names import (BEST, BEST_FULL, FILES, FOLDER, LAST, LAST_FULL, NAMED, checkpoint_path,
                                     full_name)
from mlcomp.errors import ConfigError
from mlcomp.runner import distributed
from mlcomp.runner.seed import get_rng_state

__all__ = [
    "save_checkpoint",
    "write_atomically",
    "load_checkpoint",
    "load_state_checked",
    "model_checkpoint",
    "full_checkpoint",
    "unpack_checkpoint",
    "resolve_checkpoint",
    "resume_checkpoint",
    "confine",
    "check_plain",
    "NAMED",
    "BEST",
    "LAST",
    "BEST_FULL",
    "LAST_FULL",
    "FILES",
    "FOLDER",
    "full_name",
    "checkpoint_path",
    "PARTS",
    "FULL_KEYS",
]

FULL_KEYS = ("model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "criterion_state_dict",
             "callbacks", "rng", "loader_rng", "position", "runner")
"""Keys every full checkpoint has."""

PARTS = ("model", "criterion", "optimizer", "scheduler")
"""The runner's parts a checkpoint holds states of (:func:`unpack_checkpoint`)."""
_OPCODE_TYPES = (str, int, float, bool, bytes, type(None))
"""Exact types pickle writes with opcodes of its own, which the weights-only unpickler always reads."""


def write_atomically(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` through a temporary file of its own (a unique name in the same
    folder) and ``os.replace``, creating folders; returns ``path``. A reader never sees a partial
    file, a failed write leaves the previous file as it was, and writers racing for one path each
    replace it whole (the last one wins).

    Raises:
        OSError: the folder cannot be created or written; the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike, *more_paths) -> Path:
    """Write ``checkpoint`` to ``path`` (and ``more_paths``: serialised once, written to each)
    atomically (:func:`write_atomically`), creating folders; returns ``path``.

    Raises:
        ConfigError: the checkpoint holds something other than tensors and plain types
            (:func:`check_plain`).
    """
    check_plain(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    for target in (path, *more_paths):
        write_atomically(target, buffer.getbuffer())
    return Path(path)


def check_plain(value: Any, key: str = "checkpoint") -> None:
    """Checks that ``value`` holds only what ``torch.load(weights_only=True)`` of the installed torch
    reads back, so that a checkpoint saved now also loads. Dicts, lists, tuples and torch's own
    allowed containers (sets, ``OrderedDict``, ``Counter`` such as ``MultiStepLR``'s milestones,
    ``torch.Size``) are walked; tensors and str/int/float/bool/bytes/None pass at once; any other
    value (a dtype, a device, a complex, a class the user allowed with
    ``torch.serialization.add_safe_globals``) passes when it survives a weights-only round trip
    through memory, the one judge of what torch accepts. A ``defaultdict``, a ``deque``, a
    ``frozenset``, a numpy scalar or a user object is refused.

    Raises:
        ConfigError: names the dotted key of the first value that is not allowed and its type.
    """
    _check_value(value, key, _weights_only_containers())


def _weights_only_containers() -> frozenset[type]:
    """The container types the weights-only unpickler of the installed torch builds: the classes in
    its built-in allow-list (``torch._weights_only_unpickler``, private but the only source) that are
    dicts, lists, tuples or sets, plus the plain ones pickle builds with opcodes."""
    from torch import _weights_only_unpickler

    allowed = _weights_only_unpickler._get_allowed_globals().values()
    return frozenset({dict, list, tuple, *(kind for kind in allowed if isinstance(kind, type)
                                          and issubclass(kind, (dict, list, tuple, set)))})


def _check_value(value: Any, key: str, containers: frozenset[type]) -> None:
    kind = type(value)
    if kind in _OPCODE_TYPES or kind in (torch.Tensor, torch.nn.Parameter):
        return
    if kind in containers:
        if (kind is list or kind is tuple) and all(type(item) in _OPCODE_TYPES for item in value):
            return  # e.g. an RNG state's hundreds of ints: nothing to walk
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for name, item in items:
            _check_value(name, f"{key} key", containers)
            _check_value(item, f"{key}.{name}", containers)
    elif not _loads_back(value):
        raise ConfigError(f"{key}: a {kind.__module__}.{kind.__qualname__} cannot be saved in a checkpoint; "
                          f"allowed: what torch.load(weights_only=True) reads back (tensors, str, int, float, bool, "
                          f"None, bytes, lists, tuples, sets, dicts, OrderedDict, Counter, torch dtypes and "
                          f"devices); convert it in the state_dict() that returns it")


def _loads_back(value: Any) -> bool:
    """Whether ``torch.load(weights_only=True)`` reads back what ``torch.save(value)`` writes."""
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:  # noqa: BLE001 - pickling fails with many types (TypeError, PicklingError, ...)
        return False
    return True


def confine(path: str | os.PathLike, roots: Sequence[str | os.PathLike], what: str = "checkpoint") -> Path:
    """``path`` made absolute (symlinks resolved) if it lies inside one of ``roots``.

    Raises:
        ConfigError: it lies outside every root (the message names them).
    """
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise ConfigError(f"{what} {os.fspath(path)!r} refused: only files inside "
                          f"{' or '.join(str(root) for root in roots)} are allowed (add a folder to the "
                          f"checkpoint_dirs setting to allow it)")
    return resolved


def resolve_checkpoint(logdir: str | os.PathLike | None, which: str | os.PathLike, *, full: bool = False,
                       allowed_dirs: Sequence[str | os.PathLike] | None = None,
                       base: str | os.PathLike | None = None, missing_ok: bool = False) -> Path | None:
    """The checkpoint file ``which`` names for the run in ``logdir``: mlcomp's one resolver.

    Args:
        which: ``best`` or ``last`` (``logdir/checkpoints/{which}.pth``, ``{which}_full.pth``
            with ``full``), ``best_full``/``last_full``, a file name inside ``logdir/checkpoints``
            (``stage1.3.pth``) or a path (relative to ``base``, default the working directory).
        full: ``best``/``last`` mean the full (resumable) checkpoints.
        allowed_dirs: ``None`` takes any path (a user's own ``mlcomp run --resume``); otherwise
            the file must lie inside ``logdir`` or one of these folders (``checkpoint_dirs``), so
            a task cannot be made to read a file from elsewhere.
        missing_ok: a missing ``best``/``last`` gives None instead of an error (a run stopped
            before its first checkpoint starts afresh).

    Raises:
        ConfigError: no such file (the message names the paths tried and the checkpoints
            present), a name without a logdir, or a path outside the allowed folders.
    """
    name = os.fspath(which)
    folder = Path(logdir) / FOLDER if logdir is not None else None
    if name in NAMED:
        if folder is None:
            raise ConfigError(f"checkpoint {name!r}: needs a logdir (args.logdir or --logdir)")
        candidates = [checkpoint_path(logdir, name, full=full)]
    else:
        path = Path(base or Path.cwd()) / name  # an absolute name stays as it is
        candidates = [path] + ([folder / name] if folder is not None and Path(name).name == name else [])
    for path in candidates:
        if path.is_file():
            if allowed_dirs is not None:
                confine(path, [*([logdir] if logdir is not None else []), *allowed_dirs])
            return path
    if missing_ok and name in NAMED:
        return None
    present = sorted(p.name for p in folder.glob("*.pth")) if folder is not None and folder.is_dir() else []
    tried = " or ".join(str(path) for path in candidates)
    where = f"; checkpoints in {folder}: {', '.join(present) or 'none'}" if folder is not None else ""
    raise ConfigError(f"checkpoint {name}: no such file ({tried}){where} (or give best, last or a path)")


def resume_checkpoint(args: Mapping[str, Any], logdir: str | os.PathLike | None) -> Path | None:
    """The full checkpoint a run of the runner's config continues from: ``args.resume`` (a path,
    or ``best``/``last``; must exist), else ``args.autoresume`` (``last`` or ``best``: its full
    checkpoint in ``logdir`` when it exists), else None.

    Raises:
        ConfigError: ``args.resume`` does not exist, or a name without a logdir.
    """
    resume, auto = args.get("resume"), args.get("autoresume")
    if resume:
        return resolve_checkpoint(logdir, resume, full=True)
    if auto:
        return resolve_checkpoint(logdir, auto, full=True, missing_ok=True)
    return None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint onto the CPU with ``torch.load(weights_only=True)``.

    Raises:
        ConfigError: the file does not exist, cannot be read, holds pickled Python objects other
            than tensors and plain types (refused, never unpickled), or is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = str(e).partition("WeightsUnpickler error: ")[2].splitlines()[0:1] or [type(e).__name__]
        raise ConfigError(f"checkpoint {path}: refused: it holds pickled Python objects, not only tensors and "
                          f"plain types ({refused[0]}); mlcomp reads checkpoints with torch.load(weights_only="
                          f"True) and never unpickles code from a file") from None
    except Exception as e:  # a truncated or foreign file: the user's input, not a bug
        raise ConfigError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        raise ConfigError(f"checkpoint {path}: not an mlcomp checkpoint (no 'model_state_dict' key)")
    return checkpoint


def load_state_checked(module: torch.nn.Module, state: dict[str, Any], path, what: str = "model") -> None:
    """``module.load_state_dict(state)`` (strict) with a user-facing error on mismatch.

    Raises:
        ConfigError: names ``path``, the missing and unexpected keys and the shape mismatches.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs {what} {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(f"checkpoint {path}: {what} state does not fit: missing keys {missing}, "
                          f"unexpected keys {unexpected}, shape mismatches {shapes}")
    module.load_state_dict(state)


def _state(obj) -> dict | None:
    return None if obj is None else obj.state_dict()


def model_checkpoint(runner) -> dict[str, Any]:
    """The model-only checkpoint of ``runner`` at the current stage and epoch."""
    return {"model_state_dict": distributed.unwrap_model(runner.model).state_dict(),
            "stage": runner.stage_name, "epoch": runner.epoch,
            "valid_metrics": dict(runner.valid_metrics), "hparams": runner.hparams}


def full_checkpoint(runner, epoch_done: bool = False, with_batch: bool = False) -> dict[str, Any]:
    """Everything needed to continue ``runner`` exactly where it is.

    Args:
        epoch_done: True at an epoch end (resume starts the next epoch); False after a batch
            (resume continues with the next batch of the current loader).
        with_batch: taken inside ``on_batch_end``: the loader means include this batch's
            metrics, as the runner will once the handlers are done (``Runner.state_dict``).
    """
    checkpoint = model_checkpoint(runner)
    checkpoint.update(
        optimizer_state_dict=_state(runner.optimizer),
        scheduler_state_dict=_state(runner.scheduler),
        criterion_state_dict=_state(runner.criterion),
        callbacks={name: cb.state_dict() for name, cb in runner.callbacks.items() if hasattr(cb, "state_dict")},
        rng=get_rng_state(), loader_rng=runner.loader_rng_state,
        position=runner.position(epoch_done), runner=runner.state_dict(with_batch=with_batch),
        checkpoint_data=dict(runner.checkpoint_data or {}))
    return checkpoint


def unpack_checkpoint(runner, checkpoint: dict[str, Any], path, parts: Collection[str] = PARTS,
                      callbacks: bool = False) -> None:
    """Load ``checkpoint`` into those of ``runner``'s model, criterion, optimizer and scheduler that
    ``parts`` names (the states present; a model-only checkpoint sets the model), with ``callbacks``
    also into its callbacks (by name).

    Raises:
        ConfigError: a state does not fit (the message names ``path`` and what differs).
    """
    if "model" in parts:
        load_state_checked(distributed.unwrap_model(runner.model), checkpoint["model_state_dict"], path)
    for key in (part for part in PARTS[1:] if part in parts):
        obj, state = getattr(runner, key), checkpoint.get(f"{key}_state_dict")
        if obj is not None and state is not None:
            try:
                obj.load_state_dict(state)
            except (KeyError, ValueError, RuntimeError) as e:
                raise ConfigError(f"checkpoint {path}: {key} state does not fit: {e}") from e
    for name, state in (checkpoint.get("callbacks") or {}).items() if callbacks else ():
        callback = runner.callbacks.get(name)
        if callback is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(state)
