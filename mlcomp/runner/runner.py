"""The runner: *how* an experiment runs, stage → epoch → loader → batch (Catalyst 20.x ``Runner``).

The loop knows nothing of models or losses: ``handle_batch`` is the only model-specific step
(:class:`~mlcomp.runner.supervised.SupervisedRunner` implements it) and everything else — loss,
backward and optimizer step, schedulers, metrics, checkpoints, early stopping, logging — is a
callback reading and writing the runner's state, in the style of pytorch-ignite's ``Engine``.

Stopping is cooperative: :meth:`Runner.request_stop` (or SIGTERM while a run is in the main
thread) sets a flag, the loop finishes the current batch, writes ``checkpoints/last_full.pth``
and raises :class:`RunStopped`; ``run_experiment(experiment, resume=that_file)`` continues with
the next batch and ends bit for bit where an uninterrupted run would (CPU, ``num_workers=0``).
"""
from __future__ import annotations

import itertools
import signal
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from mlcomp.errors import ConfigError
from mlcomp.outcome import EXIT_STOPPED
from mlcomp.runner import distributed
from mlcomp.runner.accumulators import Mean
from mlcomp.runner.callback import Callback, CallbackNode, CallbackScope
from mlcomp.runner.check import CHECK_BATCHES, CHECK_EPOCHS, CheckRule, as_check_rule
from mlcomp.runner.checkpoint import (FULL_KEYS, LAST_FULL, checkpoint_path, full_checkpoint, load_checkpoint,
                                     save_checkpoint, unpack_checkpoint)
from mlcomp.runner.defaults import default_callbacks
from mlcomp.runner.events import Event, RunStopped
from mlcomp.runner.loaders import BatchLimitLoaderWrapper
from mlcomp.runner.seed import get_rng_state, set_global_seed, set_rng_state

__all__ = ["Runner", "RunStopped", "EXIT_STOPPED", "CHECK_BATCHES", "CHECK_EPOCHS", "to_device"]


def _overrides(callback: Callback, event: Event) -> bool:
    """Whether ``callback``'s class implements ``event`` (so empty handlers cost nothing)."""
    return getattr(type(callback), event.value) is not getattr(Callback, event.value)


def _runs_here(callback: Callback, is_master: bool) -> bool:
    return (callback.node == CallbackNode.All or (callback.node == CallbackNode.Master) == is_master)


def _batch_size(batch) -> int:
    """Length of the first tensor found in ``batch`` (a dict, list or tuple), else 1."""
    if type(batch) is dict or isinstance(batch, Mapping):
        values = batch.values()
    else:
        values = batch if isinstance(batch, (list, tuple)) else (batch,)
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


def _copy_mean(mean: Mean) -> Mean:
    copy = Mean()
    copy.load_state_dict(mean.state_dict())
    return copy


def to_device(value, device: torch.device):
    """``value`` (a tensor or a dict/list/tuple of them) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class Runner:
    """Runs an :class:`~mlcomp.runner.experiment.Experiment`; subclasses implement ``handle_batch``.

    State read and written by callbacks (all counters 1-based):

    - components: ``model``, ``criterion``, ``optimizer``, ``scheduler``, ``device``,
      ``experiment``, ``loaders`` (name → loader), ``callbacks`` (name → Callback, by order);
    - position: ``stage_name``, ``stage_index``, ``num_epochs``, ``epoch``, ``global_epoch``,
      ``is_infer_stage``, ``loader_name``, ``loader_index``, ``loader_len``,
      ``loader_batch_step``, ``global_batch_step``, ``global_sample_step``, ``batch_size``,
      ``is_train_loader``, ``is_valid_loader``, ``is_infer_loader``, ``need_backward_pass``;
    - data: ``input`` (the batch on ``device``), ``output`` (dict), ``batch_metrics`` (name →
      0-dim tensor or float), ``loader_metrics`` (name → float: batch-size-weighted means, set
      before ``on_loader_end``), ``epoch_metrics`` (``"{loader}_{metric}"`` → float),
      ``valid_loader``, ``main_metric``, ``minimize_metric``, ``valid_metrics``,
      ``is_best_valid``, ``best_valid_metrics``;
    - control: ``need_early_stop``, ``stop_requested``, ``exception``,
      ``need_exception_reraise``, ``logdir``, ``checkpoint_data``, ``hparams``,
      ``is_distributed``, ``rank``, ``world_size``, ``is_master``, ``verbose``.

    Args:
        model: the model, when the experiment does not provide one per stage.
        device: where batches and the model go; default :func:`distributed.device`
            (``cuda:LOCAL_RANK`` or the CPU).
    """

    def __init__(self, model: torch.nn.Module | None = None, device: str | torch.device | None = None):
        self.model = model
        self._device = None if device is None else torch.device(device)
        self.verbose = False
        self._reset()

    def _reset(self) -> None:
        self.experiment = self.criterion = self.optimizer = self.scheduler = None
        self.device = self._device
        self.loaders, self.callbacks = OrderedDict(), OrderedDict()
        self.stage_name, self.stage_index, self.num_epochs, self.is_infer_stage = None, 0, 1, False
        self.epoch = self.global_epoch = self.loader_index = self.loader_len = self.loader_batch_step = 0
        self.global_batch_step = self.global_sample_step = self.batch_size = 0
        self.loader_name = None
        self.is_train_loader = self.is_valid_loader = self.is_infer_loader = self.need_backward_pass = False
        self.input, self.output, self.batch_metrics = None, None, {}
        self.loader_metrics, self.epoch_metrics, self.valid_metrics, self.best_valid_metrics = {}, {}, {}, {}
        self.valid_loader, self.main_metric, self.minimize_metric, self.is_best_valid = "valid", "loss", True, False
        self.need_early_stop = self.stop_requested = False
        self.exception, self.need_exception_reraise = None, True
        self.logdir, self.checkpoint_data, self.hparams = None, {}, None
        self.is_distributed, self.rank, self.world_size, self.is_master = False, 0, 1, True
        self.loader_rng_state = None
        self._accumulators: dict[str, Mean] = {}
        self._handlers: dict[Event, list] = {event: [] for event in Event}
        self._resume: tuple[dict, str] | None = None
        self._batch_limit, self._replay, self._check = None, False, None

    # ------------------------------------------------------------------ what subclasses define
    def handle_batch(self, batch: Mapping[str, Any]) -> None:
        """Run the model on ``batch`` (``self.input``) and set ``self.output``; may fill
        ``self.batch_metrics``. Must be overridden."""
        raise NotImplementedError(f"{type(self).__name__}.handle_batch is not implemented")

    def prepare_batch(self, batch) -> Any:
        """The loader's ``batch`` as ``self.input``: moved to ``self.device``."""
        return to_device(batch, self.device)

    def get_default_callbacks(self) -> "OrderedDict[str, Callback]":
        """Callbacks added to a stage's own when no callback of the same class is there."""
        return default_callbacks(self)

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Ask the loop to stop after the current batch (safe from a signal handler)."""
        self.stop_requested = True

    def run_experiment(self, experiment, resume: str | Path | None = None, check: bool | CheckRule = False,
                       overfit: bool | int = False) -> "Runner":
        """Run every stage of ``experiment``; returns the runner.

        Args:
            resume: a full checkpoint (``*_full.pth``) to continue from, exactly where it stopped.
            check: a quick trial: True runs ``CHECK_BATCHES`` batches per loader and at most
                ``CHECK_EPOCHS`` epochs per stage; a :class:`~mlcomp.runner.check.CheckRule`
                gives other limits (Catalyst 20.02's, :func:`~mlcomp.runner.check.check_rule`).
            overfit: run the same first N batches (True = 1) of every loader each epoch.

        Raises:
            RunStopped: the run was stopped (``request_stop`` or SIGTERM).
            ConfigError: bad stage setup, a resume file missing or not fitting, an unknown main metric.
        """
        self._reset()
        self.experiment = experiment
        self._check = as_check_rule(check)
        self._batch_limit = self._check.batches if self._check else (int(overfit) if overfit else None)
        self._replay = bool(overfit) and not self._check
        first_stage = self._load_resume(resume) if resume is not None else 0
        owns_group = not distributed.is_distributed()  # a group made by a launcher outlives the run
        self.is_distributed = distributed.setup(backend=dict(experiment.distributed_params).get("backend"))
        self.rank, self.world_size, self.is_master = distributed.rank(), distributed.world_size(), distributed.rank() == 0
        set_global_seed(experiment.initial_seed)
        restore_signal = self._install_sigterm()
        try:
            for index, stage in enumerate(experiment.stages):
                if index >= first_stage:
                    self._run_stage(stage, index)
        except BaseException as e:
            self.exception = e
            self._dispatch(Event.EXCEPTION)
            if isinstance(e, RunStopped) or self.need_exception_reraise:
                raise
        finally:
            restore_signal()
            if owns_group:
                distributed.cleanup()
        return self

    def _install_sigterm(self):
        """SIGTERM → ``request_stop`` (main thread only); returns the function restoring the old one."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
        return lambda: signal.signal(signal.SIGTERM, previous)

    # ------------------------------------------------------------------ the loop
    def _run_stage(self, stage: str, index: int) -> None:
        self._prepare_stage(stage, index)
        self._dispatch(Event.STAGE_START)
        distributed.broadcast_model(self.model)  # weights rank 0's saver loaded (the others run no saver)
        first_epoch = self._resume_stage() if self._resume is not None else 1
        for epoch in range(first_epoch, self.num_epochs + 1):
            if self.need_early_stop:
                break
            self.epoch = epoch
            self._run_epoch()
        self._dispatch(Event.STAGE_END)

    def _run_epoch(self) -> None:
        resuming = self._resume is not None
        self.global_epoch += 1
        set_global_seed(self.experiment.initial_seed + self.global_epoch + 1)
        first_loader = self._resume[0]["position"]["loader_index"] if resuming else 0
        if not resuming:
            self.epoch_metrics = {}
        self._dispatch(Event.EPOCH_START)
        for self.loader_index, (name, loader) in enumerate(self.loaders.items()):
            if self.loader_index >= first_loader:
                self._run_loader(name, loader)
        self._dispatch(Event.EPOCH_END)

    def _run_loader(self, name: str, loader: Iterable) -> None:
        self._set_loader(name, loader)
        self.model.train(self.need_backward_pass)
        self._dispatch(Event.LOADER_START)
        if self._resume is not None:
            set_rng_state(self._resume[0]["loader_rng"])
        self.loader_rng_state = get_rng_state()  # before the iterator draws its permutation
        batches = iter(loader)
        if self._resume is not None:
            self._resume_loader(batches)
        # the per-batch path: bound methods and handler lists looked up once per loader
        on_batch_start, on_batch_end = self._handlers[Event.BATCH_START], self._handlers[Event.BATCH_END]
        prepare_batch, handle_batch, accumulate = self.prepare_batch, self.handle_batch, self._accumulate
        is_distributed = self.is_distributed
        with torch.set_grad_enabled(self.need_backward_pass):
            for batch in batches:
                self.input = batch = prepare_batch(batch)
                self.batch_size = batch_size = _batch_size(batch)
                self.loader_batch_step += 1
                self.global_batch_step += 1
                self.global_sample_step += batch_size
                self.batch_metrics = {}
                for handler in on_batch_start:
                    handler(self)
                handle_batch(self.input)  # a batch-start handler may have replaced it
                for handler in on_batch_end:
                    handler(self)
                accumulate()
                if self._stop_agreed() if is_distributed else self.stop_requested:
                    self._stop()
        self._end_loader()

    def _accumulate(self, accumulators: dict[str, Mean] | None = None) -> None:
        """Fold ``batch_metrics`` into ``accumulators`` (default: the loader's means), weighted by
        the batch size."""
        accumulators = self._accumulators if accumulators is None else accumulators
        batch_size = self.batch_size
        for key, value in self.batch_metrics.items():
            accumulator = accumulators.get(key)
            if accumulator is None:
                accumulator = accumulators[key] = Mean()
            accumulator.update(value, batch_size)

    def _end_loader(self) -> None:
        means = {key: acc.compute() for key, acc in self._accumulators.items() if acc.weight}
        self.loader_metrics.update(distributed.all_reduce_mean(means))
        self._dispatch(Event.LOADER_END)
        self.epoch_metrics.update({f"{self.loader_name}_{k}": v for k, v in self.loader_metrics.items()})

    def _stop_agreed(self) -> bool:
        """Whether to stop after this batch: on any rank's request when distributed (one tiny
        all-reduce per batch), so that no rank waits in a collective for one that has left."""
        return distributed.any_true(self.stop_requested) if self.is_distributed else self.stop_requested

    def _stop(self):
        """Write ``last_full.pth`` (master, with a logdir), print where, raise :class:`RunStopped`."""
        path = None
        if self.logdir is not None and self.is_master:
            path = save_checkpoint(full_checkpoint(self), checkpoint_path(self.logdir, LAST_FULL))
        stopped = RunStopped(self.stage_name, self.epoch, self.loader_name, self.loader_batch_step, path)
        print(stopped, flush=True)
        raise stopped

    def _dispatch(self, event: Event) -> None:
        for handler in self._handlers[event]:
            handler(self)

    # ------------------------------------------------------------------ stage and loader setup
    def _prepare_stage(self, stage: str, index: int) -> None:
        """Build the stage's components, loaders and callbacks from the experiment, and check them."""
        experiment = self.experiment
        self.stage_name, self.stage_index, self.is_infer_stage = stage, index, stage.startswith("infer")
        params = dict(experiment.get_stage_params(stage) or {})
        self.num_epochs = int(params.get("num_epochs", 1))
        if self._check:
            self.num_epochs = self._check.stage_epochs(self.num_epochs, self._epochs_before_stage())
        self.main_metric = params.get("main_metric", "loss")
        self.minimize_metric = bool(params.get("minimize_metric", True))
        self.valid_loader = params.get("valid_loader", "valid")
        self.checkpoint_data = dict(params.get("checkpoint_data") or {})
        self.logdir = None if experiment.logdir is None else Path(experiment.logdir)
        self.hparams = experiment.hparams
        self.valid_metrics, self.best_valid_metrics, self.is_best_valid = {}, {}, False
        self.need_early_stop = False
        set_global_seed(experiment.initial_seed)
        model = experiment.get_model(stage)
        model = self.model if model is None else model
        if model is None:
            raise ConfigError(f"stage {stage!r}: the experiment gives no model and the runner has none")
        self.device = self._device or distributed.device()
        model = distributed.unwrap_model(model).to(self.device)
        self.criterion, self.optimizer, self.scheduler = experiment.get_experiment_components(model, stage)
        self.model = distributed.wrap_model(model, self.device)
        self.loaders = OrderedDict((name, self._limit(distributed.shard_loader(
            loader, shuffle=name.startswith("train"), seed=experiment.initial_seed)))
            for name, loader in experiment.get_loaders(stage).items())
        if not self.loaders:
            raise ConfigError(f"stage {stage!r}: no loaders")
        if not self.is_infer_stage and self.valid_loader not in self.loaders:
            raise ConfigError(f"stage {stage!r}: valid_loader {self.valid_loader!r} is not among the loaders "
                              f"{list(self.loaders)}; name one of them in stage_params.valid_loader")
        self._set_callbacks(experiment.get_callbacks(stage) or OrderedDict())

    def _epochs_before_stage(self) -> int:
        """Epochs the earlier stages ran (read from the position of a resume checkpoint, whose
        counters are restored only once the stage has started)."""
        if self._resume is None:
            return self.global_epoch
        position = self._resume[0]["position"]
        return position["global_epoch"] - position["epoch"]

    def _set_callbacks(self, callbacks: Mapping[str, Callback]) -> None:
        """Check, complete with defaults, carry experiment-scope states, sort by order (stably),
        and precompute each event's handler list."""
        for name, callback in callbacks.items():
            if not isinstance(callback, Callback):
                raise ConfigError(f"stage {self.stage_name!r}: callback {name!r} is a {type(callback).__name__}, "
                                  f"not an mlcomp.runner.Callback")
        callbacks = OrderedDict(callbacks)
        for name, callback in self.get_default_callbacks().items():
            if name not in callbacks and not any(isinstance(c, type(callback)) for c in callbacks.values()):
                callbacks[name] = callback
        for name, callback in callbacks.items():
            previous = self.callbacks.get(name)
            if (callback.scope == CallbackScope.Experiment and previous is not None and previous is not callback
                    and type(previous) is type(callback) and hasattr(callback, "load_state_dict")):
                callback.load_state_dict(previous.state_dict())
        self.callbacks = OrderedDict(sorted(((n, c) for n, c in callbacks.items() if _runs_here(c, self.is_master)),
                                            key=lambda item: item[1].order))
        self._handlers = {event: [getattr(c, event.value) for c in self.callbacks.values() if _overrides(c, event)]
                          for event in Event}

    def _set_loader(self, name: str, loader: Iterable) -> None:
        self.loader_name = name
        self.is_train_loader = name.startswith("train")
        self.is_valid_loader = name.startswith("valid")
        self.is_infer_loader = name.startswith("infer")
        self.need_backward_pass = self.is_train_loader and not self.is_infer_stage
        self.loader_len = len(loader) if hasattr(loader, "__len__") else 0
        self.loader_batch_step = 0
        self.loader_metrics, self._accumulators = {}, {}
        distributed.set_epoch(loader, self.epoch)

    def _limit(self, loader: Iterable) -> Iterable:
        """``loader`` in check mode limited to its first batches, in overfit mode replaying its
        first batches every epoch (:class:`BatchLimitLoaderWrapper`); else as it is."""
        if not self._batch_limit:
            return loader
        return BatchLimitLoaderWrapper(loader, self._batch_limit, replay=self._replay)

    # ------------------------------------------------------------------ exact resume
    def position(self, epoch_done: bool = False) -> dict[str, Any]:
        """Where the run is: stage, epoch, loader and batches done; ``epoch_done`` marks an epoch end."""
        return {"stage": self.stage_name, "stage_index": self.stage_index, "epoch": self.epoch,
                "global_epoch": self.global_epoch, "loader": self.loader_name, "loader_index": self.loader_index,
                "loader_batch_step": self.loader_batch_step, "global_batch_step": self.global_batch_step,
                "global_sample_step": self.global_sample_step, "epoch_done": epoch_done,
                "need_early_stop": self.need_early_stop}

    def state_dict(self, with_batch: bool = False) -> dict[str, Any]:
        """The runner's metric state: epoch/loader/valid/best metrics and the loader accumulators.

        Args:
            with_batch: the accumulators as they will be once the current ``batch_metrics`` are
                folded in, which the loop does after the last ``on_batch_end`` handler: for a
                resumable checkpoint written *during* ``on_batch_end`` (IterationCheckpointCallback).
        """
        accumulators = self._accumulators
        if with_batch:
            accumulators = {key: _copy_mean(acc) for key, acc in accumulators.items()}
            self._accumulate(accumulators)
        return {"epoch_metrics": dict(self.epoch_metrics), "loader_metrics": dict(self.loader_metrics),
                "valid_metrics": dict(self.valid_metrics), "best_valid_metrics": dict(self.best_valid_metrics),
                "is_best_valid": self.is_best_valid,
                "accumulators": {key: acc.state_dict() for key, acc in accumulators.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        for key in ("epoch_metrics", "loader_metrics", "valid_metrics", "best_valid_metrics"):
            setattr(self, key, dict(state[key]))
        self.is_best_valid = state["is_best_valid"]
        self._accumulators = {}
        for key, acc_state in state["accumulators"].items():
            self._accumulators[key] = Mean()
            self._accumulators[key].load_state_dict(acc_state)

    def _load_resume(self, path) -> int:
        """Read the resume checkpoint; returns the index of the stage to start with."""
        checkpoint = load_checkpoint(path)
        missing = [key for key in FULL_KEYS if key not in checkpoint]
        if missing:
            raise ConfigError(f"checkpoint {path}: not a full checkpoint (missing keys {missing}); "
                              f"resume needs a *_full.pth")
        position = checkpoint["position"]
        stages = list(self.experiment.stages)
        if position["stage_index"] >= len(stages) or stages[position["stage_index"]] != position["stage"]:
            raise ConfigError(f"checkpoint {path}: stage {position['stage']!r} (index {position['stage_index']}) "
                              f"is not in the experiment's stages {stages}")
        self._resume = (checkpoint, str(path))
        print(f"=> Loading checkpoint {path}\nloaded state checkpoint {path} (global epoch {position['global_epoch']}, "
              f"epoch {position['epoch']}, stage {position['stage']})", flush=True)  # Catalyst 20.x's lines
        return position["stage_index"]

    def _restore(self) -> dict[str, Any]:
        """Load the resume checkpoint's states into the stage's components, callbacks and counters."""
        checkpoint, path = self._resume
        position = checkpoint["position"]
        unpack_checkpoint(self, checkpoint, path, callbacks=True)
        self.load_state_dict(checkpoint["runner"])
        for key in ("epoch", "global_epoch", "loader_batch_step", "global_batch_step", "global_sample_step",
                    "need_early_stop"):
            setattr(self, key, position[key])
        return position

    def _resume_stage(self) -> int:
        """At stage start: the first epoch to run. An epoch-end checkpoint is restored here;
        a mid-loader one later, in its loader (after the start events have run)."""
        position = self._resume[0]["position"]
        if position["epoch_done"]:
            self._restore()
            self._resume = None
            return position["epoch"] + 1
        self.global_epoch = position["global_epoch"] - 1  # _run_epoch counts it again
        self.global_batch_step, self.global_sample_step = position["global_batch_step"], position["global_sample_step"]
        return position["epoch"]

    def _resume_loader(self, batches) -> None:
        """Skip the batches done before the stop, then restore every state and the RNG."""
        checkpoint = self._resume[0]
        done = checkpoint["position"]["loader_batch_step"]
        next(itertools.islice(batches, done, done), None)
        self._restore()
        set_rng_state(checkpoint["rng"])
        self._resume = None
