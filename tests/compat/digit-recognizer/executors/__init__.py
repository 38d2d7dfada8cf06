from .preprocess import Preprocess  # noqa: F401
