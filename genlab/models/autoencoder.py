"""`Autoencoder`: the one training loop for every encoder -> bottleneck -> decoder model."""

from collections.abc import Sequence

import torch
from lightning import LightningModule
from torch import Tensor, nn

from .losses import LIKELIHOODS, reconstruction_nll

Batch = tuple[Tensor, Tensor]


class Autoencoder(LightningModule):
    """Encoder -> bottleneck -> decoder, trained on -log p(x|z) plus the bottleneck's own weighted terms.

    `loss(x)` returns the named, unweighted terms in nats per image (summed over data or latent dimensions,
    averaged over the batch) and their weighted sum under "loss"; for a VAE that sum is the negative ELBO.
    Every term is logged as `train/<name>`, `val/<name>` and `test/<name>`, with the per-pixel `mse` beside them.

    Args:
        image_shape: (C, H, W) of the data; checked against every batch.
        likelihood: "bernoulli" (binary cross-entropy from logits) or "gaussian" (fixed `sigma`; squared error).
        sigma: standard deviation of the Gaussian likelihood.
    """

    def __init__(self, encoder: nn.Module, bottleneck: nn.Module, decoder: nn.Module,
                 image_shape: Sequence[int], likelihood: str = "bernoulli", sigma: float = 1.0,
                 lr: float = 1e-3) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")
        if sigma <= 0 or lr <= 0:
            raise ValueError(f"sigma={sigma} and lr={lr} must both be positive")
        # Modules are not hyperparameters: presets record their primitive arguments instead.
        self.save_hyperparameters(ignore=["encoder", "bottleneck", "decoder"])
        self.encoder, self.bottleneck, self.decoder = encoder, bottleneck, decoder
        # Base classes read attributes, never self.hparams (under LightningCLI hparams is the leaf's config).
        self.image_shape, self.likelihood, self.sigma, self.lr = tuple(image_shape), likelihood, sigma, lr
        self.latent_dim: int = bottleneck.latent_dim

    # --- the protocol (genlab.models.protocols) ---
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.bottleneck.encode(self.encoder(x))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.sigmoid(self.decoder(z))  # decoders emit logits; images are always in [0, 1]

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """Decode draws from the prior, its standard deviation scaled by `temperature` (20x variance: sqrt(20))."""
        z = self.bottleneck.sample_prior(num_samples, generator, temperature)  # CPU noise: same grid on any device
        return self.decode(z.to(self.device), y)

    # --- the objective ---
    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Named, unweighted terms (nats per image) plus their weighted sum under "loss"."""
        self.check_shape(x)
        z, terms = self.bottleneck(self.encoder(x))
        recon = reconstruction_nll(self.decoder(z), x, self.likelihood, self.sigma)
        # Terms without a weight (e.g. codebook perplexity) are diagnostics: logged, never optimised.
        total = recon + sum(weight * terms[name] for name, weight in self.bottleneck.weights.items())
        return {"loss": total, "recon": recon, **terms}

    def check_shape(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{type(self).__name__} was built for images of shape {self.image_shape} "
                             f"but got a batch of shape {tuple(x.shape)}; set image_shape to match the data")

    # --- Lightning ---
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        return self.reconstruct(x, y)

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        x, y = batch
        terms = self.loss(x, y)
        logged = {f"{stage}/{name}": value.detach() for name, value in terms.items()}
        if stage != "train":  # per-pixel MSE of the deterministic reconstruction, the figure courses quote
            with torch.no_grad():
                logged[f"{stage}/mse"] = (self.reconstruct(x, y) - x).pow(2).mean()
        self.log(f"{stage}/loss", logged.pop(f"{stage}/loss"), prog_bar=True, batch_size=len(x), sync_dist=stage != "train")
        self.log_dict(logged, batch_size=len(x), sync_dist=stage != "train")
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
