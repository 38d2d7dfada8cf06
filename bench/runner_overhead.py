"""Per-batch overhead of the runner, and of PyTorch-Ignite, against a hand-written PyTorch loop
doing the same work.

All three train a tiny MLP on synthetic data (batch 32, 3 epochs, a train and a valid loader),
compute loss and accuracy on both loaders every epoch without a device sync per batch, and save
a checkpoint every epoch. The runner goes through ``SupervisedRunner.train`` with its default
callbacks (criterion, optimizer, validation, checkpoints, console/log.txt/metrics-file loggers)
plus ``AccuracyCallback``. Ignite (the ``bench`` extra: ``pip install -e ".[bench]"``; skipped when
it is not installed) runs ``create_supervised_trainer`` with ignite's ``Average`` (train loss) and
``Accuracy`` metrics, a ``create_supervised_evaluator`` with ``Loss`` and ``Accuracy`` on the valid
loader after each epoch and a ``Checkpoint`` of model and optimizer each epoch, its per-batch output
kept as tensors (no ``loss.item()``). Rounds are interleaved in one process; the medians and their
ratios to the hand-written loop are printed (target: <= 1.05, and the runner at or below ignite), for
wall-clock time and for this process's CPU time (with one torch thread and ``num_workers=0`` all
the work is in this process, so CPU time does not count the waits a loaded machine adds to wall
time), with the median of the per-round ratios (each
round's contenders run back to back, under the same load). Also prints the time ``import
mlcomp.runner`` adds to ``import torch`` (subprocesses, median).

Run: ``python bench/runner_overhead.py [--rounds 5] [--samples 24000]``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from mlcomp.runner import AccuracyCallback, SupervisedRunner
from mlcomp.runner.metrics import accuracy

EPOCHS, BATCH, FEATURES, CLASSES = 3, 32, 32, 10


def make_setup(samples: int, seed: int = 0):
    """Model, optimizer, criterion and loaders, identical for both contenders."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, FEATURES, generator=generator)
    y = (x[:, :CLASSES] + 0.3 * torch.randn(samples, CLASSES, generator=generator)).argmax(1)
    split = samples * 4 // 5
    loaders = OrderedDict(train=DataLoader(TensorDataset(x[:split], y[:split]), batch_size=BATCH, shuffle=True),
                          valid=DataLoader(TensorDataset(x[split:], y[split:]), batch_size=BATCH))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.nn.CrossEntropyLoss(), loaders


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``start``."""
    return tuple(now - then for now, then in zip(_clocks(), start))


def hand_loop(samples: int, logdir: Path) -> tuple[float, float]:
    """A careful hand-written loop (the same accuracy function as AccuracyCallback, sums on the
    device, one ``.item()`` per loader); returns (wall, CPU) seconds."""
    model, optimizer, criterion, loaders = make_setup(samples)
    start = _clocks()
    for epoch in range(1, EPOCHS + 1):
        metrics = {}
        for name, loader in loaders.items():
            train = name == "train"
            model.train(train)
            loss_sum, accuracy_sum = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
            seen = 0
            with torch.set_grad_enabled(train):
                for features, targets in loader:
                    logits = model(features)
                    loss = criterion(logits, targets)
                    if train:
                        loss.backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    loss_sum.add_(loss.detach(), alpha=len(targets))
                    accuracy_sum.add_(accuracy(logits.detach(), targets, topk=(1,))[0], alpha=len(targets))
                    seen += len(targets)
            metrics[f"{name}_loss"], metrics[f"{name}_accuracy01"] = loss_sum.item() / seen, accuracy_sum.item() / seen
        torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                    "epoch": epoch, "metrics": metrics}, logdir / "last.pth")
    return _elapsed(start)


def runner_loop(samples: int, logdir: Path) -> tuple[float, float]:
    """The same training through ``SupervisedRunner.train``; returns (wall, CPU) seconds."""
    model, optimizer, criterion, loaders = make_setup(samples)
    start = _clocks()
    with contextlib.redirect_stdout(io.StringIO()):
        SupervisedRunner().train(model=model, criterion=criterion, optimizer=optimizer, loaders=loaders,
                                 logdir=logdir, num_epochs=EPOCHS, callbacks=[AccuracyCallback(topk_args=(1,))])
    return _elapsed(start)


def ignite_loop(samples: int, logdir: Path) -> tuple[float, float]:
    """The same training with PyTorch-Ignite's supervised trainer and evaluator (their metrics
    accumulate tensors, no per-batch ``.item()``); returns (wall, CPU) seconds."""
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
    from ignite.handlers import Checkpoint, DiskSaver
    from ignite.metrics import Accuracy, Average, Loss

    model, optimizer, criterion, loaders = make_setup(samples)
    start = _clocks()
    trainer = create_supervised_trainer(model, optimizer, criterion,
                                        output_transform=lambda x, y, y_pred, loss: (y_pred.detach(), y, loss.detach()))
    Average(output_transform=lambda output: output[2]).attach(trainer, "loss")
    Accuracy(output_transform=lambda output: output[:2]).attach(trainer, "accuracy01")
    evaluator = create_supervised_evaluator(model, metrics={"loss": Loss(criterion), "accuracy01": Accuracy()})
    saver = Checkpoint({"model": model, "optimizer": optimizer}, DiskSaver(str(logdir), require_empty=False),
                       n_saved=1)
    metrics = {}

    @trainer.on(Events.EPOCH_COMPLETED)
    def _end_epoch(engine):
        metrics.update((f"train_{k}", float(v)) for k, v in engine.state.metrics.items())
        evaluator.run(loaders["valid"])
        metrics.update((f"valid_{k}", float(v)) for k, v in evaluator.state.metrics.items())
        saver(engine)

    trainer.run(loaders["train"], max_epochs=EPOCHS)
    return _elapsed(start)


def import_time(repeats: int = 5) -> float:
    """Median seconds ``import mlcomp.runner`` adds on top of ``import torch`` (fresh interpreters)."""
    code = "import time, torch; t = time.perf_counter(); import mlcomp.runner; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(repeats))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=24000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    contenders = [("hand", hand_loop), ("runner", runner_loop)]
    try:
        import ignite  # noqa: F401 - the bench extra
        contenders.append(("ignite", ignite_loop))
    except ImportError:
        print("ignite: not installed (pip install -e '.[bench]'), skipped")
    times = {name: [] for name, _ in contenders}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name, fn in contenders[round_ % len(contenders):] + contenders[:round_ % len(contenders)]:
                logdir = Path(folder) / f"{name}{round_}"
                logdir.mkdir()
                times[name].append(fn(args.samples, logdir))
    batches = EPOCHS * (args.samples * 4 // 5 // BATCH + args.samples // 5 // BATCH + 2)
    for clock, index in (("wall", 0), ("CPU", 1)):
        rounds = {name: [t[index] for t in runs] for name, runs in times.items()}
        hand = statistics.median(rounds["hand"])
        for name, values in rounds.items():
            print(f"[{clock}] {name:>6} rounds: " + " ".join(f"{t:.3f}" for t in values))
        print(f"[{clock}] hand-written loop: {hand:.3f} s (median of {args.rounds}, {hand / EPOCHS:.3f} s/epoch); "
              + ", ".join(f"{name}: {statistics.median(rounds[name]):.3f} s" for name in rounds if name != "hand"))
        for name in (name for name in rounds if name != "hand"):
            median = statistics.median(rounds[name])
            paired = statistics.median(r / h for r, h in zip(rounds[name], rounds["hand"]))
            print(f"[{clock}] ratio {name}/hand: {median / hand:.3f} of the medians, {paired:.3f} median per round "
                  f"(overhead {1e6 * (median - hand) / batches:.1f} us/batch)")
    print(f"import mlcomp.runner on top of torch: {import_time():.3f} s (median of 5)")


if __name__ == "__main__":
    main()
