"""Catalyst 20.x's sample-dict augmentation wrappers (``catalyst.data.Augmentor``,
``AugmentorCompose``, ``AugmentorKeys``; ``catalyst.contrib.data`` from 20.08): they apply a
transform to some keys of a sample dict and leave the other keys as they are.

A nested ``_key_value: true`` in ``transform_params`` (one transform per sample key, as Catalyst
20.05–20.12's ``config5_fp16.yml`` writes it) builds an :class:`AugmentorCompose`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

__all__ = ["Augmentor", "AugmentorCompose", "AugmentorKeys"]


class Augmentor:
    """Applies ``augment_fn`` to the value at ``dict_key`` of a sample dict, in place.

    Args:
        dict_key: the sample key transformed.
        augment_fn: the transform.
        input_key: pass the value as this keyword argument (``image=``, for albumentations);
            None passes it positionally.
        output_key: take this key of the transform's result; None takes the result itself.
        **kwargs: further keyword arguments of every call.
    """

    def __init__(self, dict_key: str, augment_fn: Callable, input_key: str | None = None,
                 output_key: str | None = None, **kwargs: Any):
        self.dict_key, self.augment_fn = dict_key, augment_fn
        self.input_key, self.output_key, self.kwargs = input_key, output_key, kwargs

    def __call__(self, dict_: dict) -> dict:
        value = dict_[self.dict_key]
        output = (self.augment_fn(**{self.input_key: value}, **self.kwargs) if self.input_key is not None
                  else self.augment_fn(value, **self.kwargs))
        dict_[self.dict_key] = output[self.output_key] if self.output_key is not None else output
        return dict_


class AugmentorCompose:
    """One transform per sample key: each ``key2augment_fn[key]`` gets ``{key: sample[key]}``
    and its result's keys replace the sample's; other keys are kept.

    Called with one dict (Catalyst's form) or with the sample's items as keyword arguments
    (how mlcomp's ``get_transforms`` calls a configured transform); returns a new dict.
    """

    def __init__(self, key2augment_fn: Mapping[str, Callable[[dict], dict]]):
        self.key2augment_fn = dict(key2augment_fn)

    def __call__(self, dictionary: dict | None = None, **data: Any) -> dict:
        sample = dict(dictionary if dictionary is not None else data)
        results: dict = {}
        for key, augment_fn in self.key2augment_fn.items():
            results.update(augment_fn({key: sample[key]}))
        return {**sample, **results}


class AugmentorKeys:
    """Calls ``augment_fn`` with some sample keys renamed: ``dict2fn_dict`` maps a sample key to
    the transform's keyword (a list: the same names), and the results come back under the
    sample's names; other keys are kept."""

    def __init__(self, dict2fn_dict: Mapping[str, str] | Sequence[str], augment_fn: Callable):
        self.dict2fn_dict = (dict(dict2fn_dict) if isinstance(dict2fn_dict, Mapping)
                             else {key: key for key in dict2fn_dict})
        self.augment_fn = augment_fn

    def __call__(self, dictionary: dict) -> dict:
        augmented = self.augment_fn(**{fn_key: dictionary[key] for key, fn_key in self.dict2fn_dict.items()})
        return {**dictionary, **{key: augmented[fn_key] for key, fn_key in self.dict2fn_dict.items()}}


def per_key(transforms: Mapping[str, Callable]) -> AugmentorCompose:
    """An :class:`AugmentorCompose` applying ``transforms[key]`` (an albumentations-style
    transform, called with ``key=value``) to each sample key, as Catalyst's ``_key_value``."""
    return AugmentorCompose({key: Augmentor(key, transform, input_key=key, output_key=key)
                             for key, transform in transforms.items()})
