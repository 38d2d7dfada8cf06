"""Search efficiency: random search to the full budget, mlcomp's ASHA, and Optuna's
SuccessiveHalvingPruner, on the digits task, over several seeds in one run.

The same configurations are used by all three for a seed: ``--trials`` draws from the space
(lr log-uniform in [1e-4, 0.1], width in {8, 16, 32}, dropout uniform in [0, 0.5]) by mlcomp's
random sampler (:func:`mlcomp.search.sampler.sample`, seeded), so only the scheduling differs.
The model is the digits CNN (``dags/digits/configs/train.yml``) trained in one stage of up to
``--max-epochs`` epochs (Adam, cosine schedule), one torch thread.

- (a) random search: every trial trained to ``max_epochs``;
- (b) mlcomp ASHA (grace 1 epoch, η = 3: rungs at 1, 3, 9 epochs): the promotion rule of
  :func:`mlcomp.search.asha.promotion`, one trial at a time as ``parallel: 1`` runs it; a trial is
  paused at its rung by :class:`executors.pause.PauseCallback` and promoted by resuming its
  ``last_full.pth`` (the runner's exact resume), as the orchestrator does, but in this process
  (no child processes, no store), so wall times compare the algorithms, not process start-up;
- (c) Optuna alone: a study with the same configurations enqueued, ``SuccessiveHalvingPruner``
  (min resource 1, reduction factor 3), stopping-based (a pruned trial ends).

Printed per variant (means over seeds): total epochs trained (the compute), the best valid
accuracy (the best epoch of the best trial that trained ``max_epochs``; for (c) of any completed
trial) and the wall time; then the ratios the targets are about.

Usage: python bench/search_efficiency.py [--seeds 0 1 2] [--trials 24] [--max-epochs 9]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlcomp.runner import Callback, CallbackOrder
from mlcomp.runner.config import run_config
from mlcomp.runner.config_io import load_config
from mlcomp.search.asha import RungRecord, promotion, rung_epochs
from executors.pause import PauseCallback, TrialPaused
from mlcomp.search.sampler import PastTrial, sample
from mlcomp.search.space import parse_space
from mlcomp.search.spec import trial_config

__all__ = ["SPACE", "base_config", "random_search", "mlcomp_asha", "optuna_sha", "main"]

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"lr": {"loguniform": [0.0001, 0.1]}, "width": {"choice": [8, 16, 32]}, "dropout": {"uniform": [0.0, 0.5]}}
PATHS = {"lr": "stages.optimizer_params.lr", "width": "model_params.width", "dropout": "model_params.dropout"}


class EpochValues(Callback):
    """Records the valid accuracy of every epoch this process trains (``values``: epoch → value)."""

    metric_names = ()

    def __init__(self, values: dict):
        super().__init__(CallbackOrder.External + 50)
        self.values = values

    def on_epoch_end(self, runner):
        self.values[runner.global_epoch] = float(runner.valid_metrics["accuracy01"])


def base_config(max_epochs: int) -> dict:
    """The digits config in one stage of ``max_epochs`` epochs, quiet, without a console logger."""
    config = load_config(ROOT / "dags/digits/configs/train.yml")
    stages = config["stages"]
    main = stages.pop("main")
    stages.pop("warmup")
    main["stage_params"] = {"num_epochs": max_epochs}
    main["scheduler_params"]["T_max"] = max_epochs
    main["optimizer_params"] = {}
    stages["main"] = main
    config["args"] = {**config["args"], "verbose": False, "expdir": None}
    return config


def configurations(seed: int, trials: int) -> list[dict]:
    """``trials`` configurations drawn by mlcomp's seeded random sampler."""
    space = parse_space(SPACE, lambda path, message: ValueError(message))
    past, drawn = [], []
    for _ in range(trials):
        params, attrs = sample(space, "random", seed, False, past)
        past.append(PastTrial(params, attrs))
        drawn.append(params)
    return drawn


def _config(base: dict, params: dict, max_epochs: int) -> dict:
    search = {"space": {k: {"path": PATHS[k]} for k in params}, "scheduler": {"max_epochs": max_epochs}}
    return trial_config(base, search, params)


def _train(config: dict, logdir: Path, values: dict, pause_at: int | None = None, resume=None) -> None:
    callbacks = {"values": EpochValues(values)}
    if pause_at:
        callbacks["pause"] = PauseCallback(pause_at)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the runner's console lines
            run_config(copy.deepcopy(config), logdir=str(logdir), resume=resume, extra_callbacks=callbacks)
    except TrialPaused:
        pass


def random_search(base, configs, max_epochs, work: Path) -> tuple[int, float]:
    """(a): every configuration to ``max_epochs``; returns (epochs trained, best accuracy)."""
    best, epochs = 0.0, 0
    for i, params in enumerate(configs):
        values: dict = {}
        _train(_config(base, params, max_epochs), work / f"a{i}", values)
        epochs += len(values)
        best = max(best, max(values.values()))
    return epochs, best


def mlcomp_asha(base, configs, max_epochs, work: Path) -> tuple[int, float]:
    """(b): mlcomp's ASHA, one trial at a time; returns (epochs trained, best accuracy of a trial
    that reached ``max_epochs``)."""
    rungs = rung_epochs(1, 3, max_epochs)
    top = len(rungs) - 1
    records, paused, curves, started, epochs = [], set(), {}, 0, 0
    while True:
        chosen = promotion(records, paused, 3, top, minimize=False)
        if chosen is not None:
            trial, rung = chosen
            paused.discard(trial)
            resume = str(work / f"b{trial}" / "checkpoints" / "last_full.pth")
        elif started < len(configs):
            trial, rung, resume, started = started, 0, None, started + 1
            curves[trial] = {}
        else:
            break
        before = len(curves[trial])
        _train(_config(base, configs[trial], max_epochs), work / f"b{trial}", curves[trial],
               pause_at=rungs[rung] if rung < top else None, resume=resume)
        epochs += len(curves[trial]) - before
        records.append(RungRecord(trial, rung, max(curves[trial].values())))
        if rung < top:
            paused.add(trial)
    return epochs, max(r.value for r in records if r.rung == top)


def optuna_sha(base, configs, max_epochs, work: Path) -> tuple[int, float]:
    """(c): Optuna with SuccessiveHalvingPruner over the same configurations; returns (epochs
    trained, best accuracy of a completed trial)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    for params in configs:
        study.enqueue_trial(params)
    epochs = 0

    class Prune(Callback):
        metric_names = ()

        def __init__(self, trial):
            super().__init__(CallbackOrder.External + 60)
            self.trial = trial

        def on_epoch_end(self, runner):
            self.trial.report(float(runner.valid_metrics["accuracy01"]), runner.global_epoch)
            if self.trial.should_prune():
                runner.need_early_stop = True  # the stage (the run) ends after this epoch

    def objective(trial):
        nonlocal epochs
        params = {"lr": trial.suggest_float("lr", 0.0001, 0.1, log=True),
                  "width": trial.suggest_categorical("width", [8, 16, 32]),
                  "dropout": trial.suggest_float("dropout", 0.0, 0.5)}
        values: dict = {}
        with contextlib.redirect_stdout(io.StringIO()):
            run_config(_config(base, params, max_epochs), logdir=str(work / f"c{trial.number}"),
                       extra_callbacks={"values": EpochValues(values), "prune": Prune(trial)})
        epochs += len(values)
        if len(values) < max_epochs:
            raise optuna.TrialPruned()
        return max(values.values())

    study.optimize(objective, n_trials=len(configs))
    return epochs, study.best_value


VARIANTS = (("(a) random search, full budget", random_search), ("(b) mlcomp ASHA", mlcomp_asha),
            ("(c) Optuna + SuccessiveHalvingPruner", optuna_sha))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--max-epochs", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = base_config(args.max_epochs)
    with tempfile.TemporaryDirectory() as warm:  # imports and the dataset's first load, untimed
        _train(_config(base, configurations(0, 1)[0], 1), Path(warm), {})
    results = {name: [] for name, _ in VARIANTS}
    for seed in args.seeds:
        configs = configurations(seed, args.trials)
        for name, variant in VARIANTS:  # interleaved: every variant runs for each seed in turn
            work = Path(tempfile.mkdtemp(prefix="mlcomp-search-bench-"))
            try:
                start = time.perf_counter()
                epochs, best = variant(base, configs, args.max_epochs, work)
                results[name].append((epochs, best, time.perf_counter() - start))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"seed {seed}: {name}: {epochs} epochs, best valid accuracy {best:.4f}, "
                  f"{results[name][-1][2]:.1f} s", flush=True)
    print(f"\n{args.trials} trials per seed, max {args.max_epochs} epochs, seeds {args.seeds}; means over seeds:")
    mean = {name: [statistics.mean(r[i] for r in rows) for i in range(3)] for name, rows in results.items()}
    for name, (epochs, best, wall) in mean.items():
        print(f"  {name:<40} {epochs:7.1f} epochs   best valid accuracy {100 * best:6.2f} %   {wall:7.1f} s")
    (a_epochs, a_best, a_wall), (b_epochs, b_best, b_wall), (c_epochs, c_best, c_wall) = mean.values()
    print(f"(b)/(a): epochs {b_epochs / a_epochs:.3f} (target <= 0.333), best accuracy "
          f"{100 * (b_best - a_best):+.2f} points (target >= -0.5), wall time {b_wall / a_wall:.3f}")
    print(f"(b)/(c): epochs {b_epochs / c_epochs:.3f} (target <= 1), best accuracy "
          f"{100 * (b_best - c_best):+.2f} points (target >= 0), wall time {b_wall / c_wall:.3f}")


if __name__ == "__main__":
    main()
