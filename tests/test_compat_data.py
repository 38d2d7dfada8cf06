"""The data side of Catalyst 20.x compatibility: MNIST through torchvision or its raw files, the
metric-learning MNIST splits, the image/tensor helpers, Catalyst's transforms inside albumentations'
Compose, an experiment folder importing every Catalyst data and utils name the CI experiment
folders of 20.02–20.12 import, and the refusal of 20.12's Hydra command lines."""
import gzip
import inspect
import socket
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner import albu, mnist
from mlcomp.runner.augmentor import Augmentor, AugmentorCompose, AugmentorKeys
from mlcomp.runner.config_experiment import ConfigExperiment
from mlcomp.runner.compat.catalyst import catalyst_imports
from mlcomp.runner.datasets import MNIST, MnistMLDataset, MnistQGDataset
from mlcomp.runner.expdir import import_expdir, package_name
from mlcomp.runner.imagetensor import tensor_from_rgb_image, tensor_to_ndimage
from mlcomp.runner.transforms import ImageToTensor, TensorToImage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGES = torch.arange(12 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(12, 28, 28)
LABELS = torch.tensor([0, 5, 1, 6, 2, 7, 3, 8, 4, 9, 5, 0])


def _install_torchvision(monkeypatch, datasets_module):
    package = types.ModuleType("torchvision")
    package.__path__ = []
    package.datasets = datasets_module
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets_module)


@pytest.fixture
def fake_torchvision(monkeypatch):
    """A torchvision whose ``datasets.MNIST`` serves :data:`IMAGES`/:data:`LABELS` (or raises
    ``FakeMNIST.error``), recording its calls."""
    class FakeMNIST:
        calls, error, mirrors = [], None, []

        def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
            FakeMNIST.calls.append((root, train, download))
            if FakeMNIST.error is not None:
                raise FakeMNIST.error
            self.data, self.targets = IMAGES, LABELS

    module = types.ModuleType("torchvision.datasets")
    module.MNIST = FakeMNIST
    _install_torchvision(monkeypatch, module)
    return FakeMNIST


@pytest.fixture
def no_torchvision(monkeypatch):
    """torchvision not installed."""
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with (gzip.open if gz else open)(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


# -- MNIST ----------------------------------------------------------------------------------------


def test_mnist_takes_torchvisions_data_with_catalysts_arguments(tmp_path, fake_torchvision, hooked):
    from catalyst.contrib.data.cv import Compose, Normalize, ToTensor
    from catalyst.contrib.datasets import MNIST as CatalystMNIST

    transform = Compose([ToTensor(), Normalize((0.5,), (0.25,))])
    dataset = CatalystMNIST(str(tmp_path), train=False, download=True, transform=transform,
                            target_transform=lambda t: t * 10)
    assert fake_torchvision.calls == [(str(tmp_path), False, False)]  # the files are there: no download
    image, target = dataset[3]
    assert len(dataset) == 12 and target == 60 and image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.allclose(image[0], (IMAGES[3].float() / 255 - 0.5) / 0.25)
    raw_image, raw_target = MNIST(tmp_path)[1]
    assert isinstance(raw_image, np.ndarray) and raw_image.dtype == np.uint8 and raw_target == 5
    assert np.array_equal(raw_image, IMAGES[1].numpy())


def test_mnist_without_torchvisions_files_names_the_folder(tmp_path, fake_torchvision):
    fake_torchvision.error = RuntimeError("Dataset not found. You can use download=True to download it")
    with pytest.raises(ConfigError, match=rf"{tmp_path}/MNIST: MNIST files missing \(torchvision: Dataset not found"):
        MNIST(tmp_path, train=False)


def _closed_ports() -> tuple[int, int]:
    """Two distinct local ports nobody listens on (bound, then closed)."""
    ports: set[int] = set()
    while len(ports) < 2:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.add(probe.getsockname()[1])
    return tuple(sorted(ports))


def test_a_download_without_a_network_fails_at_once_naming_the_folder(tmp_path, fake_torchvision):
    ports = _closed_ports()
    fake_torchvision.mirrors = [f"http://127.0.0.1:{ports[0]}/mnist/"]  # torchvision 0.9+
    fake_torchvision.resources = [(f"http://127.0.0.1:{ports[1]}/train-images-idx3-ubyte.gz", "md5")]  # older
    fake_torchvision.error = RuntimeError("Dataset not found.")
    with pytest.raises(ConfigError, match=rf"{tmp_path}/MNIST: MNIST files missing and download=True cannot reach "
                                          rf"torchvision's mirrors \(127.0.0.1:{ports[0]}: .*; 127.0.0.1:{ports[1]}: "):
        MNIST(tmp_path, download=True)
    assert [call[2] for call in fake_torchvision.calls] == [False]  # torchvision never asked to download


def test_a_failed_download_becomes_the_same_clear_error(tmp_path, fake_torchvision, monkeypatch):
    monkeypatch.setattr(mnist, "check_reachable", lambda hosts, folder: None)
    fake_torchvision.error = RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    with pytest.raises(ConfigError, match=rf"{tmp_path}/MNIST: MNIST files missing and the download failed "
                                          r"\(RuntimeError: Error downloading"):
        MNIST(tmp_path, download=True)


def test_mnist_reads_the_raw_files_when_torchvision_does_not_import(tmp_path, no_torchvision):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    _write_idx(raw / "t10k-images-idx3-ubyte", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5]), gz=True)
    dataset = MNIST(tmp_path, train=False)
    assert len(dataset) == 5 and dataset[2][1] == 4 and np.array_equal(dataset[0][0], images[0])
    assert dataset.data.dtype == torch.uint8 and dataset.targets.dtype == torch.int64


def test_without_torchvision_and_files_the_error_names_the_root_and_why(tmp_path, no_torchvision):
    with pytest.raises(ConfigError, match=rf"{tmp_path}/MNIST/raw: MNIST files missing: train-images-idx3-ubyte, "
                                          r"train-labels-idx1-ubyte .*torchvision cannot be imported \(.*Error.*"
                                          r"download=True needs torchvision"):
        MNIST(tmp_path, download=True)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not idx")
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01")
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte: not an IDX file"):
        MNIST(tmp_path)


def test_a_torchvision_built_for_another_torch_counts_as_absent(monkeypatch):
    broken = types.ModuleType("torchvision.datasets")

    def fail(name):
        raise RuntimeError("operator torchvision::nms does not exist")

    broken.__getattr__ = fail
    _install_torchvision(monkeypatch, broken)
    assert mnist.torchvision_mnist() == (None, "RuntimeError: operator torchvision::nms does not exist")


def test_metric_learning_splits_keep_catalysts_digits_and_query_flags(tmp_path, fake_torchvision):
    train = MnistMLDataset(root=str(tmp_path))
    assert train.get_labels() == [0, 1, 2, 3, 4, 0] and len(train.classes) == 5
    with pytest.raises(ValueError, match="only for training"):
        MnistMLDataset(root=str(tmp_path), train=False)
    query_gallery = MnistQGDataset(str(tmp_path), transform=lambda image: image.shape, gallery_fraq=0.4)
    assert fake_torchvision.calls[-1] == (str(tmp_path), False, False)
    assert query_gallery.targets.tolist() == [5, 6, 7, 8, 9, 5]
    assert (query_gallery.query_size, query_gallery.gallery_size) == (4, 2)
    samples = [query_gallery[i] for i in range(len(query_gallery))]
    assert [bool(s["is_query"]) for s in samples] == [True] * 4 + [False] * 2
    assert samples[0]["features"] == (28, 28) and samples[5]["targets"] == 5


# -- image/tensor helpers --------------------------------------------------------------------------


def test_tensor_to_ndimage_denormalizes_clamps_and_moves_channels_last():
    images = torch.zeros(2, 3, 4, 5)
    images[0, 0, 0, 0] = 10.0
    array = tensor_to_ndimage(images)
    assert array.shape == (2, 4, 5, 3) and array.dtype == np.float32
    assert np.allclose(array[1, 0, 0], [0.485, 0.456, 0.406]) and array[0, 0, 0, 0] == 1.0  # clamped
    as_bytes = tensor_to_ndimage(torch.full((3, 2, 2), 0.5), denormalize=False, dtype=np.uint8)
    assert as_bytes.shape == (2, 2, 3) and as_bytes.dtype == np.uint8 and np.all(as_bytes == 128)
    assert tensor_to_ndimage(torch.ones(1, 2, 2), False, move_channels_dim=False).shape == (1, 2, 2)
    with pytest.raises(ValueError, match="dtype .* is not supported"):
        tensor_to_ndimage(images, dtype=np.int32)


def test_tensor_from_rgb_image_moves_channels_first_and_keeps_the_dtype():
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    tensor = tensor_from_rgb_image(image)
    assert tensor.shape == (3, 2, 4) and tensor.dtype == torch.uint8
    assert torch.equal(tensor[2], torch.from_numpy(image[:, :, 2]))


def test_tensor_to_image_clamps_as_catalysts_does():
    image = TensorToImage()(image=torch.full((1, 2, 2), 3.0))["image"]
    assert image.shape == (2, 2, 1) and np.all(image == 1.0)


# -- layers ----------------------------------------------------------------------------------------


def test_catalysts_normalize_and_lambda_layers_answer_nn_module_paths(hooked):
    from catalyst.contrib.nn.modules import Lambda
    from catalyst.contrib.nn.modules.common import Normalize

    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(Normalize()(x), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert torch.allclose(Normalize(p=1, dim=0)(x), torch.tensor([[1.0, 4 / 6], [0.0, 2 / 6]]))
    assert torch.equal(Lambda(lambda t: t * 2)(x), x * 2) and not list(Lambda(abs).parameters())


# -- Catalyst's sample-dict augmentors --------------------------------------------------------------


def test_augmentors_transform_some_keys_and_keep_the_others():
    double = Augmentor("x", lambda value, factor: value * factor, factor=2)
    assert double({"x": 3, "y": 1}) == {"x": 6, "y": 1}
    by_keyword = Augmentor("x", lambda image: {"image": image + 1}, input_key="image", output_key="image")
    composed = AugmentorCompose({"x": by_keyword})
    assert composed({"x": 1, "y": 5}) == {"x": 2, "y": 5} and composed(x=1, y=5) == {"x": 2, "y": 5}
    renamed = AugmentorKeys({"features": "image"}, lambda image: {"image": -image})
    assert renamed({"features": 4, "targets": 0}) == {"features": -4, "targets": 0}
    assert AugmentorKeys(["image"], lambda image: {"image": 0})({"image": 9}) == {"image": 0}


def test_a_nested_key_value_transform_applies_one_transform_per_sample_key():
    from tests.test_config import minimal

    config = minimal(stage_params={"num_epochs": 1}, transform_params={
        "_key_value": True,
        "train": {"_key_value": True, "image": {"transform": "catalyst.ImageToTensor"}},
        "valid": {"transform": "catalyst.ImageToTensor"}})
    experiment = ConfigExperiment(config)
    sample = {"image": np.zeros((2, 3, 1), np.uint8), "targets": 1}
    for dataset in ("train", "valid"):
        out = experiment.get_transforms("train", dataset)(dict(sample))
        assert out["image"].shape == (1, 2, 3) and out["targets"] == 1


# -- Catalyst's transforms inside albumentations' Compose -----------------------------------------


@pytest.fixture
def fake_albumentations(monkeypatch):
    """An albumentations whose ``Compose`` reads each step's ``available_keys`` and, as 1.x+
    does, refuses an image that is not a numpy array before any step runs."""
    class BasicTransform:
        def __init__(self, p=0.5):
            self.p, self.available_keys = p, set(self.targets)

    class Compose:
        def __init__(self, transforms):
            self.transforms, self.keys = transforms, set().union(*(t.available_keys for t in transforms))

        def preprocess(self, data):
            if not isinstance(data["image"], np.ndarray):
                raise TypeError("image must be numpy array type")

        def __call__(self, **data):
            self.preprocess(data)
            for step in self.transforms:
                data = step(**data)
            return data

    interface = types.ModuleType("albumentations.core.transforms_interface")
    interface.BasicTransform = BasicTransform
    package = types.ModuleType("albumentations")
    package.__path__, package.Compose = [], Compose
    core = types.ModuleType("albumentations.core")
    core.__path__ = []
    for name, module in (("albumentations", package), ("albumentations.core", core),
                         ("albumentations.core.transforms_interface", interface)):
        monkeypatch.setitem(sys.modules, name, module)
    albu._classes.cache_clear()
    yield BasicTransform
    albu._classes.cache_clear()


def test_catalysts_transforms_become_albumentations_transforms_in_a_tensor_tolerant_compose(fake_albumentations):
    entries = albu.registry_entries(("A.", "albu."))
    image_to_tensor = entries["catalyst.ImageToTensor"]
    assert entries["C.ImageToTensor"] is image_to_tensor and issubclass(image_to_tensor, fake_albumentations)
    assert image_to_tensor.__name__ == "ImageToTensor" and "Compose" in entries and "albu.Compose" in entries
    assert str(inspect.signature(image_to_tensor)) == str(inspect.signature(ImageToTensor))
    compose = entries["A.Compose"]([entries["catalyst.TensorToImage"](), image_to_tensor()])
    assert compose.keys == {"image", "mask"}
    out = compose(image=torch.full((2, 3), 2.0), label=7)  # a tensor image, as 20.02–20.10's MNIST gave it
    assert out["image"].shape == (1, 2, 3) and torch.all(out["image"] == 1.0) and out["label"] == 7


def test_without_albumentations_the_registry_keeps_the_plain_transforms(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)
    albu._classes.cache_clear()
    try:
        assert albu.registry_entries(("A.",)) == {}
    finally:
        albu._classes.cache_clear()


# -- an experiment folder importing what Catalyst's CI folders import ------------------------------


EXPERIMENT = '''
from collections import OrderedDict

from catalyst.contrib.data.cv import Compose, Normalize, ToTensor
from catalyst.contrib.data.dataset import Compose as Compose2005, ToTensor as ToTensor2005
from catalyst.contrib.datasets import MNIST as _MNIST
from catalyst.contrib.datasets.mnist import MnistQGDataset
from catalyst.contrib.utils.cv.tensor import tensor_to_ndimage
from catalyst.data.cv import ToTensor as ToTensor2008
from catalyst.data import ListDataset
from catalyst.dl import ConfigExperiment
from catalyst.utils import any2device, get_device, set_global_seed, tensor_from_rgb_image


class MNIST(_MNIST):
    def __getitem__(self, index):
        image = tensor_to_ndimage(self.data[index].unsqueeze(0).float() / 255, False, move_channels_dim=True)
        return self.transform(image), self.targets[index]


class Experiment(ConfigExperiment):
    def get_datasets(self, stage, **kwargs):
        set_global_seed(0)
        transform = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
        datasets = OrderedDict()
        datasets["train"] = MNIST("./data", train=False, download=True, transform=transform)
        datasets["valid"] = Compose2005([ToTensor2005()]) and ListDataset(
            [tensor_from_rgb_image(_MNIST("./data", train=True).data[0].numpy()[:, :, None])],
            open_fn=lambda x: {"features": any2device(x, get_device()), "targets": 0})
        datasets["valid_query_gallery"] = MnistQGDataset("./data", transform=ToTensor2008())
        return datasets
'''


def test_an_experiment_folder_with_catalysts_data_imports_builds_its_datasets(
        tmp_path, fake_torchvision, no_catalyst_modules):
    expdir = tmp_path / "data_expdir"
    expdir.mkdir()
    (expdir / "__init__.py").write_text(textwrap.dedent(EXPERIMENT))
    try:
        package = import_expdir(expdir)
        datasets = package.Experiment.get_datasets(None, "train")
    finally:
        sys.modules.pop(package_name(expdir), None)
    image, target = datasets["train"][0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and int(target) == 0
    assert datasets["valid"][0]["features"].shape == (1, 28, 28)
    query = datasets["valid_query_gallery"][0]
    assert query["features"].shape == (1, 28, 28) and query["targets"] == 5 and bool(query["is_query"])


# -- Catalyst 20.12's Hydra command lines ----------------------------------------------------------


def test_hydra_command_lines_are_refused_saying_so(capsys):
    from mlcomp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--hydra", "--config-dir", "conf_dir", "--config-name", "conf/config_train.yaml",
              "args.check=1"])
    assert exit_info.value.code == 2
    assert "--hydra: Catalyst 20.12's Hydra configs (--config-dir" in capsys.readouterr().err


def test_set_requires_grad_takes_a_bool_or_every_parameters_name():
    with catalyst_imports():
        from catalyst.utils import set_requires_grad
    model = torch.nn.Linear(2, 1)
    set_requires_grad(model, False)
    assert not any(p.requires_grad for p in model.parameters())
    set_requires_grad(model, {"weight": True, "bias": False})
    assert (model.weight.requires_grad, model.bias.requires_grad) == (True, False)
    with pytest.raises(ValueError, match="'bias' is not in requires_grad"):
        set_requires_grad(model, {"weight": True})
