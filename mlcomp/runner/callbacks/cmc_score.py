"""Cumulative matching characteristics of embeddings on a query/gallery loader (Catalyst 20.08+'s
``CMCScoreCallback``, for metric learning with ``MnistQGDataset``)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.accumulators import List
from mlcomp.runner.callback import Callback, CallbackOrder
from mlcomp.runner.callbacks.metric import concat_on_cpu, gather_from_ranks, get_batch_value

__all__ = ["CMCScoreCallback", "cmc_score"]


def cmc_score(query: torch.Tensor, gallery: torch.Tensor, query_labels: torch.Tensor,
              gallery_labels: torch.Tensor, topk: int = 1) -> float:
    """The share of queries whose ``topk`` nearest gallery embeddings (Euclidean distance) hold
    one of the same label: CMC@k.

    Args:
        query: ``[n_query, dim]`` embeddings; gallery: ``[n_gallery, dim]``.
        query_labels: ``[n_query]``; gallery_labels: ``[n_gallery]``.
        topk: k, at most ``n_gallery`` (a larger k counts the whole gallery).
    """
    nearest = torch.cdist(query.float(), gallery.float()).topk(min(topk, len(gallery)), largest=False).indices
    return (gallery_labels[nearest] == query_labels[:, None]).any(dim=1).float().mean().item()


class CMCScoreCallback(Callback):
    """Keeps a loader's embeddings, labels and query flags and writes ``{prefix}{k:02}`` (CMC@k,
    e.g. ``cmc01``) into ``runner.loader_metrics`` at its end, the query samples (flag true)
    searched among the gallery ones. Run it only on the query/gallery loader (wrap it in a
    ``ControlFlowCallback``, as Catalyst's configs do): other loaders have no query flags.

    Args:
        embeddings_key: the output key of the embeddings ``[batch, dim]``.
        labels_key: the batch key of the labels ``[batch]``.
        is_query_key: the batch key of the query flags ``[batch]`` (bool or 0/1).
        prefix: the metrics' prefix.
        topk_args: the k of each metric; default ``[1]``, plus 3 and 5 when ``num_classes``
            exceeds them (Catalyst's default).
        num_classes: see ``topk_args``.

    Raises:
        ConfigError: a key is missing from the batch or the output; the loader lacks query or
            gallery samples.
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``{prefix}{k:02}`` for each k."""
        return tuple(f"{self.prefix}{k:02}" for k in self.topk_args)

    def __init__(self, embeddings_key: str = "logits", labels_key: str = "targets", is_query_key: str = "is_query",
                 prefix: str = "cmc", topk_args: Sequence[int] | None = None, num_classes: int | None = None):
        super().__init__(CallbackOrder.Metric)
        self.embeddings_key, self.labels_key, self.is_query_key = embeddings_key, labels_key, is_query_key
        self.prefix = prefix
        self.topk_args = list(topk_args or [1] + [k for k in (3, 5) if num_classes is not None and num_classes > k])
        self._parts = {"embeddings": List(), "labels": List(), "is_query": List()}

    def on_loader_start(self, runner) -> None:
        """Forget the previous loader's samples."""
        for part in self._parts.values():
            part.reset()

    def on_batch_end(self, runner) -> None:
        """Keep the batch's embeddings, labels and query flags (detached, on the device)."""
        values = {"embeddings": get_batch_value(runner.output, self.embeddings_key, "runner.output", self),
                  "labels": get_batch_value(runner.input, self.labels_key, "runner.input", self),
                  "is_query": get_batch_value(runner.input, self.is_query_key, "runner.input", self)}
        for name, value in values.items():
            self._parts[name].update(value.detach())

    def on_loader_end(self, runner) -> None:
        """Compute CMC@k on the loader's samples (of every rank)."""
        if self._parts["embeddings"].values:
            embeddings, labels, is_query = (torch.cat(gather_from_ranks(concat_on_cpu(self._parts[name])))
                                            for name in ("embeddings", "labels", "is_query"))
            query = is_query.bool()
            if query.all() or not query.any():
                raise ConfigError(f"CMCScoreCallback: loader {runner.loader_name!r} has {int(query.sum())} query and "
                                  f"{int((~query).sum())} gallery samples; it needs both")
            for k in self.topk_args:
                runner.loader_metrics[f"{self.prefix}{k:02}"] = cmc_score(
                    embeddings[query], embeddings[~query], labels[query], labels[~query], k)
        self.on_loader_start(runner)

    def state_dict(self) -> dict[str, Any]:
        """The loader's samples so far."""
        return {name: part.state_dict() for name, part in self._parts.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for name, part in self._parts.items():
            part.load_state_dict(state[name])
