class Scale:
    """Multiplies the features (an albumentations-style transform: keyword arguments in, a dict out)."""

    def __init__(self, factor: float = 1.0):
        self.factor = factor

    def __call__(self, **sample):
        return {**sample, "features": sample["features"] * self.factor}


class Chain:
    """Applies its transforms in order (like albumentations' Compose)."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, **sample):
        for transform in self.transforms:
            sample = transform(**sample)
        return sample
