"""Image metrics through torchmetrics: reconstruction quality (MSE, PSNR, SSIM) and sample quality (FID, KID).

FID and KID need a feature network. torchmetrics' Inception weights are downloaded on first use, which fails on
offline machines (and needs `torch-fidelity`), so genlab trains its own: the penultimate layer of a `Classifier`
fitted on the same dataset (`genlab fit --model Classifier --data MNIST`). Values computed with different feature
networks are not comparable: always report the network, the number of samples and the split beside the value.
"""

import torch
from torch import Tensor, nn
from torchmetrics import MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.fid import FrechetInceptionDistance  # not re-exported without torch-fidelity
from torchmetrics.image.kid import KernelInceptionDistance


class ReconstructionMetrics:
    """Accumulates MSE (per pixel), PSNR (10 log10(1 / MSE) over the whole set, data range 1) and SSIM (mean over
    images, Gaussian window 11, shrunk to fit images smaller than 11 pixels) of reconstructions in [0, 1]."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        side = min(image_shape[-2:])
        kernel = min(11, side if side % 2 == 1 else side - 1)
        self.mse = MeanSquaredError()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=kernel)

    def update(self, reconstruction: Tensor, x: Tensor) -> None:
        reconstruction, x = reconstruction.float().cpu().clamp(0, 1), x.float().cpu()
        self.mse.update(reconstruction, x)
        self.psnr.update(reconstruction, x)
        self.ssim.update(reconstruction, x)

    def compute(self) -> dict[str, float]:
        return {"recon_mse": self.mse.compute().item(), "psnr": self.psnr.compute().item(),
                "ssim": self.ssim.compute().item()}


class FeatureNetwork(nn.Module):
    """Wraps a network with `features(x) -> (B, num_features)` (e.g. `Classifier`) as torchmetrics' custom
    feature extractor; `features` defaults to the network's forward."""

    def __init__(self, network: nn.Module, num_features: int) -> None:
        super().__init__()
        self.network, self.num_features = network, num_features

    def forward(self, x: Tensor) -> Tensor:
        features = getattr(self.network, "features", self.network)
        return features(x)


class InceptionInput(nn.Module):
    """Images in [0, 1] of any channel count -> uint8 RGB, what torchmetrics' Inception expects."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class SampleDistances:
    """FID (Heusel et al., 2017) and KID (Binkowski et al., 2018) between real and generated images in [0, 1].

    `feature`: a module mapping images to (B, F) features with `num_features` = F (see `FeatureNetwork`), or "inception"
    for torchmetrics' Inception-v3 pool features (2048), which raises when its weights cannot be loaded.
    KID uses subsets of `kid_subset_size` (capped by the number of images) and reports mean and std over subsets.
    """

    def __init__(self, feature: nn.Module | str, kid_subset_size: int = 1000, kid_subsets: int = 100) -> None:
        if feature == "inception":
            self.prepare: nn.Module = InceptionInput()
            self.fid = FrechetInceptionDistance(feature=2048)
            self.kid = KernelInceptionDistance(feature=2048, subset_size=kid_subset_size, subsets=kid_subsets)
        elif isinstance(feature, nn.Module):
            if not isinstance(getattr(feature, "num_features", None), int):
                raise ValueError(f"the feature network {type(feature).__name__} needs an int `num_features` "
                                 "attribute; wrap it as FeatureNetwork(network, num_features)")
            self.prepare = nn.Identity()
            self.fid = FrechetInceptionDistance(feature=feature)
            self.kid = KernelInceptionDistance(feature=feature, subset_size=kid_subset_size, subsets=kid_subsets)
        else:
            raise ValueError(f"feature must be an nn.Module or 'inception', got {feature!r}")
        self.kid_subset_size = kid_subset_size
        self.counts = {True: 0, False: 0}

    def update(self, images: Tensor, real: bool) -> None:
        images = self.prepare(images.float().cpu())
        self.fid.update(images, real=real)
        self.kid.update(images, real=real)
        self.counts[real] += len(images)

    def compute(self) -> dict[str, float]:
        smallest = min(self.counts.values())
        if smallest < 2:
            raise ValueError(f"FID needs >= 2 real and generated images, got {self.counts[True]} and "
                             f"{self.counts[False]}")
        self.kid.subset_size = min(self.kid_subset_size, smallest)
        with torch.random.fork_rng():  # KID draws its subsets from the global RNG: fixed, caller's stream untouched
            torch.manual_seed(0)
            kid_mean, kid_std = self.kid.compute()
        return {"fid": self.fid.compute().item(), "kid": kid_mean.item(), "kid_std": kid_std.item()}
