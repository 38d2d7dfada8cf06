from collections import OrderedDict

import torch
from catalyst import utils
from catalyst.data import ListDataset
from catalyst.dl import ConfigExperiment


def _blobs(n_samples: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n_samples) % 2
    features = torch.randn(n_samples, 4, generator=generator) + targets[:, None] * 2.0
    return [{"features": f, "targets": int(t)} for f, t in zip(features, targets)]


class Experiment(ConfigExperiment):
    """Two Gaussian blobs; samples go through the stage's transforms (transform_params)."""

    def get_datasets(self, stage: str, n_samples: int = 64, **kwargs):
        datasets = OrderedDict()
        for index, name in enumerate(("train", "valid")):
            transform = self.get_transforms(stage=stage, dataset=name)
            datasets[name] = ListDataset(_blobs(n_samples, seed=index), open_fn=dict, dict_transform=transform)
        return datasets


class FrozenEncoderExperiment(Experiment):
    """Freezes the encoder in the `finetune` stage (Catalyst's _postprocess_model_for_stage)."""

    def _postprocess_model_for_stage(self, stage: str, model):
        model = utils.any2device(model, utils.get_device())
        model.encoder.requires_grad_(stage != "finetune")
        return model
