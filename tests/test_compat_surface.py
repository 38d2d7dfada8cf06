"""Catalyst 20.02–20.12's whole public surface: the derived data (module paths, registry names),
the import hook over every module path, the registries over every registered name, and the
transforms, callbacks and criterion added for the names real configs use (datasets and data
helpers: ``test_compat_data.py``)."""
import importlib
import subprocess
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner import SupervisedRunner, registry
from mlcomp.runner.callbacks import BatchTransformCallback, CheckRunCallback
from mlcomp.runner.compat import derive, surface
from mlcomp.runner.compat.catalyst import NotProvidedError
from mlcomp.runner.datasets import MNIST
from mlcomp.runner.expdir import import_expdir, package_name
from mlcomp.runner.losses import SymmetricCrossEntropyLoss
from mlcomp.runner.transforms import ImageToTensor, Normalize, TensorToImage, ToTensor
from tests.runner_utils import Recorder, make_loaders, make_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REGISTRY_OF_KIND = {"model": registry.Model, "module": registry.Model, "criterion": registry.Criterion,
                    "optimizer": registry.Optimizer, "scheduler": registry.Scheduler, "callback": registry.Callback,
                    "transform": registry.Transform, "sampler": registry.Sampler,
                    "experiment": registry.Experiment, "runner": registry.Runner}

CONFIG_NAMES_NOT_SUPPORTED = {
    "callback": {"DrawMasksCallback", "GradientPenaltyCallback", "PerplexityCallback",
                 "PhaseBatchWrapperCallback", "PhaseManagerCallback", "WassersteinDistanceCallback",
                 "WeightClampingOptimizerCallback"},
    "criterion": {"GradientPenaltyLoss", "MeanOutputLoss"},
    "model": {"BertClassifier"},
}
"""Registered names Catalyst's own configs use that mlcomp does not provide yet (the GAN, metric
learning and NLP examples, and callbacks other parts of mlcomp add); a name leaving this list
must be taken out of it."""


# -- the data -----------------------------------------------------------------------------------


def test_the_data_records_its_source_and_has_every_tag():
    assert surface.source()["tags"] == list(surface.SOURCE_TAGS)
    assert {tag for tags in surface.modules().values() for tag in tags} == set(surface.SOURCE_TAGS)
    for module in ("catalyst.contrib.data", "catalyst.contrib.datasets", "catalyst.dl.experiment", "catalyst.core",
                   "catalyst.registry", "catalyst.data", "catalyst.utils"):
        assert module in surface.modules()
    assert not [m for m in surface.modules() if ".tests" in m or m.startswith("catalyst.rl") or "._" in m]
    assert surface.modules()["catalyst.contrib.datasets"] == ["v20.08", "v20.10", "v20.12"]
    assert surface.registered("callback")["CheckRunCallback"] == ["v20.05", "v20.08", "v20.10", "v20.12"]
    assert "albumentations.Normalize" not in surface.registered("transform")  # external: not expanded


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_derive_reads_modules_names_and_registries_from_each_tag(tmp_path):
    files = {
        "catalyst/__init__.py": "",
        "catalyst/dl/__init__.py": "from catalyst.dl.callbacks import *\nfrom typing import List\nVERSION = 1\n",
        "catalyst/dl/callbacks.py": "__all__ = ['AccuracyCallback'] + ['Other']\nclass AccuracyCallback: ...\n"
                                    "class Other: ...\nclass Hidden: ...\n",
        "catalyst/dl/_private.py": "class Secret: ...\n",
        "catalyst/dl/tests/test_x.py": "def test(): ...\n",
        "catalyst/rl/__init__.py": "class Agent: ...\n",
        "catalyst/contrib/__init__.py": "",
        "catalyst/contrib/transforms.py": "class ToTensor: ...\ndef helper(): ...\nlogger = 1\n",
        "catalyst/contrib/registry.py": (
            "def _loader(r):\n"
            "    from catalyst.contrib import transforms as m\n"
            "    r.add_from_module(m, prefix=['catalyst.', 'C.'])\n"
            "    import albumentations as m\n"
            "    r.add_from_module(m, prefix=['A.'])\n"
            "TRANSFORMS = Registry('transform')\nTRANSFORMS.late_add(_loader)\n"
            "def _callbacks(r):\n"
            "    from catalyst.dl import callbacks as m\n"
            "    r.add_from_module(m)\n"
            "CALLBACK = Registry('callback')\nCALLBACKS = CALLBACK\nCALLBACKS.late_add(_callbacks)\n"),
        "examples/config.yml": "stages:\n  callbacks_params:\n    acc: {callback: AccuracyCallback}\n"
                               "    mine: {callback: MyCallback}\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "a", "--allow-empty")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "b")
    _git(tmp_path, "tag", "v1")
    (tmp_path / "catalyst/contrib/transforms.py").write_text("class ImageToTensor: ...\n")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "c")
    _git(tmp_path, "tag", "v2")

    data = derive.derive(tmp_path / ".git", ("v1", "v2"))

    assert sorted(data["modules"]) == ["catalyst", "catalyst.contrib", "catalyst.contrib.registry",
                                       "catalyst.contrib.transforms", "catalyst.dl", "catalyst.dl.callbacks"]
    assert data["modules"]["catalyst.dl"]["names"] == {"v1 v2": ["AccuracyCallback", "Other", "VERSION"]}
    assert data["modules"]["catalyst.contrib.transforms"]["names"] == {
        "v1": ["ToTensor", "helper", "logger"], "v2": ["ImageToTensor"]}
    transforms = data["registries"]["transform"]
    assert transforms["names"] == {"v1": ["C.ToTensor", "C.helper", "catalyst.ToTensor", "catalyst.helper"],
                                   "v2": ["C.ImageToTensor", "catalyst.ImageToTensor"]}
    assert transforms["external"] == {"albumentations A.": ["v1", "v2"]}
    assert data["registries"]["callback"]["names"] == {"v1 v2": ["AccuracyCallback", "Other"]}
    assert data["config_names"] == {"callback": ["AccuracyCallback"]}


# -- the import hook over every module path ---------------------------------------------------------


def test_every_catalyst_module_imports_and_every_name_resolves_or_says_it_is_not_provided(hooked):
    provided, refused = set(), set()
    for module_name in surface.modules():
        module = importlib.import_module(module_name)
        for name in surface.names(module_name):
            try:
                getattr(module, name)
                provided.add(f"{module_name}.{name}")
            except NotProvidedError as e:
                assert f"{module_name}.{name} (Catalyst " in str(e) and "is not provided by mlcomp" in str(e)
                refused.add(f"{module_name}.{name}")
    assert {"catalyst.dl.SupervisedRunner", "catalyst.dl.ConfigExperiment", "catalyst.dl.CheckRunCallback",
            "catalyst.contrib.datasets.MNIST", "catalyst.utils.set_global_seed", "catalyst.data.BalanceClassSampler",
            "catalyst.contrib.nn.criterion.SymmetricCrossEntropyLoss", "catalyst.registry.TRANSFORMS",
            "catalyst.contrib.callbacks.BatchTransformCallback", "catalyst.data.cv.transforms.torch.ToTensor",
            "catalyst.dl.registry.Callback"} <= provided
    assert {"catalyst.data.ImageReader", "catalyst.dl.State", "catalyst.registry.GRAD_CLIPPERS"} <= refused
    nn_normalize = importlib.import_module("catalyst.contrib.nn.modules").Normalize
    assert nn_normalize is not Normalize and issubclass(nn_normalize, torch.nn.Module)  # a layer, not the transform
    dl = importlib.import_module("catalyst.dl")
    assert dl.SupervisedRunner is SupervisedRunner and dl.registry.Callback is registry.Callback
    assert importlib.import_module("catalyst.registry").Callback is registry.Callback  # the registry, not the class
    assert importlib.import_module("catalyst.contrib.datasets").MNIST is MNIST


def test_star_imports_take_the_provided_names_and_from_imports_say_what_is_missing(hooked):
    namespace = {}
    exec("from catalyst.dl import *", namespace)
    assert namespace["SupervisedRunner"] is SupervisedRunner and "State" not in namespace
    with pytest.raises(ImportError, match=r"catalyst.dl.State \(Catalyst 20.02–20.12's name\) is not provided"):
        exec("from catalyst.dl import State", {})
    with pytest.raises(AttributeError, match=r"'catalyst.dl' has no attribute 'Nonsense'"):
        importlib.import_module("catalyst.dl").Nonsense
    with pytest.raises(ModuleNotFoundError, match=r"'catalyst.rl': catalyst is not installed"):
        importlib.import_module("catalyst.rl")


def test_an_expdir_importing_catalysts_module_paths_loads(tmp_path, no_catalyst_modules):
    expdir = tmp_path / "paths_expdir"
    expdir.mkdir()
    (expdir / "__init__.py").write_text(
        "from catalyst.dl.experiment import ConfigExperiment\n"
        "from catalyst.contrib.datasets import MNIST\n"
        "from catalyst.contrib.data.cv import ImageToTensor\n"
        "from catalyst.core import CheckRunCallback\n"
        "from catalyst.contrib.registry import Model\n")
    try:
        package = import_expdir(expdir)
        assert package.ConfigExperiment is importlib.import_module("mlcomp.runner.config_experiment").ConfigExperiment
        assert (package.MNIST, package.ImageToTensor, package.CheckRunCallback, package.Model) == (
            MNIST, ImageToTensor, CheckRunCallback, registry.Model)
    finally:
        sys.modules.pop(package_name(expdir), None)
    assert not any(type(finder).__name__ == "CatalystFinder" for finder in sys.meta_path)


# -- the registries over every registered name ------------------------------------------------------


def test_every_registered_catalyst_name_resolves_or_is_not_supported():
    supported, unsupported = {}, {}
    for kind, reg in REGISTRY_OF_KIND.items():
        for name in surface.registered(kind):
            try:
                reg.get(name, "x")
                supported.setdefault(kind, set()).add(name)
            except ConfigError as e:
                assert f"x: unknown {reg.kind} {name!r}: Catalyst 20." in str(e)
                assert f"{reg.kind} {name!r} is not supported by mlcomp" in str(e)
                unsupported.setdefault(kind, set()).add(name)
    assert {"catalyst.ToTensor", "catalyst.ImageToTensor", "catalyst.TensorToImage",
            "C.ToTensor"} <= supported["transform"]
    assert {"CheckRunCallback", "BatchTransformCallback", "AccuracyCallback"} <= supported["callback"]
    assert {"SymmetricCrossEntropyLoss", "HuberLoss"} <= supported["criterion"]
    used = surface.config_names()
    for kind, names in used.items():
        assert set(names) & unsupported.get(kind, set()) == CONFIG_NAMES_NOT_SUPPORTED.get(kind, set()), kind


def test_a_name_catalyst_never_registered_keeps_the_did_you_mean_hint():
    with pytest.raises(ConfigError, match=r"unknown callback 'AccuracyCalback'; did you mean AccuracyCallback"):
        registry.Callback.get("AccuracyCalback")


def test_a_name_catalyst_took_from_another_package_says_which(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # not installed
    with pytest.raises(ConfigError, match=r"k: unknown transform 'albu.NoSuchBlur': Catalyst 20.02–20.12 took "
                                          r"transforms named like 'albu.NoSuchBlur' from albumentations, which is "
                                          r"not installed \(pip install 'mlcomp\[albumentations\]'\)"):
        registry.Transform.get("albu.NoSuchBlur", "k")
    with pytest.raises(ConfigError, match=r"unknown model 'smp.Unet': .* from segmentation_models_pytorch, which "
                                          r"mlcomp's registry does not read"):
        registry.Model.get("smp.Unet")


def test_albumentations_transforms_are_found_under_catalysts_three_prefixes(monkeypatch):
    albumentations = types.ModuleType("albumentations")
    pytorch = types.ModuleType("albumentations.pytorch")
    albumentations.Normalize = type("Normalize", (), {})
    pytorch.ToTensorV2 = type("ToTensorV2", (), {})
    albumentations.pytorch = pytorch
    monkeypatch.setitem(sys.modules, "albumentations", albumentations)
    monkeypatch.setitem(sys.modules, "albumentations.pytorch", pytorch)
    entries = registry._albumentations()
    for prefix in ("", "A.", "albu.", "albumentations."):
        assert entries[prefix + "Normalize"] is albumentations.Normalize
        assert entries[prefix + "ToTensorV2"] is pytorch.ToTensorV2


# -- transforms -----------------------------------------------------------------------------------


def test_image_to_tensor_moves_channels_first_and_keeps_the_dtype():
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    mask = np.ones((2, 4, 1), dtype=np.uint8)
    sample = registry.Transform.create("catalyst.ImageToTensor")(image=image, mask=mask, other="kept")
    assert sample["image"].shape == (3, 2, 4) and sample["image"].dtype == torch.uint8
    assert torch.equal(sample["image"][1], torch.from_numpy(image[:, :, 1]))
    assert sample["mask"].shape == (1, 2, 4) and sample["mask"].dtype == torch.float32
    assert sample["other"] == "kept"
    assert ImageToTensor(move_channels_dim=False)(image=image)["image"].shape == (2, 4, 3)
    assert ImageToTensor()(image=np.zeros((5, 6), np.float32))["image"].shape == (1, 5, 6)
    with pytest.raises(ValueError, match=r"H×W or H×W×C image, got shape \(1, 2, 3, 4\)"):
        ImageToTensor()(image=np.zeros((1, 2, 3, 4)))


def test_to_tensor_is_dict_style_with_keywords_and_torchvision_style_with_a_picture():
    image = np.full((2, 2, 3), 255, dtype=np.uint8)
    assert ToTensor()(image=image)["image"].dtype == torch.uint8  # Catalyst 20.02's: no scaling
    tensor = ToTensor()(image)  # Catalyst 20.10's torch transform
    assert tensor.shape == (3, 2, 2) and tensor.dtype == torch.float32 and torch.all(tensor == 1.0)
    assert registry.Transform.get("C.ToTensor") is ToTensor
    with pytest.raises(ValueError, match=r"std \[1.0, 0.0\] has a zero"):
        Normalize((0.0, 0.0), (1.0, 0.0))


def test_tensor_to_image_moves_channels_last_and_denormalizes():
    tensor = torch.zeros(3, 2, 4)
    image = TensorToImage()(image=tensor)["image"]
    assert isinstance(image, np.ndarray) and image.shape == (2, 4, 3) and image.dtype == np.float32
    denormalized = TensorToImage(denormalize=True)(image=tensor)["image"]
    assert np.allclose(denormalized[0, 0], [0.485, 0.456, 0.406])  # 0 * std + ImageNet's mean
    assert TensorToImage()(image=torch.ones(2, 3))["image"].shape == (2, 3, 1)


# -- callbacks ------------------------------------------------------------------------------------


def _train(callbacks, num_epochs):
    model = make_model()
    recorder = Recorder()
    SupervisedRunner().train(model=model, criterion=torch.nn.CrossEntropyLoss(),
                             optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loaders=make_loaders(),
                             callbacks=OrderedDict(**callbacks, recorder=recorder), num_epochs=num_epochs)
    return [event for event in recorder.events if event[0] == "on_batch_end"]


def test_check_run_runs_a_few_batches_of_each_loader_and_a_few_epochs():
    batches = _train({"check": CheckRunCallback(num_batch_steps=2, num_epoch_steps=2)}, num_epochs=5)
    assert [(epoch, loader, step) for _, _, epoch, loader, step in batches] == [
        (1, "train", 1), (1, "train", 2), (1, "valid", 1), (1, "valid", 2),
        (2, "train", 1), (2, "train", 2), (2, "valid", 1), (2, "valid", 2)]
    with pytest.raises(ValueError, match=r"num_epoch_steps should be an int >= 1, got 0"):
        CheckRunCallback(num_epoch_steps=0)


def test_check_run_limits_the_loaders_of_each_stage_whatever_their_names():
    callback = CheckRunCallback(num_batch_steps=1)
    for name, batches in (("train", [1, 2]), ("tune", [3, 4])):  # two stages, different loaders
        runner = _Runner()
        runner.loaders, runner.epoch = {name: batches}, 1
        callback.on_stage_start(runner)
        callback.on_epoch_start(runner)
        assert list(runner.loaders[name]) == batches[:1]
        callback.on_epoch_end(runner)
        assert runner.loaders == {name: batches} and not runner.need_early_stop


class _Runner:
    """The parts of a runner the callbacks below read and write."""

    def __init__(self, **batch):
        self.input, self.need_early_stop = batch, False


def test_batch_transform_applies_the_transforms_in_order_to_a_key():
    runner = _Runner(image=torch.ones(2, 3), targets=torch.zeros(2))
    BatchTransformCallback([lambda x: x * 3, lambda x: x + 1], input_key="image",
                           output_key="augmented").on_batch_start(runner)
    assert torch.equal(runner.input["augmented"], torch.full((2, 3), 4.0))
    assert torch.equal(runner.input["image"], torch.ones(2, 3))


def test_batch_transform_with_an_additional_key_and_registry_transforms():
    class Flip(torch.nn.Module):
        def forward(self, pair):
            image, mask = pair
            return image.flip(-1), mask.flip(-1)

    registry.Transform(Flip)
    try:
        runner = _Runner(image=torch.tensor([[1.0, 2.0]]), mask=torch.tensor([[0.0, 1.0]]))
        callback = BatchTransformCallback([{"transform": "Flip"}], input_key="image", additional_input_key="mask")
        callback.on_batch_start(runner)
        assert runner.input["image"].tolist() == [[2.0, 1.0]] and runner.input["mask"].tolist() == [[1.0, 0.0]]
    finally:
        registry.Transform.remove("Flip")
    with pytest.raises(ConfigError, match=r"transform\[0\].transform: unknown transform 'Nope'"):
        BatchTransformCallback([{"transform": "Nope"}])
    with pytest.raises(ConfigError, match=r"should be a list of transforms"):
        BatchTransformCallback({"transform": "Flip"})
    with pytest.raises(ConfigError, match=r"the batch has no key \['image'\]"):
        BatchTransformCallback([abs]).on_batch_start(_Runner(features=torch.ones(1)))


# -- criterion ------------------------------------------------------------------------------------


def test_symmetric_cross_entropy_is_alpha_ce_plus_beta_rce():
    probabilities, targets = torch.tensor([[0.7, 0.3], [0.2, 0.8]]), torch.tensor([0, 0])
    # by hand: q = one-hot clamped to 1e-4; CE = -Σ q log p, RCE = -Σ p log q, batch means
    ce = -(np.log(0.7) + 1e-4 * np.log(0.3) + np.log(0.2) + 1e-4 * np.log(0.8)) / 2
    rce = -(0.3 * np.log(1e-4) + 0.8 * np.log(1e-4)) / 2
    loss = registry.Criterion.create("SymmetricCrossEntropyLoss", None, alpha=0.1, beta=2.0)
    assert float(loss(probabilities, targets)) == pytest.approx(0.1 * ce + 2.0 * rce, rel=1e-5)
    perfect = SymmetricCrossEntropyLoss()(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    only_the_clamps = -1e-4 * np.log(1e-7) - 1e-7 * np.log(1e-4)
    assert float(perfect) == pytest.approx(only_the_clamps, rel=1e-4)
