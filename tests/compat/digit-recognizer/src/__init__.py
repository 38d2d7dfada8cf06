from catalyst.dl import registry

from .model import Mlp

registry.Model(Mlp)
