# A Catalyst 20.02-style experiment folder, written for mlcomp's compatibility tests: its imports
# and registrations are Catalyst's, and it must run unchanged through `mlcomp run`.
from catalyst.dl import registry, SupervisedRunner as Runner  # noqa: F401
from catalyst.registry import Model

from .experiment import Experiment, FrozenEncoderExperiment
from .model import TinyNet
from .transforms import Chain, Scale

Model(TinyNet)
registry.TRANSFORMS.add(Chain)
registry.TRANSFORM.add(Scale)
registry.EXPERIMENTS.add(FrozenEncoderExperiment)
