"""``mlcomp trace LOGDIR``: export a run's model to TorchScript (Catalyst 20.x ``catalyst-dl trace``)."""
from __future__ import annotations

import click

__all__ = ["trace"]


@click.command("trace")
@click.argument("logdir", type=click.Path(file_okay=False, path_type=str))
@click.option("--checkpoint", "-c", default="best", show_default=True, metavar="best|last|PATH",
              help="Checkpoint whose weights are exported: best, last, best_full, last_full, a file "
                   "name in LOGDIR/checkpoints or a path.")
@click.option("--method", "method_name", default="forward", show_default=True, metavar="NAME",
              help="Model method to export.")
@click.option("--mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="Module mode during tracing.")
@click.option("--with-grad", "requires_grad", is_flag=True, help="Keep requires_grad on the parameters.")
@click.option("--script", is_flag=True, help="Compile with torch.jit.script instead of tracing.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="PATH",
              help="Output file [default: LOGDIR/trace/traced-CHECKPOINT-MODE.pth].")
@click.option("--config", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="PATH",
              help="Config to rebuild the model and loaders from [default: LOGDIR/config.yml].")
@click.option("--device", default="cpu", show_default=True, metavar="DEVICE", help="Device to trace on.")
def trace(logdir, checkpoint, method_name, mode, requires_grad, script, out, config, device):
    """Writes a TorchScript file of the model of the run in LOGDIR."""
    from mlcomp.runner.trace import trace_logdir

    path = trace_logdir(logdir, checkpoint=checkpoint, method_name=method_name, mode=mode,
                        requires_grad=requires_grad, out=out, config=config, script=script, device=device)
    click.echo(str(path))
