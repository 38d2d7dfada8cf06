"""SupervisedRunner and the notebook API (Catalyst 20.x ``SupervisedRunner``)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner import callbacks as cb
from mlcomp.runner import distributed
from mlcomp.runner.checkpoint import load_checkpoint, load_state_checked
from mlcomp.runner.defaults import default_callbacks
from mlcomp.runner.runner import Runner, to_device
from mlcomp.runner.simple import SimpleExperiment, callbacks_by_name

__all__ = ["SupervisedRunner"]


class SupervisedRunner(Runner):
    """A runner for ``model(features) → logits`` training, with Catalyst's notebook API.

    Batches are dicts (or ``(features, targets)`` tuples/lists, mapped to ``input_key`` and
    ``input_target_key``). ``handle_batch`` calls ``model(batch[input_key])``, or
    ``model(*[batch[k] for k in input_key])`` for a list, or ``model(**batch)`` for None; a
    tensor result becomes ``output = {output_key: result}``, a dict result is the output itself.

    Args:
        model: the model (``train``/``infer`` may give it instead).
        device: where to run; default ``cuda:LOCAL_RANK`` or the CPU.
        input_key: the model's input key(s), or None for the whole batch as keyword arguments.
        output_key: the output key for a tensor result (None: the model returns a dict).
        input_target_key: the targets' key (the default criterion reads it).
    """

    def __init__(self, model: torch.nn.Module | None = None, device=None,
                 input_key: str | Sequence[str] | None = "features", output_key: str | None = "logits",
                 input_target_key: str = "targets"):
        super().__init__(model=model, device=device)
        self.input_key, self.output_key, self.input_target_key = input_key, output_key, input_target_key
        self._input_keys = [input_key] if isinstance(input_key, str) else list(input_key or ())
        self._input_key_set = frozenset(self._input_keys)
        if isinstance(input_key, str):
            self._forward = lambda model, batch: model(batch[input_key])
        elif input_key is None:
            self._forward = lambda model, batch: model(**batch)
        else:
            self._forward = lambda model, batch: model(*[batch[k] for k in self._input_keys])
        self._tuple_keys = (input_key if isinstance(input_key, str) else "features", input_target_key)

    def prepare_batch(self, batch) -> dict[str, Any]:
        """A ``(features, targets)`` batch as a dict, moved to the device."""
        if isinstance(batch, (list, tuple)):
            return {key: to_device(value, self.device) for key, value in zip(self._tuple_keys, batch)}
        return super().prepare_batch(batch)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The model's output on ``batch`` as a dict.

        Raises:
            ConfigError: the batch is not a dict with every ``input_key`` (the message says what it is).
        """
        if self._input_keys and not (type(batch) is dict and batch.keys() >= self._input_key_set) and (
                not isinstance(batch, Mapping) or any(k not in batch for k in self._input_keys)):
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ConfigError(f"{type(self).__name__}: batches must be dicts with {self._input_keys} "
                              f"(runner_params.input_key); got {got}")
        output = self._forward(self.model, batch)
        return output if isinstance(output, dict) or self.output_key is None else {self.output_key: output}

    def handle_batch(self, batch: Mapping[str, Any]) -> None:
        """``self.output = self.forward(batch)``."""
        self.output = self.forward(batch)

    handle_batch.metric_names = ()
    """What this ``handle_batch`` writes into ``batch_metrics``: nothing (``ValidationManagerCallback``
    then checks the main metric against the callbacks' declared names at the stage start)."""

    def get_default_callbacks(self) -> "OrderedDict":
        """Catalyst's defaults, the criterion reading ``input_target_key`` and ``output_key``."""
        return default_callbacks(self, input_key=self.input_target_key, output_key=self.output_key or "logits")

    # ------------------------------------------------------------------ notebook API
    def train(self, *, model: torch.nn.Module, loaders: Mapping[str, Iterable], criterion=None, optimizer=None,
              scheduler=None, logdir: str | None = None, num_epochs: int = 1, callbacks=None,
              main_metric: str = "loss", minimize_metric: bool = True, valid_loader: str = "valid",
              resume: str | None = None, overfit: bool | int = False, check: bool = False, verbose: bool = False,
              timeit: bool = False, load_best_on_end: bool = False, initial_seed: int = 42, fp16: bool = False,
              amp: bool = False, distributed: bool = False, state_kwargs: Mapping | None = None,
              stage_kwargs: Mapping | None = None, hparams: Mapping | None = None) -> "SupervisedRunner":
        """Train ``model`` for ``num_epochs`` epochs over ``loaders`` (one stage named ``train``).

        ``resume`` is a full checkpoint (``*_full.pth``) to continue exactly where it stopped (to
        start from a model's weights, pass ``CheckpointCallback(resume=...)``). ``fp16``/``amp``
        turn on mixed precision on CUDA, ``timeit`` adds a TimerCallback when the metrics
        callbacks provide one, ``load_best_on_end`` loads ``best.pth`` at the stage end.
        ``distributed`` is accepted for Catalyst configs: a run is distributed when its processes
        are launched with ``WORLD_SIZE`` > 1. ``state_kwargs``/``stage_kwargs`` add stage parameters.

        Raises:
            RunStopped: the run was stopped; ConfigError: see :meth:`Runner.run_experiment`.
        """
        callbacks = callbacks_by_name(callbacks)
        if (fp16 or amp) and not any(isinstance(c, cb.OptimizerCallback) for c in callbacks.values()):
            callbacks["_optimizer"] = cb.OptimizerCallback(use_amp=True)
        if load_best_on_end and not any(isinstance(c, cb.CheckpointCallback) for c in callbacks.values()):
            callbacks["_saver"] = cb.CheckpointCallback(load_on_stage_end="best")
        if timeit and hasattr(cb, "TimerCallback"):
            callbacks.setdefault("_timer", cb.TimerCallback())
        experiment = SimpleExperiment(
            model=model, loaders=loaders, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
            callbacks=callbacks, logdir=logdir, num_epochs=num_epochs, main_metric=main_metric,
            minimize_metric=minimize_metric, valid_loader=valid_loader, initial_seed=initial_seed,
            stage_kwargs={**dict(state_kwargs or {}), **dict(stage_kwargs or {})}, hparams=hparams)
        self.verbose = verbose
        return self.run_experiment(experiment, resume=resume, check=check, overfit=overfit)

    def infer(self, *, model: torch.nn.Module, loaders: Mapping[str, Iterable], callbacks=None,
              verbose: bool = False, resume: str | None = None, initial_seed: int = 42,
              check: bool = False) -> "SupervisedRunner":
        """Run ``model`` over ``loaders`` without training (one stage named ``infer``), e.g. with an
        InferCallback collecting the outputs; ``resume`` loads the model's weights from a checkpoint.
        """
        self._load_weights(model, resume)
        experiment = SimpleExperiment(model=model, loaders=loaders, callbacks=callbacks, stage="infer",
                                      initial_seed=initial_seed)
        self.verbose = verbose
        return self.run_experiment(experiment, check=check)

    def predict_loader(self, loader: Iterable, model: torch.nn.Module | None = None,
                       resume: str | None = None) -> Iterator[Any]:
        """Yield the output of every batch of ``loader`` (``output[output_key]``, or the output
        dict when ``output_key`` is None), in eval mode without gradients."""
        model = model if model is not None else self.model
        self._load_weights(model, resume)
        self.device = self._device or distributed.device()
        self.model = model.to(self.device).eval()
        with torch.no_grad():
            for batch in loader:
                output = self.forward(self.prepare_batch(batch))
                yield output if self.output_key is None else output[self.output_key]

    @staticmethod
    def _load_weights(model: torch.nn.Module, resume: str | None) -> None:
        if resume is not None:
            load_state_checked(model, load_checkpoint(resume)["model_state_dict"], resume)
