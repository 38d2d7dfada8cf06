"""Data-parallel training with ``torch.distributed``: the helpers the runner loop calls, and launchers.

One process per device (the PyTorch DDP recipe, "Getting Started with Distributed Data Parallel",
and ``torch.distributed.run``): every process reads its place from the environment variables the
launchers below set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``),
joins the process group (NCCL on CUDA, gloo on CPU), wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` and reads its own shard of each loader through a
:class:`~torch.utils.data.distributed.DistributedSampler`.

Every helper is a cheap no-op or the identity when the process group is not initialized, so the
runner calls them unconditionally. The order of the calls in a run:

.. code-block:: python

    setup()                                   # once per process, before the first stage
    model = wrap_model(model.to(device()), device())
    loader = shard_loader(loader, shuffle=is_train)
    for epoch in ...:
        set_epoch(loader, epoch)              # a new shuffle per epoch, the same on every rank
        ...                                   # DDP averages the gradients in backward()
        metrics = all_reduce_mean(metrics)    # loader metrics: mean over ranks
        if is_master(): save(unwrap_model(model).state_dict())
    cleanup()

Launching, on one machine, with a free loopback port as the rendezvous:

- :func:`launch` runs a picklable function in N fresh ``python -P`` processes and returns rank
  0's result, re-raising the first failure with its own class (``RunStopped`` stays
  ``RunStopped``); the train executor runs ``run_config`` this way.
- :func:`spawn_processes` runs a command N times (``torchrun --standalone`` style) and returns the
  first non-zero exit status (75 for a stopped run), e.g. ``mlcomp run`` once per rank.

Both watch their processes' exits (pidfds) and, when one fails, end the others: SIGTERM, then
SIGKILL after :data:`RANK_GRACE` seconds. A launched process pins mlcomp's packages before it
takes the launcher's ``sys.path`` and loads its function (:mod:`mlcomp.pinning`), so a user's
``executors/`` on that path cannot replace mlcomp's.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing.connection as mp_connection
import os
import pickle
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from typing import Any, Callable, Iterable, Mapping, Sequence

import psutil
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data.distributed import DistributedSampler

from mlcomp.errors import ConfigError
from mlcomp.pinning import pin_own_packages

__all__ = [
    "ENV_KEYS",
    "RANK_GRACE",
    "setup",
    "cleanup",
    "rank",
    "local_rank",
    "world_size",
    "is_distributed",
    "is_master",
    "device",
    "wrap_model",
    "unwrap_model",
    "broadcast_model",
    "shard_loader",
    "set_epoch",
    "all_reduce_mean",
    "any_true",
    "barrier",
    "free_port",
    "rank_env",
    "launch",
    "spawn_processes",
]

logger = logging.getLogger(__name__)

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""The environment variables of ``torch.distributed``'s ``env://`` initialisation, as torchrun sets them."""

RANK_GRACE = 5.0
"""Seconds the other ranks get to end after SIGTERM once one rank has failed, before SIGKILL
(:func:`launch`, :func:`spawn_processes`): a rank blocked in a collective with a dead peer
never reaches the batch boundary where the runner honours SIGTERM, and gloo's and NCCL's own
timeouts are many minutes."""

_LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_JOB = "job"  # what launch() hands its processes, in its folder (beside the outcome files)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} should be an integer") from None


# ----------------------------------------------------------------------------- process group


def setup(backend: str | None = None) -> bool:
    """Join the process group described by the environment, if there is one.

    Reads ``WORLD_SIZE`` (processes in all, default 1); when it is above 1, initialises the default
    process group with ``init_method="env://"`` (which reads ``RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``) and, on CUDA, makes ``cuda:LOCAL_RANK`` the current device. Calling it again
    in a process already in a group does nothing.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``"mpi"``; ``None`` picks NCCL when CUDA is available,
            else gloo (PyTorch's recommendation in the ``torch.distributed`` docs, "Backends").

    Returns:
        True when the process is in a group of more than one process, False otherwise.

    Raises:
        ConfigError: ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` is not an integer, ``RANK`` is missing
            or not below ``WORLD_SIZE``, or ``torch.distributed`` is not built in.
    """
    if is_distributed():
        return True
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return False
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={size} asks for distributed training, but this torch has no torch.distributed")
    global_rank = _env_int("RANK", -1)
    if not 0 <= global_rank < size:
        raise ConfigError(f"environment variable RANK={os.environ.get('RANK')!r} should be in 0..{size - 1} "
                          f"(WORLD_SIZE={size})")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://", rank=global_rank, world_size=size)
    logger.info("rank %d/%d joined the %s process group (local rank %d)", global_rank, size, backend, local_rank())
    return True


def cleanup() -> None:
    """Leave and destroy the default process group; nothing when there is none.

    Ranks meet at a barrier first, so no rank tears down its connections while a peer still has
    traffic in flight (gloo aborts the peer with "Connection closed by peer" otherwise). Called
    while an exception propagates (from a ``finally`` or ``except`` block), it skips the barrier:
    the peers of a failing rank may wait in another collective and would never meet it there,
    and the closed connections make them fail rather than wait.
    """
    if is_distributed():
        if sys.exc_info()[1] is None:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True when this process is in an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process, 0-based; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """Rank of this process on its machine (``LOCAL_RANK``, the index of its GPU); 0 when unset."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Number of processes in the group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_master() -> bool:
    """True on rank 0, the process that writes checkpoints and logs (always True when not distributed)."""
    return rank() == 0


def device() -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` in a distributed run on CUDA, ``cuda`` when
    CUDA is available, else ``cpu``."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if is_distributed():
        return torch.device("cuda", local_rank())
    return torch.device("cuda")


def barrier() -> None:
    """Wait until every rank reaches this point (``torch.distributed.barrier``); nothing when alone."""
    if is_distributed():
        dist.barrier()


# ----------------------------------------------------------------------------- model


def wrap_model(model: torch.nn.Module, device: torch.device | str | None = None) -> torch.nn.Module:
    """Wrap ``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from the
    same weights, and averages the gradients over ranks in ``backward()`` (PyTorch DDP docs).
    The model must already be on ``device``. On CUDA the wrapper gets ``device_ids=[index]``.

    Returns ``model`` itself when not distributed, when it is already wrapped, or when none of its
    parameters requires a gradient (DDP refuses such modules; inference needs no wrapper).
    """
    if not is_distributed() or isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model
    target = torch.device(device) if device is not None else next(model.parameters()).device
    device_ids = [target.index if target.index is not None else torch.cuda.current_device()] \
        if target.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, else ``model``.
    Checkpoints store the unwrapped ``state_dict`` (no ``module.`` prefix)."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return model.module
    return model


# ----------------------------------------------------------------------------- data


def shard_loader(loader: Iterable, shuffle: bool, seed: int = 0, drop_last: bool = False) -> Iterable:
    """A DataLoader that reads only this rank's share of ``loader``'s dataset.

    The new loader keeps ``batch_size``, ``collate_fn``, ``num_workers``, ``pin_memory``,
    ``drop_last``, ``timeout``, ``worker_init_fn`` and ``persistent_workers`` and samples with a
    ``DistributedSampler(shuffle=shuffle, seed=seed)``: each rank gets ``ceil(len(dataset) /
    world_size)`` indices (the sampler pads by repeating indices unless ``drop_last``), so every
    rank runs the same number of batches, which DDP needs. The global batch of one step is
    ``batch_size * world_size`` samples. Call :func:`set_epoch` before each epoch.

    Returns ``loader`` unchanged when not distributed, when it is not a ``DataLoader`` (a plain
    iterable must shard itself), when it reads an ``IterableDataset``, or when it already uses a
    ``DistributedSampler`` for this rank and world size (one made for another world, e.g. a
    single-replica sampler, is replaced).

    Raises:
        ConfigError: the loader uses a custom ``batch_sampler`` (``batch_size=None``), which cannot
            be sharded without knowing how it batches.
    """
    if not is_distributed() or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset) or _is_sharded(loader.sampler):
        return loader
    if loader.batch_size is None:
        raise ConfigError(f"cannot shard a DataLoader with a custom batch_sampler "
                          f"({type(loader.batch_sampler).__name__}) over {world_size()} processes; "
                          f"give it batch_size and a plain sampler instead")
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=shuffle, seed=seed, drop_last=drop_last)
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout,
                      worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
                      persistent_workers=loader.persistent_workers, **extra)


def _is_sharded(sampler) -> bool:
    return (isinstance(sampler, DistributedSampler) and sampler.num_replicas == world_size()
            and sampler.rank == rank())


def set_epoch(loader: Iterable, epoch: int) -> None:
    """Tell ``loader``'s sampler the epoch (``DistributedSampler.set_epoch``), so that every rank
    shuffles the same new permutation; nothing when the loader has no such sampler."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


# ----------------------------------------------------------------------------- metrics


def _comm_device() -> torch.device:
    return device() if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(metrics: Mapping[str, float]) -> dict[str, float]:
    """Mean of each metric over the ranks, with one ``all_reduce`` for the whole dict.

    Values are packed in sorted key order into one float64 tensor (on the current CUDA device for
    NCCL, on the CPU for gloo), summed over ranks and divided by the world size. Every rank must
    pass the same keys, or the collective mismatches. With equal shard sizes (what
    :func:`shard_loader` gives) the mean of per-rank sample-weighted means is the mean over the
    global set of samples the ranks read.

    Args:
        metrics: name → number (a float, int or 0-dim tensor).

    Returns:
        A new dict name → float; a plain copy (values as floats) when not distributed.
    """
    if not is_distributed() or not metrics:
        return {key: float(value) for key, value in metrics.items()}
    keys = sorted(metrics)
    packed = torch.tensor([float(metrics[key]) for key in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= world_size()
    return dict(zip(keys, packed.tolist()))


def any_true(flag: bool) -> bool:
    """True when ``flag`` is true on at least one rank (one ``all_reduce`` with ``MAX``).

    The runner uses it to agree on a stop request at a batch boundary, so that every rank leaves
    the loop after the same batch and none waits in a collective for the others.
    """
    if not is_distributed():
        return bool(flag)
    packed = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


def broadcast_model(model: torch.nn.Module) -> None:
    """Copies rank 0's parameters and buffers to every rank (one ``broadcast`` per tensor, on the
    communication device), in place; nothing when not distributed.

    For weights loaded on rank 0 after the model was wrapped (a stage's ``load_on_stage_start``)
    from a file the other computers of a gang may not have: DDP broadcasts only at construction.
    """
    if not is_distributed():
        return
    for tensor in unwrap_model(model).state_dict().values():
        moved = tensor.to(_comm_device())
        dist.broadcast(moved, src=0)
        if moved is not tensor:
            tensor.copy_(moved)


# ----------------------------------------------------------------------------- launchers


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def rank_env(rank_: int, nprocs: int, master_port: int, master_addr: str = _LOOPBACK, first_rank: int = 0,
             world_size: int | None = None) -> dict[str, str]:
    """The ``torch.distributed`` environment of the local process ``rank_`` of the ``nprocs`` a
    machine runs (``LOCAL_RANK`` = ``rank_``, ``RANK`` = ``first_rank + rank_``) in a group of
    ``world_size`` processes (default ``nprocs``: one machine) whose rank 0 listens on
    ``master_addr:master_port``, as strings for ``os.environ``."""
    return {"RANK": str(first_rank + rank_), "LOCAL_RANK": str(rank_), "WORLD_SIZE": str(world_size or nprocs),
            "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}


def _check_nprocs(nprocs: int) -> None:
    if not isinstance(nprocs, int) or isinstance(nprocs, bool) or nprocs < 1:
        raise ConfigError(f"nprocs should be a positive integer (processes, one per device), got {nprocs!r}")


def _rank_main() -> None:
    """Body of each process :func:`launch` starts, as ``python -P -c ... OUTDIR`` with the
    :func:`rank_env` of its rank in the environment.

    It pins mlcomp's packages (:func:`mlcomp.pinning.pin_own_packages`) while ``sys.path`` is
    still the interpreter's own (``-P``: not even the working folder), then takes the launcher's
    ``sys.path`` (which may hold user folders) and loads the function and its arguments from
    ``OUTDIR/job``. The outcome goes to ``OUTDIR/<local rank>.pkl``, not a pipe: a pipe
    holding a large result would block the process's exit and with it the launcher's wait."""
    outdir = sys.argv[1]
    pin_own_packages()
    with open(os.path.join(outdir, _JOB), "rb") as f:
        job = pickle.load(f)  # plain types only: nothing of the user's is imported yet
    _die_with_parent(job["parent"])
    sys.path[:] = job["sys_path"]
    if job["main"] is not None:
        _load_main(job["main"])
    index = local_rank()
    try:
        fn, args = pickle.loads(job["call"])
        setup(job["backend"])
        result = fn(*args)
        _write_outcome(outdir, index, True, result if index == 0 else None)
    except BaseException as error:  # noqa: BLE001 - handed to the launcher, then re-raised here
        _write_outcome(outdir, index, False, error)
        raise
    finally:
        cleanup()  # without its barrier while an error propagates


def _load_main(path: str) -> None:
    """Run the launcher's main script ``path`` as ``__mp_main__`` and make it ``__main__`` too,
    so a function defined there can be unpickled (what :mod:`multiprocessing`'s ``spawn`` does)."""
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends (Linux
    ``prctl(PR_SET_PDEATHSIG)``; nothing elsewhere), so no rank outlives a launcher killed with
    SIGKILL; exits at once when the parent ``parent`` (a pid) is already gone."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _write_outcome(outdir: str, index: int, ok: bool, value: Any) -> None:
    if not ok:
        value = _pack_error(value)
    try:  # the parent must be able to load it back
        data = pickle.dumps((time.time(), ok, value))
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - an unpicklable result, or an error of a class defined in a function
        text = value[3] if not ok else repr(value)
        data = pickle.dumps((time.time(), False, _pack_error(RuntimeError(f"rank {index} failed:\n{text}"))))
    path = os.path.join(outdir, f"{index}.pkl")
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _pack_error(error: BaseException) -> tuple:
    """``error`` as (class, args, attributes, traceback text): rebuilt without calling its
    ``__init__``, so exceptions whose constructor takes other arguments than ``args`` (such as
    ``RunStopped``) keep their class and attributes."""
    text = "".join(traceback.format_exception(error))
    return type(error), error.args, dict(vars(error)), text


def _unpack_error(packed: tuple, index: int) -> BaseException:
    cls, args, state, text = packed
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    error.add_note(f"raised on rank {index}:\n{text}")
    return error


def _read_outcomes(outdir: str) -> dict[int, tuple[float, bool, Any]]:
    outcomes = {}
    for name in os.listdir(outdir):
        if name.endswith(".pkl"):
            with open(os.path.join(outdir, name), "rb") as f:
                stamp, ok, value = pickle.load(f)
            index = int(name[:-4])
            outcomes[index] = (stamp, ok, value if ok else _unpack_error(value, index))
    return outcomes


def launch(fn: Callable[..., Any], nprocs: int, *args: Any, backend: str | None = None,
           master_port: int | None = None, master_addr: str = _LOOPBACK, first_rank: int = 0,
           world_size: int | None = None, grace: float = RANK_GRACE) -> Any:
    """Run ``fn(*args)`` in ``nprocs`` new processes that form one process group (or this
    machine's part of a group of ``world_size`` processes on several machines, ranks
    ``first_rank`` … ``first_rank + nprocs - 1``), and wait.

    Each process is a fresh ``python -P`` (:func:`_rank_main`) that pins mlcomp's own packages
    before it takes this process's ``sys.path``, so a user's ``executors/`` (or ``mlcomp/``) on
    that path or in the working folder cannot replace mlcomp's with any install (the default
    editable install's finder comes after every folder on ``sys.path``). It gets the environment
    of :func:`rank_env` (``master_addr``, loopback by default, and ``master_port`` or a free port:
    give both for a group across machines), calls :func:`setup` with ``backend`` before ``fn``
    and :func:`cleanup` after it, and is killed by the kernel if this process dies. ``fn`` and
    ``args`` must be picklable, ``fn`` by reference: defined at module level in a module or in
    the main script (which each process then runs as ``__mp_main__``, as ``spawn`` does). When a
    process fails, the others get SIGTERM and, ``grace`` seconds later, SIGKILL
    (:func:`spawn_processes` does the same); its exception is raised here with its class and attributes (so :class:`mlcomp.runner.RunStopped` or a
    ConfigError keep their meaning), its traceback on the rank attached as a note; an exception
    of a class that cannot be imported comes back as a RuntimeError carrying that traceback. A
    SIGTERM received here while waiting (main thread only) is forwarded to the processes.

    With ``nprocs == 1`` in a group of one no process is started: ``fn(*args)`` runs here.

    Returns:
        What ``fn`` returned on this machine's first process (rank 0 on one machine; it must be
        picklable).

    Raises:
        ConfigError: ``nprocs`` is not a positive integer.
        The exception of the first process that failed; ``RuntimeError`` when a process died
        without one (killed by a signal, or exited with a non-zero code).
    """
    _check_nprocs(nprocs)
    if nprocs == 1 and (world_size or 1) == 1:
        return fn(*args)
    port = master_port or free_port()
    with tempfile.TemporaryDirectory(prefix="mlcomp-launch-") as outdir:
        with open(os.path.join(outdir, _JOB), "wb") as f:
            pickle.dump({"parent": os.getpid(), "sys_path": list(sys.path), "backend": backend,
                         "main": _main_script(fn), "call": pickle.dumps((fn, args))}, f)
        command = [sys.executable, "-P", "-c", f"from {__name__} import _rank_main; _rank_main()", outdir]
        envs = [{**os.environ, **rank_env(i, nprocs, port, master_addr, first_rank, world_size)} for i in range(nprocs)]
        failure = _run_ranks(command, envs, grace)
        if failure is not None:
            raise _launch_error(_read_outcomes(outdir), *failure, first_rank)
        return _read_outcomes(outdir)[0][2]


def _main_script(fn: Callable) -> str | None:
    """The main script's path when ``fn`` is defined in it (its processes must run it first)."""
    defined_in_main = getattr(fn, "__module__", None) == "__main__"
    return getattr(sys.modules["__main__"], "__file__", None) if defined_in_main else None


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _launch_error(outcomes: dict[int, tuple[float, bool, Any]], index: int, code: int,
                  first_rank: int) -> BaseException:
    """What :func:`launch` raises when its process ``index`` was the first seen to fail, with exit
    ``code``: the earliest error a process reported, unless ``index`` died without reporting one
    (killed, ``os._exit``), when the others' errors (a closed connection) only follow from it."""
    own = outcomes.get(index)
    if own is None or own[1]:
        return RuntimeError(f"a distributed process failed: rank {first_rank + index} {_how(code)}")
    return min(((stamp, value) for stamp, ok, value in outcomes.values() if not ok), key=lambda item: item[0])[1]


def spawn_processes(argv: Sequence[str], nprocs: int, env: Mapping[str, str] | None = None,
                    master_port: int | None = None, grace: float = RANK_GRACE) -> int:
    """Run the command ``argv`` as ``nprocs`` processes forming one group on this machine; wait.

    The subprocess twin of :func:`launch`, like ``torchrun --standalone --nproc-per-node N``: every
    process gets ``env`` (default: this process's environment) plus :func:`rank_env`. A SIGTERM
    received here while waiting (main thread only) is forwarded to the children. When one
    process exits non-zero the others get SIGTERM, then SIGKILL (with their own children) after
    ``grace`` seconds. For a Python command, give ``-P`` (as ``mlcomp run --nproc`` does), so the
    working folder, which may hold a user's ``executors/``, is not put first on ``sys.path``.

    Args:
        argv: the command, e.g. ``[sys.executable, "-P", "-c", "from mlcomp.cli import main; main()",
            "run", "--config", path]``.
        nprocs: processes to start (one per device).
        env: base environment of the children.
        master_port: rendezvous port on 127.0.0.1; a free one when ``None``.
        grace: seconds between SIGTERM and SIGKILL for the survivors of a failure.

    Returns:
        0 when all exited with 0, else the exit code of the first process that failed (a negative
        number is the signal that killed it, as in :mod:`subprocess`); so a run stopped with
        ``EXIT_STOPPED`` (75) returns 75.

    Raises:
        ConfigError: ``nprocs`` is not a positive integer or ``argv`` is empty.
    """
    _check_nprocs(nprocs)
    if not argv:
        raise ConfigError("spawn_processes: argv is empty; give the command to run in each process")
    base = dict(os.environ if env is None else env)
    port = master_port or free_port()
    failure = _run_ranks(list(argv), [{**base, **rank_env(i, nprocs, port)} for i in range(nprocs)], grace)
    return 0 if failure is None else failure[1]


def _run_ranks(argv: list[str], envs: list[dict[str, str]], grace: float) -> tuple[int, int] | None:
    """Start ``argv`` once per environment of ``envs`` and :func:`_supervise` the processes,
    forwarding SIGTERM to them meanwhile; returns what ``_supervise`` returns. Should the wait
    itself be interrupted (KeyboardInterrupt), the processes are ended before it propagates."""
    procs = [subprocess.Popen(argv, env=env) for env in envs]
    pidfds = [os.pidfd_open(p.pid) for p in procs]
    ranks = [_Rank(p.pid, fd, p.wait) for p, fd in zip(procs, pidfds)]
    try:
        with _forward_sigterm(lambda: [p.pid for p in procs if p.poll() is None]):
            return _supervise(ranks, grace)
    except BaseException:
        _end([rank for rank, p in zip(ranks, procs) if p.returncode is None], grace)
        raise
    finally:
        for fd in pidfds:
            os.close(fd)


@dataclasses.dataclass(frozen=True)
class _Rank:
    """A started rank process: its pid, a file descriptor readable once it has ended (a pidfd)
    and the call that reaps it and returns its exit code."""

    pid: int
    sentinel: int
    reap: Callable[[], int]


def _supervise(ranks: list[_Rank], grace: float) -> tuple[int, int] | None:
    """Wait until every rank has exited 0 (then None), or until one fails: then end the others
    (:func:`_end`) and return the failed rank's index and exit code."""
    pending = {rank.sentinel: index for index, rank in enumerate(ranks)}
    while pending:
        for sentinel in mp_connection.wait(list(pending)):
            index = pending.pop(sentinel)
            code = ranks[index].reap()
            if code != 0:
                _end([ranks[i] for i in pending.values()], grace)
                return index, code
    return None


def _end(ranks: list[_Rank], grace: float) -> None:
    """SIGTERM ``ranks``; SIGKILL those (and their descendants) still running after ``grace``
    seconds; reap them all. A rank blocked in a collective with a dead peer never reaches the
    batch boundary where the runner honours SIGTERM."""
    for rank in ranks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rank.pid, signal.SIGTERM)
    pending = {rank.sentinel: rank for rank in ranks}
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        for sentinel in mp_connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic())):
            del pending[sentinel]
    for rank in pending.values():
        logger.warning("rank process %d did not end %g s after SIGTERM; killing it", rank.pid, grace)
        _kill_tree(rank.pid)
    for rank in ranks:
        rank.reap()


def _kill_tree(pid: int) -> None:
    """SIGKILL the process ``pid`` (a child not yet reaped, so the pid is still its) and its descendants."""
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        for member in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()


@contextlib.contextmanager
def _forward_sigterm(live_pids: Callable[[], list[int]]):
    """Forward SIGTERM to the processes ``live_pids()`` names while the block runs (main thread
    only; elsewhere nothing is installed), then restore the previous handler.

    A child in this process's group that was signalled with the group gets SIGTERM twice, which
    is harmless: the runner's handler only sets its stop flag."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        for pid in live_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
