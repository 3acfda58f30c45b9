"""Probabilistic PCA in closed form (Tipping & Bishop, 1999), behind the same protocol as the autoencoders."""

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .blocks import check_positive
from .module import Batch, GenerativeModule


class PPCA(GenerativeModule):
    """x = W z + mu + eps, z ~ N(0, I_L), eps ~ N(0, sigma^2 I_D), fitted by maximum likelihood in closed form.

    With the eigen-decomposition S = U diag(lambda) U^T of the data covariance (eigenvalues descending), the
    solution is sigma^2 = mean of the D - L discarded eigenvalues and W = U_L (Lambda_L - sigma^2 I)^(1/2)
    (Tipping & Bishop, 1999, eqs. 7-8, rotation R = I). `fit(dataloader)` streams once over the data, accumulating
    the sum and the D x D sum of outer products in float64: nothing larger than D x D is held.

    Protocol: `encode` = posterior mean M^-1 W^T (x - mu) with M = W^T W + sigma^2 I; `decode(z)` = W z + mu
    clamped to [0, 1] (the noise-free mean, as autoencoders show their decoders' means); `sample` decodes prior
    draws. Under a Trainer one epoch is the whole fit: `training_step` only accumulates (and counts a step), the
    solution is computed before validation and training stops after that epoch. `loss(x)`: the negative
    log-likelihood, nats per image, as "loss" and "nll"; validation logs both and `mse` of the reconstructions.

    Args:
        image_shape: (C, H, W) of the data; the CLI links it from the datamodule.
        latent_dim: dimension L of z, below the data dimension D = C H W.
        min_noise_var: floor on sigma^2; data with fewer than L + 1 directions of variance would give sigma^2 = 0.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 min_noise_var: float = 1e-6) -> None:
        super().__init__()
        check_positive(image_shape=image_shape, latent_dim=latent_dim)
        dims = math.prod(image_shape)
        if latent_dim >= dims or min_noise_var <= 0:
            raise ValueError(f"latent_dim={latent_dim} must be below the data dimension {dims} and "
                             f"min_noise_var={min_noise_var} positive")
        self.save_hyperparameters()
        self.image_shape, self.latent_dim, self.min_noise_var = tuple(image_shape), latent_dim, min_noise_var
        self.automatic_optimization = False  # nothing to optimise: the fit is a closed-form solve
        # Before fitting: mu = 0, W = 0, sigma^2 = 1, i.e. N(0, I), so an unfitted model still has a likelihood.
        # Parameters fitted without gradients: non-trainable, but counted and checkpointed like any other.
        self.mean = nn.Parameter(torch.zeros(dims), requires_grad=False)
        self.weight = nn.Parameter(torch.zeros(dims, latent_dim), requires_grad=False)
        self.noise_var = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.reset_statistics()

    # --- fitting ---
    def reset_statistics(self) -> None:
        self._count, self._sum, self._outer = 0, None, None

    @torch.no_grad()
    def accumulate(self, x: Tensor) -> None:
        """Add a batch (B, C, H, W) to the running sums (float64: sum of squares of 60k images in [0, 1])."""
        flat = x.flatten(1).double()
        if self._sum is None:
            self._sum = flat.new_zeros(flat.shape[1])
            self._outer = flat.new_zeros(flat.shape[1], flat.shape[1])
        self._count += len(flat)
        self._sum += flat.sum(dim=0)
        self._outer += flat.T @ flat

    @torch.no_grad()
    def solve(self) -> None:
        """Closed-form maximum-likelihood parameters from the accumulated statistics, which are then cleared."""
        count, total, outer = torch.tensor(float(self._count), dtype=torch.float64), self._sum, self._outer
        if self._trainer is not None and self.trainer.world_size > 1:  # every rank saw a shard of the data
            count, total, outer = (self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum")
                                   for t in (count, total, outer))
        mean = total / count
        covariance = outer / count - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        noise_var = eigenvalues[self.latent_dim:].mean().clamp_min(self.min_noise_var)
        scale = (eigenvalues[: self.latent_dim] - noise_var).clamp_min(0.0).sqrt()
        self.mean.copy_(mean)
        self.weight.copy_(eigenvectors[:, : self.latent_dim] * scale)
        self.noise_var.copy_(noise_var)
        self.reset_statistics()

    def fit(self, batches: Iterable[Batch | Tensor]) -> "PPCA":
        """Fit on every batch of `batches` (a DataLoader of (x, y) or of x) in one streaming pass."""
        self.reset_statistics()
        for batch in batches:
            self.accumulate((batch[0] if isinstance(batch, (tuple, list)) else batch).to(self.device))
        self.solve()
        return self

    # --- the protocol (genlab.models.protocols) ---
    def _posterior_precision(self) -> Tensor:
        """M = W^T W + sigma^2 I, (L, L)."""
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype, device=self.weight.device)
        return self.weight.T @ self.weight + self.noise_var * eye

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        centred = x.flatten(1).to(self.mean.dtype) - self.mean
        return torch.linalg.solve(self._posterior_precision(), (centred @ self.weight).T).T  # (B, L)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return (z @ self.weight.T + self.mean).clamp(0.0, 1.0).reshape(-1, *self.image_shape)

    def reconstruct(self, x: Tensor, y: Tensor | None = None, stochastic: bool = False,
                    generator: torch.Generator | None = None) -> Tensor:
        """decode(encode(x)); with `stochastic=True` decodes a draw from the exact posterior
        q(z|x) = N(M^-1 W^T (x - mu), sigma^2 M^-1) (Tipping & Bishop, 1999), noise drawn on the CPU."""
        z = self.encode(x, y)
        if stochastic:
            covariance = self.noise_var * torch.linalg.inv(self._posterior_precision())
            noise = torch.randn(z.shape, generator=generator).to(z)
            z = z + noise @ torch.linalg.cholesky(covariance).T
        return self.decode(z, y)

    @torch.no_grad()
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        z = temperature * torch.randn(num_samples, self.latent_dim, generator=generator)  # CPU noise, as elsewhere
        return self.decode(z.to(self.device), y)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log N(x; mu, W W^T + sigma^2 I) per image, (B,), in float64 without forming the D x D covariance:
        C^-1 = (I - W M^-1 W^T) / sigma^2 and log|C| = (D - L) log sigma^2 + log|M| (Tipping & Bishop, app. A)."""
        weight, noise_var = self.weight.double(), self.noise_var.double()
        centred = x.flatten(1).double() - self.mean.double()
        dims = centred.shape[1]
        precision = weight.T @ weight + noise_var * torch.eye(self.latent_dim, dtype=torch.float64, device=x.device)
        projected = centred @ weight  # (B, L)
        explained = (projected * torch.linalg.solve(precision, projected.T).T).sum(dim=1)
        squared = (centred.pow(2).sum(dim=1) - explained) / noise_var
        log_det = (dims - self.latent_dim) * torch.log(noise_var) + torch.logdet(precision)
        return -0.5 * (dims * math.log(2 * math.pi) + log_det + squared)

    # --- Lightning: one epoch of accumulation, then the closed-form solve ---
    def on_train_epoch_start(self) -> None:
        self.reset_statistics()

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self.accumulate(batch[0])
        # A no-op step (no gradients, lr 0) that counts the batch in global_step: ModelCheckpoint saves nothing
        # while global_step is 0, and max_steps keeps its usual meaning.
        self.optimizers().step()

    def _solve_if_pending(self) -> None:
        if self._count > 0:
            self.solve()

    def on_validation_epoch_start(self) -> None:
        self._solve_if_pending()  # Lightning validates before on_train_epoch_end

    def on_train_epoch_end(self) -> None:
        self._solve_if_pending()
        self.trainer.should_stop = True  # the solution is exact: more epochs would recompute the same one

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.reconstruct(batch[0])

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """-log p(x) per image (nats, float32), as "loss" (what checkpoints monitor across models) and "nll"."""
        nll = -self.log_likelihood(x).mean().float()
        return {"loss": nll, "nll": nll}

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        x = batch[0]
        terms = self.loss(x)
        self.log_terms(stage, terms, len(x), {f"{stage}/mse": (self.reconstruct(x) - x).pow(2).mean()})
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)  # never moves anything: see training_step
