"""Collecting predictions of inference loaders (Catalyst 20.x ``InferCallback``).

For every loader whose name starts with ``infer`` (and every loader of an ``infer*`` stage), each
tensor of ``runner.output`` (and of the batch under ``input_keys``, e.g. the targets) is kept,
detached, on the device; at loader end they are concatenated along the batch axis into numpy
arrays, stored in ``runner.predictions[loader][key]`` and in the callback's ``predictions``, and
optionally saved as ``.npy`` files.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.accumulators import List
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.callbacks.metric import concat_on_cpu, gather_from_ranks

__all__ = ["InferCallback"]


class InferCallback(Callback):
    """Collects the outputs of inference loaders (see the module docstring).

    Files: with ``out_dir`` or ``out_prefix``, ``{out_dir}/{out_prefix}/{loader}.{key}.npy``
    (Catalyst's layout: the two joined as text, so ``out_prefix="/predictions/"`` stays inside
    ``out_dir``); a relative folder is taken inside the run's logdir when there is one. The run's
    ``args.out_dir``/``args.out_prefix`` (``runner.out_dir``/``out_prefix``) win over the arguments.

    Args:
        out_dir: folder of the ``.npy`` files.
        out_prefix: sub-folder (or the folder, without ``out_dir``).
        output_keys: the output keys to keep; default every tensor of ``runner.output``.
        input_keys: batch keys to keep as well (an mlcomp addition, e.g. ``["targets"]`` to
            compare predictions with labels); a key missing from a batch is skipped for it.

    Attributes:
        predictions: ``{key: np.ndarray}`` of the last loader collected.

    In a distributed run every rank's predictions are gathered (rank after rank) on every rank;
    the master writes the files.

    Raises:
        ConfigError: during a batch, an ``input_keys`` key is also a key of ``runner.output``.
    """

    metric_names = ()  # writes no metric

    def __init__(self, out_dir: str | None = None, out_prefix: str | None = None,
                 output_keys: list[str] | None = None, input_keys: list[str] | None = None):
        super().__init__(order=CallbackOrder.Internal, node=CallbackNode.All)
        self.out_dir, self.out_prefix = out_dir, out_prefix
        self.output_keys = list(output_keys) if output_keys is not None else None
        self.input_keys = list(input_keys or ())
        self.predictions: dict[str, np.ndarray] = {}
        self._values: dict[str, List] = defaultdict(List)
        self._active = False

    def on_stage_start(self, runner) -> None:
        """Take ``out_dir``/``out_prefix`` from the runner when the run sets them there (``mlcomp
        run --out_dir=...:str``; Catalyst 20.x read them from the run's state)."""
        for key in ("out_dir", "out_prefix"):
            if getattr(runner, key, None) is not None:
                setattr(self, key, getattr(runner, key))

    def on_loader_start(self, runner) -> None:
        """Start collecting when the loader is an inference one."""
        self._active = runner.is_infer_loader or runner.is_infer_stage
        self._values = defaultdict(List)

    def on_batch_end(self, runner) -> None:
        """Keep the batch's output tensors and ``input_keys`` tensors (detached, on the device)."""
        if not self._active:
            return
        for key, value in runner.output.items():
            if isinstance(value, torch.Tensor) and (self.output_keys is None or key in self.output_keys):
                self._values[key].update(value)
        for key in self.input_keys:
            if key in runner.output:
                raise ConfigError(f"InferCallback: input key {key!r} is also an output key; outputs "
                                  f"{sorted(runner.output)}")
            value = runner.input.get(key) if isinstance(runner.input, Mapping) else None
            if isinstance(value, torch.Tensor):
                self._values[key].update(value)

    def on_loader_end(self, runner) -> None:
        """Concatenate into numpy arrays, publish them on the runner and save the files."""
        if not self._active:
            return
        self.predictions = {key: np.concatenate([t.numpy() for t in gather_from_ranks(concat_on_cpu(acc))])
                            for key, acc in self._values.items()}
        if not isinstance(getattr(runner, "predictions", None), dict):
            runner.predictions = {}
        runner.predictions[runner.loader_name] = self.predictions
        folder = self._folder(runner)
        if folder is not None and runner.is_master:
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in self.predictions.items():
                np.save(folder / f"{runner.loader_name}.{key}.npy", value)
        self._values = defaultdict(List)

    def _folder(self, runner) -> Path | None:
        if self.out_dir is None and self.out_prefix is None:
            return None
        folder = Path(f"{self.out_dir}/{self.out_prefix or ''}" if self.out_dir else self.out_prefix)  # as Catalyst
        if not folder.is_absolute() and runner.logdir is not None:
            folder = Path(runner.logdir) / folder
        return folder

    def state_dict(self) -> dict[str, Any]:
        """The outputs collected so far in the current loader."""
        return {"values": {key: acc.state_dict() for key, acc in self._values.items()}, "active": self._active}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: ``values`` or ``active`` is missing.
        """
        self._values = defaultdict(List)
        for key, acc_state in state["values"].items():
            self._values[key].load_state_dict(acc_state)
        self._active = bool(state["active"])
