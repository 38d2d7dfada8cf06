"""Writing a TorchScript copy of the model while training (Catalyst 20.08's ``TracerCallback``,
20.10+'s ``TracingCallback``), with :mod:`mlcomp.runner.torchscript`."""
from __future__ import annotations

import copy
from pathlib import Path

from mlcomp.errors import ConfigError
from mlcomp.runner import distributed
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.checkpoint import BEST, checkpoint_path, load_checkpoint, load_state_checked
from mlcomp.runner.torchscript import MODES, example_input, save_traced, trace_model, trace_name

__all__ = ["TracingCallback", "TracerCallback"]


class TracingCallback(Callback):
    """Traces a copy of the model (the training model is left as it is) on the current batch's
    input (the runner's ``input_key``) and writes it to ``logdir/trace/`` +
    :func:`~mlcomp.runner.torchscript.trace_name` (``traced-best-eval.pth``), or ``out_dir``/``out_model``.

    With ``do_once`` (the default) it traces once, at the stage end: the weights of
    ``checkpoints/best.pth`` for ``mode="best"`` (when it exists), the last weights for
    ``"last"``. Otherwise it traces at every epoch end (``"last"``) or at every epoch whose valid
    ``metric`` improves by more than ``min_delta`` on the best so far (``"best"``). Master only.

    Args:
        metric: the valid metric judged in ``mode="best"`` without ``do_once``.
        minimize: whether lower ``metric`` is better.
        min_delta: the least change that counts as an improvement.
        mode: ``"best"`` or ``"last"``, also the checkpoint part of the file name.
        do_once: trace once per stage, at its end.
        method_name: the model's method to export.
        requires_grad: keep gradients in the exported model.
        opt_level: Catalyst's apex level: only None is accepted.
        trace_mode: ``"eval"`` or ``"train"``.
        out_dir: folder of the file (default ``logdir/trace``).
        out_model: the file's path (wins over ``out_dir``).

    Raises:
        ValueError: an unknown ``mode`` or ``trace_mode``, or an ``opt_level``.
        ConfigError: no logdir and no ``out_model``; the valid metrics lack ``metric``; the model
            can be neither traced nor scripted.
    """

    metric_names = ()  # writes no metric

    def __init__(self, metric: str = "loss", minimize: bool = True, min_delta: float = 1e-6, mode: str = "best",
                 do_once: bool = True, method_name: str = "forward", requires_grad: bool = False,
                 opt_level: str | None = None, trace_mode: str = "eval", out_dir: str | None = None,
                 out_model: str | None = None):
        super().__init__(CallbackOrder.External, node=CallbackNode.Master)
        if mode not in ("best", "last") or trace_mode not in MODES:
            raise ValueError(f"TracingCallback: mode should be 'best' or 'last' and trace_mode one of {MODES}, "
                             f"got mode={mode!r}, trace_mode={trace_mode!r}")
        if opt_level is not None:
            raise ValueError("TracingCallback: opt_level (apex) is not supported by mlcomp; leave it out")
        self.metric, self.minimize, self.min_delta, self.mode = metric, bool(minimize), float(min_delta), mode
        self.do_once, self.method_name, self.requires_grad = bool(do_once), method_name, bool(requires_grad)
        self.trace_mode, self.out_dir, self.out_model = trace_mode, out_dir, out_model
        self.best_score = None

    def out_path(self, runner) -> Path:
        """Where the trace goes."""
        if self.out_model is not None:
            return Path(self.out_model)
        if self.out_dir is None and runner.logdir is None:
            raise ConfigError("TracingCallback: the run has no logdir; give out_dir or out_model")
        folder = Path(self.out_dir) if self.out_dir is not None else Path(runner.logdir) / "trace"
        return folder / trace_name(self.mode, self.trace_mode, self.method_name, self.requires_grad)

    def _trace(self, runner, from_best: bool) -> Path:
        model = copy.deepcopy(distributed.unwrap_model(runner.model))
        best = None if runner.logdir is None else checkpoint_path(runner.logdir, BEST)
        if from_best and best is not None and best.is_file():
            load_state_checked(model, load_checkpoint(best)["model_state_dict"], best)
        batch = example_input(runner.input, getattr(runner, "input_key", "features"), where="TracingCallback")
        traced = trace_model(model, batch, method_name=self.method_name, mode=self.trace_mode,
                             requires_grad=self.requires_grad)
        return save_traced(traced, self.out_path(runner))

    def _improved(self, runner) -> bool:
        if self.metric not in runner.valid_metrics:
            raise ConfigError(f"TracingCallback: metric {self.metric!r} is not a valid metric; "
                              f"valid metrics: {sorted(runner.valid_metrics)}")
        score = runner.valid_metrics[self.metric]
        better = self.best_score is None or (score <= self.best_score - self.min_delta if self.minimize
                                             else score >= self.best_score + self.min_delta)
        if better:
            self.best_score = score
        return better

    def on_stage_start(self, runner) -> None:
        """Judge the stage's epochs afresh."""
        self.best_score = None

    def on_epoch_end(self, runner) -> None:
        """Without ``do_once``: trace the last model, or the model of an improving epoch."""
        if not self.do_once and not runner.is_infer_stage and (self.mode == "last" or self._improved(runner)):
            self._trace(runner, from_best=False)

    def on_stage_end(self, runner) -> None:
        """With ``do_once``: trace the best (or last) model of the stage."""
        if self.do_once and runner.input is not None:
            self._trace(runner, from_best=self.mode == "best")


TracerCallback = TracingCallback
"""Catalyst 20.08's name."""
