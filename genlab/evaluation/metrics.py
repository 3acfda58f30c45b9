"""`TestMetrics`: at the end of `trainer.test`, every evaluation metric that applies to the model, as one table.

Applicability is read from the protocol (genlab.models.protocols), never from the model's class:
- likelihood (`log_likelihood(x)` exact, or `LikelihoodModel.log_importance_weights` with `has_likelihood`):
  `exact_nll`, or `iwae_nll` by importance weighting (Burda et al., 2016) with k = `num_importance_samples` plus
  `neg_elbo`, `elbo_gap` and the loss terms `elbo_recon`, `elbo_kl` (nats per image); for 8-bit data the same
  in bits per dimension (`*_bpd`: exact for a discrete 8-bit likelihood, through uniform dequantisation for a
  density; see genlab.metrics.likelihood). Only where the likelihood is normalised for the test images as seen
  (binary, 8-bit or continuous): a Bernoulli likelihood on non-binary images gives a cross-entropy, reported as
  `bce` (with `posterior_kl`) and no likelihood, with the reason in the protocol notes. `neg_elbo` here (k draws
  on the likelihood images) replaces the test loop's one-draw `test/neg_elbo` in the logs;
- a latent code (`LatentModel`, latent_dim > 0) with a likelihood: `active_units` and, for a `KLPerDimension`
  model with `has_kl_per_dim`, the KL of every dimension (in the JSON file);
- `reconstruct` (`LatentModel`): `recon_mse`, `psnr`, `ssim`;
- an unconditional `Sampler`, given a feature network: `fid`, `kid`, `kid_std` between
  `num_fid_samples` generated and as many test images on Inception features; on the features of a genlab
  `Classifier` the same distances are not comparable with published FID/KID and are named `fd_classifier`,
  `kd_classifier`, `kd_classifier_std`;
- an `Encoder` with latent_dim >= 2 and a datamodule with known generative `factors(split)` (Shapes): `mig` on
  the test split.
"""

import json
import math
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from ..figures.base import condition_kind
from ..names import resolve_class
from ..metrics import (FeatureNetwork, InceptionFeatures, ReconstructionMetrics, SampleDistances, active_units,
                       evaluate_likelihood, likelihood_method, mutual_information_gap)
from ..metrics.likelihood import likelihood_support
from ..models.losses import data_support, support_covers
from ..models.protocols import (Encoder, FeatureExtractor, KLPerDimension, LatentModel, LikelihoodSupport, LossModel,
                                Sampler)

Batch = tuple[Tensor, Tensor]

UNITS = {"iwae_nll": "nats/image", "exact_nll": "nats/image", "neg_elbo": "nats/image", "elbo_gap": "nats/image",
         "elbo_recon": "nats/image", "elbo_kl": "nats/image", "iwae_bpd": "bits/dim", "exact_bpd": "bits/dim",
         "neg_elbo_bpd": "bits/dim", "active_units": "dims", "bce": "nats/image (cross-entropy, not a likelihood)",
         "posterior_kl": "nats/image", "recon_mse": "per pixel", "psnr": "dB", "ssim": "", "fid": "", "kid": "",
         "kid_std": "", "fd_classifier": "", "kd_classifier": "", "kd_classifier_std": "", "mig": "",
         "precision": "", "recall": "", "density": "", "coverage": ""}
CLASSIFIER_NAMES = {"fid": "fd_classifier", "kid": "kd_classifier", "kid_std": "kd_classifier_std"}
WIDTH = {"binary": 0, "8bit": 1, "continuous": 2}  # binary images are 8-bit images are continuous ones
REFUSED = {"binary": "a Bernoulli likelihood on non-binary images is a cross-entropy, not a likelihood (reported as "
                     "bce); binarise the data (e.g. --data.binarize true) or use an 8-bit likelihood",
           "8bit": "a discrete 8-bit likelihood on images off the 8-bit grid x = n / 255 is not normalised"}


class TestMetrics(Callback):
    """Computes, prints, logs (`test/<metric>`) and saves (`<log_dir>/test_metrics.json`) the evaluation metrics.

    The defaults keep `genlab test` at about a minute on a CPU for an MNIST MLP VAE: k = 100 importance samples on
    the first 2000 test images, FID/KID on 1000 samples. Paper comparisons use `num_importance_samples=5000`
    and `max_likelihood_images=None` (the whole test set): hours on a CPU, minutes on a GPU.

    Args:
        num_importance_samples: k of the importance-weighted bound (5000 in Burda et al., 2016).
        chunk_size: importance samples drawn at once per batch (bounds memory: chunk_size * batch decodes).
        max_likelihood_images: test images used for the likelihood metrics; None for all.
        inception_weights: a local Inception-v3 weights file (pytorch-fid's pt_inception-2015-12-05 or torchvision's
            inception_v3 state dict) for real FID/KID with the clean-fid input protocol.
        classifier_checkpoint: a `Classifier` checkpoint trained on the same dataset, whose penultimate layer gives
            the features of `fd_classifier`/`kd_classifier` (not comparable with published FID/KID); without it
            and without `inception_weights`, the sample distances are skipped with a note saying how to get them.
        classifier_class: import path of the class `classifier_checkpoint` holds, a `FeatureExtractor`
            (`features(x)`, `feature_dim`).
        num_fid_samples: generated images (and as many test images) for FID/KID; 0 skips them.
        kid_subset_size: KID subset size (at most half the smaller image set, so the 100 subsets differ).
        data_type: what the test images are: "auto" (read from the images: "binary", "8bit" or "continuous"),
            "binary" or "8bit" (checked against the images; "8bit" on binary images asks for bits/dim). Binary
            data: nats per image; 8-bit data: also bits/dim.
        mig_bins: histogram bins per latent dimension for MIG.
        seed: fixes importance samples, dequantisation noise and generated images.
        save_dir: folder for test_metrics.json; None: the logger's log_dir (`genlab test` passes the run folder of
            --ckpt_path, so the run report of the trained run shows its test metrics).
    """

    __test__ = False  # "Test..." is a Lightning stage here, not a pytest class

    def __init__(self, num_importance_samples: int = 100, chunk_size: int = 50,
                 max_likelihood_images: int | None = 2000, classifier_checkpoint: str | None = None,
                 inception_weights: str | None = None, num_fid_samples: int = 1000, kid_subset_size: int = 1000,
                 data_type: str = "auto", mig_bins: int = 20, seed: int = 0, save_dir: str | None = None,
                 classifier_class: str = "genlab.models.Classifier") -> None:
        if data_type not in ("auto", "binary", "8bit"):
            raise ValueError(f"data_type={data_type!r} is unknown; choose one of auto, binary, 8bit")
        if num_importance_samples < 1 or chunk_size < 1 or num_fid_samples < 0 or mig_bins < 2:
            raise ValueError(f"need num_importance_samples={num_importance_samples} >= 1, chunk_size={chunk_size} "
                             f">= 1, num_fid_samples={num_fid_samples} >= 0 and mig_bins={mig_bins} >= 2")
        self.num_importance_samples, self.chunk_size = num_importance_samples, chunk_size
        self.max_likelihood_images, self.classifier_checkpoint = max_likelihood_images, classifier_checkpoint
        self.classifier_class = classifier_class
        self.inception_weights = inception_weights
        self.num_fid_samples, self.kid_subset_size = num_fid_samples, kid_subset_size
        self.data_type, self.mig_bins, self.seed, self.save_dir = data_type, mig_bins, seed, save_dir
        self.metrics: dict[str, float] = {}
        self.protocol: dict[str, object] = {}
        self.per_dim: dict[str, list[float]] = {}
        self._feature: torch.nn.Module | str | None = None
        self._term_names: dict[str, str] = {}  # loss term -> reported name, set by `_likelihood`

    # --- setup: the feature network is loaded outside inference mode ---
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "test" or self._feature is not None:
            return
        if self.classifier_checkpoint is not None:
            classifier = resolve_class(self.classifier_class).load_from_checkpoint(
                self.classifier_checkpoint, map_location="cpu", weights_only=True).eval()
            if not isinstance(classifier, FeatureExtractor):
                raise TypeError(f"classifier_class={self.classifier_class!r} is not a FeatureExtractor: it needs "
                                f"features(x) and feature_dim")
            for parameter in classifier.parameters():
                parameter.requires_grad_(False)
            self._feature = FeatureNetwork(classifier, classifier.feature_dim)
            self._feature_name = f"genlab Classifier penultimate layer ({classifier.feature_dim}) from " \
                                 f"{self.classifier_checkpoint}"
        elif self.inception_weights is not None:
            self._feature = InceptionFeatures(self.inception_weights)
            self._feature_name = self._feature.protocol
        else:
            self._feature, self._feature_name = "inception", "Inception-v3 pool3 (2048)"

    # --- the evaluation: batches are collected as the test loop sees them (after any on-device conversion) ---
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._batches: list[Batch] = []

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the first test loader is the test set
            x, y = batch[0], batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
            x = x.detach().cpu()
            self._batches.append((x, torch.zeros(len(x), dtype=torch.long) if y is None else y.detach().cpu()))

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = self._batches
        self.metrics, self.per_dim = {}, {}
        self.protocol = {"split": "test", "test_images": sum(len(x) for x, _ in batches), "seed": self.seed,
                         "notes": []}
        if batches:
            self._likelihood(pl_module, batches)
            self._single_pass(pl_module, batches)
            self._mig(trainer, pl_module, batches)
            self._sample_quality(pl_module, batches)
        self._batches = []
        for name, value in self.metrics.items():
            pl_module.log(f"test/{name}", float(value), batch_size=1)
        if trainer.is_global_zero:
            print(self.table())
            self.write(Path(self.save_dir or trainer.log_dir or trainer.default_root_dir) / "test_metrics.json")

    def _data_type(self, batches: list[Batch]) -> str:
        """The data type of the test images as seen; a declared `data_type` they contradict gets a note."""
        seen = max((data_support(x) for x, _ in batches), key=WIDTH.get)
        if self.data_type == "auto" or (self.data_type, seen) == ("8bit", "binary"):
            return seen if self.data_type == "auto" else "8bit"
        if self.data_type != seen:
            self.protocol["notes"].append(f"data_type={self.data_type!r} does not match the test images, which are "
                                          f"{seen}: evaluated as {seen}")
        return seen

    def _likelihood(self, model: LightningModule, batches: list[Batch]) -> None:
        self._term_names = {"recon": "elbo_recon", "kl": "elbo_kl"}
        method = likelihood_method(model)
        if method is None:
            return
        data_type, support = self._data_type(batches), likelihood_support(model)
        description = model.likelihood_description if isinstance(model, LikelihoodSupport) else support
        self.protocol.update(data_type=data_type, likelihood=description)
        if not support_covers(support, data_type):
            self.protocol["notes"].append(f"iwae_nll/neg_elbo refused: {REFUSED[support]}")
            self._term_names = {"recon": "bce", "kl": "posterior_kl"} if support == "binary" else {}
            return
        # bits/dim wherever the data are 8-bit (binary included): exact for a pmf, a dequantised bound for a density
        discrete, dequantized = support == "8bit", support == "continuous" and data_type != "continuous"
        result = evaluate_likelihood(model, batches, self.num_importance_samples, self.chunk_size,
                                     dequantized=dequantized, seed=self.seed, max_images=self.max_likelihood_images,
                                     discrete=discrete)
        self.protocol.update(likelihood_method=method, likelihood_images=int(result.pop("images")))
        if method == "iwae":
            self.protocol["importance_samples"] = self.num_importance_samples
        if dequantized:
            self.protocol["dequantization"] = "uniform: (255 x + u) / 256, u ~ U[0, 1); bits/dim adds D log 256"
        if discrete:
            self.protocol["bits_per_dim"] = "discrete likelihood: -log2 P(n) / D, exact, no dequantisation"
        self.metrics.update(result)

    def _single_pass(self, model: LightningModule, batches: list[Batch]) -> None:
        """One pass over the test set: reconstructions, posterior means, KL per dimension, ELBO terms."""
        latent = isinstance(model, LatentModel) and model.latent_dim > 0 and likelihood_method(model) is not None
        reconstructs = isinstance(model, LatentModel)
        names = self._term_names if likelihood_method(model) == "iwae" else {}
        terms = bool(names) and isinstance(model, LossModel)
        if not (latent or reconstructs or terms):
            return
        recon = ReconstructionMetrics(tuple(batches[0][0].shape[1:])) if reconstructs else None
        means, kl_sum, term_sums, count = [], None, {"recon": 0.0, "kl": 0.0}, 0
        with torch.random.fork_rng():  # loss() draws posterior samples: seeded, and the caller's stream untouched
            torch.manual_seed(self.seed)
            for x, y in batches:
                x, y = x.to(model.device), y.to(model.device)
                if recon is not None:
                    recon.update(model.reconstruct(x, y), x)
                if latent:
                    means.append(model.encode(x, y).flatten(1).double().cpu())
                    kl = self._kl_per_dim(model, x, y)
                    if kl is not None:
                        kl_sum = kl * len(x) if kl_sum is None else kl_sum + kl * len(x)
                if terms:
                    loss = model.loss(x, y)
                    for name in term_sums:
                        term_sums[name] += float(loss.get(name, math.nan)) * len(x)
                count += len(x)
        if terms:
            self.metrics.update({names[name]: value / count for name, value in term_sums.items()})
        if recon is not None:
            self.metrics.update(recon.compute())
        if means:
            self.metrics["active_units"], variances = active_units(torch.cat(means))
            self.per_dim["posterior_mean_variance"] = variances.tolist()
        if kl_sum is not None:
            self.per_dim["kl_per_dim"] = (kl_sum / count).tolist()

    @staticmethod
    def _kl_per_dim(model: LightningModule, x: Tensor, y: Tensor) -> Tensor | None:
        if not (isinstance(model, KLPerDimension) and model.has_kl_per_dim):
            return None
        return model.kl_per_dim(x, y).double().cpu()

    def _mig(self, trainer: Trainer, model: LightningModule, batches: list[Batch]) -> None:
        factors = getattr(trainer.datamodule, "factors", None)
        if not callable(factors) or not isinstance(model, Encoder) or model.latent_dim < 2:
            return
        values = factors("test")
        if len(values) != self.protocol["test_images"]:
            self.protocol["notes"].append(f"MIG skipped: {len(values)} factors for {self.protocol['test_images']} "
                                          "test images (all test batches are needed, in order)")
            return
        codes = torch.cat([model.encode(x.to(model.device), y.to(model.device)).flatten(1).double().cpu()
                           for x, y in batches])
        self.metrics["mig"], gaps = mutual_information_gap(codes, values, self.mig_bins)
        self.per_dim["mig_per_factor"] = gaps.tolist()
        self.protocol["mig"] = {"bins": self.mig_bins, "factors": list(getattr(trainer.datamodule, "factor_names", []))}

    def _sample_quality(self, model: LightningModule, batches: list[Batch]) -> None:
        if self.num_fid_samples == 0 or not isinstance(model, Sampler):
            return
        if condition_kind(model) is not None:
            self.protocol["notes"].append("FID/KID skipped: a conditional model samples under a condition")
            return
        try:
            distances = SampleDistances(self._feature, self.kid_subset_size)
        except Exception as error:  # Inception: no torch-fidelity, or weights not downloadable offline
            self.protocol["notes"].append(f"FID/KID skipped: {' '.join(str(error).split())} (or pass "
                                          "--metrics.classifier_checkpoint, a genlab Classifier trained on this "
                                          "dataset, for fd_classifier/kd_classifier)")
            return
        generator = torch.Generator().manual_seed(self.seed)
        real = 0
        for x, _ in batches:
            x = x[: self.num_fid_samples - real]
            distances.update(x, real=True)
            real += len(x)
            if real >= self.num_fid_samples:
                break
        generated = 0
        while generated < real:
            n = min(len(batches[0][0]), real - generated)
            distances.update(model.sample(n, generator=generator), real=False)
            generated += n
        inception = isinstance(self._feature, InceptionFeatures)
        names = {} if inception else CLASSIFIER_NAMES  # our Classifier's features: not FID/KID
        self.metrics.update({names.get(name, name): value for name, value in distances.compute().items()})
        self.protocol[names.get("fid", "fid")] = {**distances.protocol, "feature_network": self._feature_name,
                                                  "split": "test"}

    # --- output ---
    def table(self) -> str:
        """The metrics as a fixed-width text table, with units and the protocol lines under it."""
        rows = [f"{'metric':<14}{'value':>14}  unit", "-" * 40]
        rows += [f"{name:<14}{value:>14.4f}  {UNITS.get(name, '')}" for name, value in self.metrics.items()]
        protocol = {k: v for k, v in self.protocol.items() if k != "notes"}
        rows += ["", "protocol: " + json.dumps(protocol), *[f"note: {n}" for n in self.protocol["notes"]]]
        return "\n".join(rows)

    def write(self, path: Path) -> None:
        """{name: value, ..., "protocol": {...}, "per_dim": {...}} as JSON: the run report reads this file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.metrics, "protocol": self.protocol, "per_dim": self.per_dim}, indent=2))
