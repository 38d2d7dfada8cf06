"""Registries of the runner's config API: registration styles, lazy defaults, lookups and
user-facing errors."""
from __future__ import annotations

import pytest
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner import registry
from mlcomp.runner.registry import Registry


@pytest.fixture
def reg():
    return Registry("model")


def test_register_as_call_decorator_and_alias(reg):
    class A:
        pass

    assert reg(A) is A

    @reg
    class B:
        pass

    @reg(name="Alias")
    def make():
        return 1

    assert reg.get("A") is A and reg.get("B") is B and reg.get("Alias") is make
    assert reg.add(A, name="A2") is A and "A2" in reg
    assert reg.names() == ["A", "A2", "Alias", "B"]


def test_register_rejects_non_callables(reg):
    with pytest.raises(TypeError, match="only register callables"):
        reg(42)


def test_defaults_load_lazily_once_and_user_entries_shadow_them():
    calls = []

    def defaults():
        calls.append(1)
        return {"Net": torch.nn.Linear}

    reg = Registry("model", defaults)

    class Net(torch.nn.Module):
        pass

    assert calls == []
    assert reg.get("Net") is torch.nn.Linear
    reg(Net)
    assert reg.get("Net") is Net
    reg.remove("Net")
    assert reg.get("Net") is torch.nn.Linear
    assert calls == [1]


def test_unknown_name_names_the_key_path_and_close_matches(reg):
    reg(type("DigitsNet", (), {}))
    reg(type("Other", (), {}))
    with pytest.raises(ConfigError) as e:
        reg.get("DigitNet", "model_params.model")
    assert str(e.value) == "model_params.model: unknown model 'DigitNet'; did you mean DigitsNet?"
    with pytest.raises(ConfigError, match=r"unknown model 'other'; did you mean Other\?"):
        reg.get("other")
    with pytest.raises(ConfigError, match=r"unknown model 'Zzz'; looked in the defaults and .*; register it with "
                                          r"mlcomp.runner.registry.Model\(...\) in the expdir's __init__.py"):
        reg.get("Zzz")


def test_create_reports_rejected_keywords_with_the_signature(reg):
    reg(torch.nn.Linear)
    message = r"model_params: model Linear does not accept the arguments \['bogus', 'in_features'"
    with pytest.raises(ConfigError, match=message):
        reg.create("Linear", "model_params", in_features=2, out_features=3, bogus=1)
    assert isinstance(reg.create("Linear", "x", 2, 3), torch.nn.Linear)


def test_create_from_params_pops_the_name_key(reg):
    reg(torch.nn.Linear)
    layer = reg.create_from_params({"model": "Linear", "in_features": 2, "out_features": 5}, "model", "model_params")
    assert layer.out_features == 5
    with pytest.raises(ConfigError, match=r"model_params: missing key 'model' naming the model"):
        reg.create_from_params({"in_features": 2}, "model", "model_params")
    with pytest.raises(ConfigError, match=r"model_params: expected a mapping"):
        reg.create_from_params(["Linear"], "model", "model_params")


@pytest.mark.parametrize("reg_name, name, expected", [
    ("Model", "DigitsCNN", "mlcomp.runner.models.DigitsCNN"),
    ("Model", "SimpleNet", "mlcomp.runner.models.SimpleNet"),
    ("Model", "Linear", "torch.nn.modules.linear.Linear"),
    ("Criterion", "CrossEntropyLoss", "torch.nn.modules.loss.CrossEntropyLoss"),
    ("Criterion", "FocalLossBinary", "mlcomp.runner.losses.FocalLossBinary"),
    ("Optimizer", "Adam", "torch.optim.adam.Adam"),
    ("Optimizer", "SGD", "torch.optim.sgd.SGD"),
    ("Scheduler", "StepLR", "torch.optim.lr_scheduler.StepLR"),
    ("Scheduler", "ReduceLROnPlateau", "torch.optim.lr_scheduler.ReduceLROnPlateau"),
    ("Dataset", "DigitsDataset", "mlcomp.runner.datasets.DigitsDataset"),
    ("Dataset", "NpzDataset", "mlcomp.runner.datasets.NpzDataset"),
    ("Callback", "CriterionCallback", None),
    ("Callback", "OptimizerCallback", None),
    ("Callback", "CheckpointCallback", None),
    ("Callback", "AccuracyCallback", None),
    ("Experiment", "ConfigExperiment", "mlcomp.runner.config_experiment.ConfigExperiment"),
    ("Runner", "SupervisedRunner", "mlcomp.runner.supervised.SupervisedRunner"),
])
def test_default_entries(reg_name, name, expected):
    factory = registry.REGISTRIES[reg_name].get(name)
    assert factory.__name__ == name
    if expected:
        assert f"{factory.__module__}.{factory.__qualname__}" == expected


def test_defaults_are_filtered_by_kind():
    assert "Linear" not in registry.Criterion and "Optimizer" not in registry.Optimizer
    assert "LRScheduler" not in registry.Scheduler and "Module" not in registry.Model


def test_callback_defaults_are_the_exported_callback_classes():
    from mlcomp.runner import callbacks
    from mlcomp.runner.callback import Callback

    exported = {name for name in callbacks.__all__
                if isinstance(getattr(callbacks, name), type) and issubclass(getattr(callbacks, name), Callback)}
    assert exported and exported <= set(registry.Callback.names())


def test_user_registration_is_global_and_removable():
    class ShadowNet(torch.nn.Linear):
        pass

    registry.Model(ShadowNet)
    try:
        assert registry.Model.get("ShadowNet") is ShadowNet
    finally:
        registry.Model.remove("ShadowNet")
    assert "ShadowNet" not in registry.Model
