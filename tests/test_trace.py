"""TorchScript export: trace_model on small modules, trace_logdir and ``mlcomp trace`` on a trained run."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mlcomp.errors import ConfigError
from mlcomp.runner.trace import example_input, load_traced, trace_model, trace_name


class TwoHeads(nn.Module):
    """Dropout (so modes differ), a second exported method and keyword inputs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))

    @torch.jit.export
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)

    def describe(self) -> str:
        return "not exported"


class DataDependent(nn.Module):
    """A loop over a tensor's value: tracing warns and bakes it in, scripting keeps it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(int(x.sum().item()) % 3):
            x = x * 2
        return x


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TwoHeads()


def _roundtrip(module, tmp_path):
    path = tmp_path / "m.pth"
    module.save(str(path))
    return load_traced(path)


def test_traced_forward_matches_the_eager_model_in_eval(model, tmp_path):
    batch = torch.randn(5, 4)
    loaded = _roundtrip(trace_model(model, batch), tmp_path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    other = torch.randn(7, 4)  # another batch size: the trace is not tied to the example
    torch.testing.assert_close(loaded(other), model(other))


def test_trace_of_another_method_and_keyword_inputs(model, tmp_path):
    batch = torch.randn(2, 4)
    traced = _roundtrip(trace_model(model, batch, method_name="embed"), tmp_path)
    torch.testing.assert_close(traced.embed(batch), model.embed(batch))
    by_keyword = trace_model(model, {"features": batch})
    torch.testing.assert_close(by_keyword(batch), model(batch))


def test_train_mode_with_grad_keeps_dropout_and_gradients(model):
    traced = trace_model(model, torch.randn(3, 4), mode="train", requires_grad=True)
    assert traced.training and all(p.requires_grad for p in traced.parameters())
    x = torch.ones(64, 4)
    out = traced(x)
    out.sum().backward()
    assert model.head.weight.grad is not None  # parameters are shared with the eager module
    assert not torch.equal(traced(x), traced(x))  # dropout is active


def test_script_keeps_data_dependent_control_flow(tmp_path):
    scripted = _roundtrip(trace_model(DataDependent(), None, script=True), tmp_path)
    for value in (1.0, 2.0):
        x = torch.full((1,), value)
        torch.testing.assert_close(scripted(x), DataDependent()(x))


def test_trace_falls_back_to_script_when_tracing_fails():
    class Untraceable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    class Batch:  # not a tensor: the tracer refuses it, the compiler does not need it
        pass

    exported = trace_model(Untraceable(), Batch())
    assert isinstance(exported, torch.jit.ScriptModule)
    torch.testing.assert_close(exported(torch.zeros(2)), torch.ones(2))


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "test"}, "trace mode 'test' is not allowed; use one of eval, train"),
    ({"method_name": "predict"}, "model TwoHeads has no method 'predict'"),
    ({"method_name": "describe", "script": True}, "'describe' is not compiled by torch.jit.script"),
])
def test_trace_model_rejects_bad_requests(model, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        trace_model(model, torch.randn(2, 4), **kwargs)


def test_trace_name_follows_catalyst():
    assert trace_name("best") == "traced-best-eval.pth"
    assert trace_name("stage1.3", "train", "embed", True) == "traced-embed-stage1.3-train-with-grad.pth"


def test_example_input_picks_the_input_key():
    x, y = torch.zeros(2), torch.ones(2)
    assert example_input({"features": x, "targets": y}) is x
    assert example_input({"a": x, "b": y}, ["b", "a"]) == (y, x)
    assert example_input((x, y)) is x and example_input(x) is x
    with pytest.raises(ConfigError, match=r"c.yml: runner_params.input_key 'image' is not in the batch; "
                                          r"its keys are \['features', 'targets'\]"):
        example_input({"features": x, "targets": y}, "image", where="c.yml")


# ------------------------------------------------------------------------------ a trained run

@pytest.fixture(scope="module")
def logdir(tmp_path_factory, tiny_config):
    """A one-epoch run of the tiny config (with dropout, so modes differ): ``logdir`` with
    ``config.yml`` and ``checkpoints/{best,last}.pth``."""
    from mlcomp.runner.config import run_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logdir = tmp_path_factory.mktemp("run") / "logs"
    try:
        run_config(tiny_config(dropout=0.2), logdir=logdir)
    finally:
        torch.set_num_threads(threads)
    return logdir


def _eager(logdir, checkpoint="best"):
    """The model of ``logdir`` rebuilt by hand, and a batch of its first loader."""
    from mlcomp.runner.config_experiment import ConfigExperiment
    from mlcomp.runner.config_io import load_config
    from mlcomp.runner.checkpoint import load_checkpoint

    experiment = ConfigExperiment(load_config(logdir / "config.yml"))
    model = experiment.get_model("stage1")
    model.load_state_dict(load_checkpoint(logdir / "checkpoints" / f"{checkpoint}.pth")["model_state_dict"])
    batch = next(iter(experiment.get_loaders("stage1")["train"]))
    return model.eval(), batch["features"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_trace_logdir_writes_a_file_torch_jit_load_opens(logdir):
    from mlcomp.runner.trace import trace_logdir

    path = trace_logdir(logdir)
    assert path == logdir / "trace" / "traced-best-eval.pth"
    traced = torch.jit.load(str(path))  # plain TorchScript: no mlcomp needed to open it
    model, features = _eager(logdir)
    with torch.no_grad():
        torch.testing.assert_close(traced(features), model(features))


def test_cli_traces_the_last_checkpoint_in_train_mode(logdir, tmp_path):
    from click.testing import CliRunner

    from mlcomp.cli import cli

    out = tmp_path / "model.pt"
    result = CliRunner().invoke(cli, ["trace", str(logdir), "--checkpoint", "last", "--mode", "train",
                                      "--with-grad", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    traced = load_traced(out)
    assert traced.training and all(p.requires_grad for p in traced.parameters())
    model, features = _eager(logdir, "last")
    model.train()  # the same dropout masks from the same seed
    outputs = []
    for module in (traced, model):
        torch.manual_seed(7)
        outputs.append(module(features))
    torch.testing.assert_close(*outputs)


def test_cli_script_option_and_default_name(logdir):
    from click.testing import CliRunner

    from mlcomp.cli import cli

    result = CliRunner().invoke(cli, ["trace", str(logdir), "--script", "--checkpoint", "best_full"])
    assert result.exit_code == 0, result.output
    path = logdir / "trace" / "traced-best_full-eval.pth"
    assert result.output.strip() == str(path)
    model, features = _eager(logdir)
    torch.testing.assert_close(load_traced(path)(features), model(features))


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/nowhere"], "logdir {tmp}/nowhere: no such folder"),
    (["{tmp}"], "config {tmp}/config.yml: no such file"),
    (["{logdir}", "--checkpoint", "stage9.9.pth"],
     "stage9.9.pth or {logdir}/checkpoints/stage9.9.pth); checkpoints in {logdir}/checkpoints: best.pth"),
    (["{logdir}", "--method", "predict"], "{logdir}/config.yml: model SimpleNet has no method 'predict'"),
])
def test_cli_user_errors_name_the_path(logdir, tmp_path, argv, message):
    from mlcomp.cli import main

    argv = [a.format(tmp=tmp_path, logdir=logdir) for a in argv]
    result = _main(main, ["trace", *argv])
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path, logdir=logdir) in result.output


def _main(main, argv):
    """Run ``mlcomp.cli.main`` (which prints user errors and calls sys.exit) under CliRunner."""
    from click.testing import CliRunner

    import click

    return CliRunner().invoke(click.Command("m", callback=lambda: main(argv)), [])


def test_trace_logdir_rejects_a_checkpoint_that_does_not_fit(logdir, tmp_path):
    from mlcomp.runner.checkpoint import save_checkpoint
    from mlcomp.runner.trace import trace_logdir

    wrong = save_checkpoint({"model_state_dict": torch.nn.Linear(8, 3).state_dict()}, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match=r"wrong.pth: model state does not fit: missing keys \['net.1.bias'"):
        trace_logdir(logdir, checkpoint=wrong, out=tmp_path / "x.pth")
