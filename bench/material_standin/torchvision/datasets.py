"""The stand-in's datasets (random images): see _standin_datasets.py."""
from ._standin_datasets import CIFAR10, CIFAR100, EMNIST, KMNIST, MNIST, FashionMNIST  # noqa: F401
