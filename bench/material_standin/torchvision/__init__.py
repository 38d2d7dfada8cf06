"""A torchvision stand-in for bench/material.py: random images, nothing downloads (see ../README.md).

If a real torchvision is installed (found on ``sys.path`` after this folder) and imports, this
package becomes it, with only its datasets' ``MNIST``, ``FashionMNIST``, ``KMNIST``, ``EMNIST``,
``CIFAR10`` and ``CIFAR100`` replaced by the random ones of ``_standin_datasets.py``; otherwise
(or with ``MATERIAL_STANDIN_REAL_TORCHVISION=0``) the stand-in's own ``datasets``, ``transforms``
and ``utils`` modules serve.
"""
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_OWN_PATH = list(__path__)  # noqa: F821 (set by the import system)
_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "CIFAR10", "CIFAR100")


def _own_datasets():
    spec = importlib.util.spec_from_file_location("_material_standin_datasets",
                                                  os.path.join(_HERE, "_standin_datasets.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _real_spec():
    if os.environ.get("MATERIAL_STANDIN_REAL_TORCHVISION", "1") == "0":
        return None
    parent = os.path.dirname(_HERE)
    paths = [p for p in sys.path if os.path.abspath(p or os.curdir) != parent]
    spec = importlib.machinery.PathFinder.find_spec("torchvision", paths)
    return spec if spec is not None and spec.origin and spec.submodule_search_locations else None


def _become_real(spec) -> bool:
    """Runs the real torchvision's ``__init__`` as this module; False (and nothing left) if it fails."""
    before = set(sys.modules)
    saved = dict(globals())
    __path__[:] = list(spec.submodule_search_locations)  # noqa: F821
    globals()["__file__"] = spec.origin
    try:
        with open(spec.origin) as f:
            exec(compile(f.read(), spec.origin, "exec"), globals())
        real = sys.modules["torchvision.datasets"]
        own = _own_datasets()
        for name in _DATASETS:
            setattr(real, name, getattr(own, name))
        return True
    except Exception as exc:  # a real torchvision built for another torch, for instance
        for name in set(sys.modules) - before:
            if name.startswith("torchvision."):
                del sys.modules[name]
        globals().clear()
        globals().update(saved)
        __path__[:] = _OWN_PATH  # noqa: F821
        sys.stderr.write(f"[material stand-in] the installed torchvision does not import ({exc}); "
                         "using the stand-in's own transforms\n")
        return False


_spec = _real_spec()
if _spec is None or not _become_real(_spec):
    from . import datasets, transforms, utils  # noqa: F401,E402

    __version__ = "0.0.0+material-standin"
