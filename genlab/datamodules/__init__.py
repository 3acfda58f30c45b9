"""Datamodules: float images in [0, 1], (C, H, W), batches (x, y); each exposes image_shape, num_classes and
class_names."""

from .base import ImageDataModule, default_root
from .celeba import CelebA
from .cifar import CIFAR10
from .dataset_errors import DatasetCorruptError, DatasetNotFoundError
from .fake import FakeImages
from .frey import FreyFaces
from .imagefolder import ImageFolder
from .mnist import MNIST
from .shapes import Shapes
from .streaming import Streaming
from .svhn import SVHN

__all__ = ["ImageDataModule", "DatasetNotFoundError", "DatasetCorruptError", "MNIST", "CIFAR10", "SVHN", "CelebA",
           "ImageFolder", "Streaming", "FreyFaces", "Shapes", "FakeImages", "default_root"]
