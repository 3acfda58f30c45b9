"""Image metrics: reconstruction quality (MSE, PSNR, SSIM, through torchmetrics) and sample quality on feature
matrices: Fréchet distance, kernel distance (KID), precision / recall / density / coverage.

Features come from a network given by the caller: the penultimate layer of a genlab `Classifier` fitted on the same
dataset (works offline; not comparable with published numbers), or `InceptionFeatures`, Inception-v3 pool3 loaded
from a local weights file with the clean-fid input protocol. Always report the network, the number of samples and
the split beside a value.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchmetrics import MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from ..errors import GenlabError
from ..models.protocols import FeatureExtractor

INCEPTION_HELP = ("Inception FID/KID needs the Inception-v3 weights as a local file: download pytorch-fid's "
                  "pt_inception-2015-12-05-6726825d.pth (the TF FID weights, https://github.com/mseitzer/pytorch-fid/"
                  "releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth) or torchvision's "
                  "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth and pass "
                  "--metrics.inception_weights PATH")
TF_AVERAGE_POOL_BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                          "Mixed_7b")  # their pool branch averages without the padding in the TF FID graph
CHUNK = 1024  # rows of a pairwise-distance block: memory CHUNK x n, whatever the number of samples


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
    """Wraps a network as torchmetrics' custom feature extractor: a `FeatureExtractor` (e.g. `Classifier`) by its
    `features(x) -> (B, num_features)`, any other network by its forward."""

    def __init__(self, network: nn.Module, num_features: int) -> None:
        super().__init__()
        self.network, self.num_features = network, num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.network.features(x) if isinstance(self.network, FeatureExtractor) else self.network(x)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussians fitted to (N, F) features (Heusel et al.,
    2017), in float64; tr (S_r S_f)^(1/2) is the sum of the square roots of the eigenvalues of S_r S_f."""
    real, fake = real.double(), fake.double()
    cov_r, cov_f = torch.cov(real.T), torch.cov(fake.T)
    sqrt_trace = torch.linalg.eigvals(cov_r @ cov_f).sqrt().real.sum()
    mean_term = (real.mean(0) - fake.mean(0)).pow(2).sum()
    return (mean_term + cov_r.trace() + cov_f.trace() - 2 * sqrt_trace).item()


def polynomial_mmd(real: Tensor, fake: Tensor) -> Tensor:
    """Unbiased MMD^2 (equal sizes) with k(x, y) = (x.y / F + 1)^3 (Binkowski et al., 2018): 0 in expectation for
    two samples of one law."""
    m, features = len(real), real.shape[1]
    k_rr, k_ff = (real @ real.T / features + 1) ** 3, (fake @ fake.T / features + 1) ** 3
    k_rf = (real @ fake.T / features + 1) ** 3
    within = (k_rr.sum() - k_rr.diagonal().sum() + k_ff.sum() - k_ff.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_rf.mean()


def kernel_distance(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                    max_fraction: float = 0.5, seed: int = 0) -> dict[str, float]:
    """KID: mean and standard deviation (ddof 0) of `polynomial_mmd` over `subsets` random subsets, each drawn
    without replacement, independently for real and fake (the torch-fidelity / torchmetrics protocol: 100 x 1000).

    Subsets hold min(`subset_size`, `max_fraction` x the smaller sample) images: with 1000 images a side, subsets of
    1000 would all be the whole set and the std meaningless (0 up to rounding). At half the sample, the std over
    subsets approximates the sampling std of the full-sample estimate when the laws differ (half-sampling); for
    equal laws it overstates it (about 2x), as MMD^2's variance then falls like 1 / m^2.
    """
    m = min(subset_size, int(max_fraction * min(len(real), len(fake))))
    if m < 2:
        raise ValueError(f"KID needs subsets of >= 2 images; got {len(real)} real and {len(fake)} generated images "
                         f"with max_fraction={max_fraction}")
    generator = torch.Generator().manual_seed(seed)
    real, fake = real.double(), fake.double()
    values = torch.stack([polynomial_mmd(real[torch.randperm(len(real), generator=generator)[:m]],
                                         fake[torch.randperm(len(fake), generator=generator)[:m]])
                          for _ in range(subsets)])
    return {"kid": values.mean().item(), "kid_std": values.std(correction=0).item(), "kid_subset_size": m,
            "kid_subsets": subsets}


def euclidean(a: Tensor, b: Tensor) -> Tensor:
    """(A, B) pairwise distances, computed directly (the matmul shortcut puts ~1e-3 errors on a point's own 0)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def kth_neighbour_distances(x: Tensor, k: int) -> Tensor:
    """(N,) distance from each row of x to its k-th nearest other row."""
    return torch.cat([euclidean(rows, x).topk(k + 1, dim=1, largest=False).values[:, -1] for rows in x.split(CHUNK)])


def precision_recall_density_coverage(real: Tensor, fake: Tensor, nearest_k: int = 5) -> dict[str, float]:
    """Naeem et al. (2020) on (N, F) and (M, F) features, with k-nearest-neighbour balls B(x, r_k(x)):
    precision: share of fakes inside some real ball; recall: share of reals inside some fake ball; density:
    real balls containing each fake, averaged and divided by k (1 for fakes distributed like the data); coverage:
    share of real balls containing at least one fake. Identical sets give 1, 1, (k + 1) / k, 1."""
    if min(len(real), len(fake)) <= nearest_k:
        raise ValueError(f"nearest_k={nearest_k} needs more than {nearest_k} real and generated images, got "
                         f"{len(real)} and {len(fake)}")
    real, fake = real.double(), fake.double()
    real_radii, fake_radii = kth_neighbour_distances(real, nearest_k), kth_neighbour_distances(fake, nearest_k)
    nearest_fake = torch.full((len(real),), torch.inf, dtype=torch.float64)
    precise = density = 0.0
    for rows in fake.split(CHUNK):
        distances = euclidean(rows, real)  # (chunk, N)
        in_real_ball = distances <= real_radii
        precise += in_real_ball.any(1).sum().item()
        density += in_real_ball.sum().item()
        nearest_fake = torch.minimum(nearest_fake, distances.min(0).values)
    recalled = sum((euclidean(rows, fake) <= fake_radii).any(1).sum().item() for rows in real.split(CHUNK))
    covered = (nearest_fake <= real_radii).double().mean().item()
    return {"precision": precise / len(fake), "recall": recalled / len(real),
            "density": density / (nearest_k * len(fake)), "coverage": covered}


class TFPoolBranch(nn.Module):
    """Wraps an Inception block whose last output channels are its pool branch, recomputing that branch with
    TensorFlow's pooling: an average that ignores the padding, or (Mixed_7c of the FID graph) a max pool."""

    def __init__(self, block: nn.Module, pool: str) -> None:
        super().__init__()
        self.block, self.pool = block, pool

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.pool == "max" else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        branch = self.block.branch_pool(pooled)
        return torch.cat([out[:, : -branch.shape[1]], branch], dim=1)


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 features (B, 2048) of images in [0, 1], from a local weights file (torchvision's
    architecture; no download, no torch-fidelity).

    Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF FID graph; 1008 classes, TF pooling
    restored with `TFPoolBranch`, input scaled to [-1, 1] as pytorch-fid does) or torchvision's ImageNet state dict
    (1000 classes, ImageNet mean/std; a different network: its values are not comparable with published FIDs).
    Input protocol (clean-fid, Parmar et al., 2022): grey replicated to RGB, quantised to uint8 first, then resized
    to 299 x 299 by PIL's bicubic filter on float32 channels. `protocol` records all of this.
    """

    num_features = 2048

    def __init__(self, weights_path: str | Path | None) -> None:
        super().__init__()
        from torchvision.models.inception import Inception3

        if weights_path is None or not Path(weights_path).is_file():
            raise GenlabError(f"{INCEPTION_HELP} (got {weights_path})")
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as error:  # not a PyTorch file, truncated download, pickled code
            raise GenlabError(f"{weights_path} cannot be read ({type(error).__name__}); {INCEPTION_HELP}") from error
        if not isinstance(state, dict) or "fc.weight" not in state or "Mixed_7c.branch_pool.conv.weight" not in state:
            raise GenlabError(f"{weights_path} is not an Inception-v3 state dict; {INCEPTION_HELP}")
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        classes = state["fc.weight"].shape[0]
        self.network = Inception3(num_classes=classes, aux_logits=False, init_weights=False)
        self.network.load_state_dict(state)
        self.network.fc = nn.Identity()
        self.tf_graph = classes == 1008
        if self.tf_graph:
            for name in TF_AVERAGE_POOL_BLOCKS:
                setattr(self.network, name, TFPoolBranch(getattr(self.network, name), "avg"))
            self.network.Mixed_7c = TFPoolBranch(self.network.Mixed_7c, "max")
        self.eval().requires_grad_(False)
        self.protocol = {"network": "Inception-v3 pool3 (2048)", "weights_file": str(weights_path),
                         "weights": "pytorch-fid TF FID (pt_inception-2015-12-05)" if self.tf_graph else
                         "torchvision ImageNet", "quantisation": "uint8", "input_size": 299,
                         "resize": "PIL bicubic on float32 channels (clean-fid)",
                         "normalisation": "2x - 1" if self.tf_graph else "ImageNet mean/std"}

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # batch norm statistics are part of the weights: always evaluation mode

    @staticmethod
    def resize(images: Tensor) -> Tensor:
        """uint8-valued (B, 3, H, W) -> float (B, 3, 299, 299) in [0, 255], per channel with PIL's bicubic."""
        arrays = images.float().cpu().numpy()
        return torch.from_numpy(np.stack([[np.asarray(Image.fromarray(channel).resize((299, 299),
                                           Image.BICUBIC)) for channel in image] for image in arrays]))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = self.resize(torch.round(images.clamp(0, 1) * 255)) / 255
        device = next(self.network.parameters()).device
        if self.tf_graph:
            x = 2 * x - 1
        else:
            mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
            x = (x - mean[:, None, None]) / std[:, None, None]
        return self.network(x.to(device)).flatten(1)


class SampleDistances:
    """FID, KID and precision / recall / density / coverage between real and generated images in [0, 1], on the
    features of one network (see `FeatureNetwork`, `InceptionFeatures`): `update` batches, then `compute`.

    `protocol` (after `compute`) records the feature network, the image counts and the KID and k-NN settings.
    """

    def __init__(self, feature: nn.Module | str, kid_subset_size: int = 1000, kid_subsets: int = 100,
                 nearest_k: int = 5) -> None:
        if feature == "inception":
            raise GenlabError(INCEPTION_HELP)
        if not isinstance(feature, nn.Module) or not isinstance(getattr(feature, "num_features", None), int):
            raise ValueError(f"feature must be an nn.Module with an int `num_features` (wrap it as "
                             f"FeatureNetwork(network, num_features)) or an InceptionFeatures, got {feature!r}")
        self.feature, self.nearest_k = feature, nearest_k
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        self.features: dict[bool, list[Tensor]] = {True: [], False: []}
        self.protocol: dict[str, object] = {}

    def update(self, images: Tensor, real: bool) -> None:
        with torch.no_grad():
            self.features[real].append(self.feature(images.float().cpu()).double().cpu())

    def compute(self) -> dict[str, float]:
        real, fake = (torch.cat(self.features[side]) if self.features[side] else torch.empty(0, 0)
                      for side in (True, False))
        if min(len(real), len(fake)) < 2:
            raise ValueError(f"FID needs >= 2 real and generated images, got {len(real)} and {len(fake)}")
        kid = kernel_distance(real, fake, self.kid_subsets, self.kid_subset_size)
        self.protocol = {"feature_network": getattr(self.feature, "protocol", type(self.feature).__name__),
                         "kid_subsets": kid.pop("kid_subsets"), "kid_subset_size": kid.pop("kid_subset_size"),
                         "nearest_k": self.nearest_k, "real_images": len(real), "generated_images": len(fake)}
        return {"fid": frechet_distance(real, fake), **kid,
                **precision_recall_density_coverage(real, fake, self.nearest_k)}
