"""The ELBO-gap study: a VAE with a 1-D latent on 1-D toy data, where log p(x) is exact by quadrature over z.

    python -m genlab.analysis --out figures/     # writes figures/elbo_gap.png

Model (float64 throughout): z ~ N(0, 1); decoder p(x|z) = N(x; sigmoid(w z + b), sigma^2) with a fixed sigma;
encoder q(z|x) = N(a x + c, exp(s)^2). Data: samples around 0.8 with a small spread (0.05), wider than sigma
(0.02), so the decoder must use z (with sigma above the spread the optimum ignores z: posterior collapse, gap 0).
After fitting the ELBO, the figure moves the decoder parameter theta = w and, separately, each encoder parameter
phi in (a, c, s) around its trained value and plots the true log p(x) with the ELBO (Monte Carlo mean and spread of
a minibatch estimate).

Everything the figure shows is checkable: log p(x) = ELBO + KL(q(z|x) || p(z|x)), both sides by quadrature on
the same grid; the ELBO never exceeds log p(x); log p(x) does not depend on the encoder.
"""

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch
from torch import Tensor, nn

DECODER_PARAMETERS = {"dec_weight": r"decoder weight $\theta = w$"}
ENCODER_PARAMETERS = {"enc_scale": r"encoder scale $\phi_a$ (mean $= a x + c$)",
                      "enc_shift": r"encoder shift $\phi_c$", "enc_log_std": r"encoder log-std $\phi_s$"}
SPANS = {"dec_weight": 1.5, "enc_scale": 0.3, "enc_shift": 0.25, "enc_log_std": 1.5}  # how far each is moved
GRID = torch.linspace(-10.0, 10.0, 8001, dtype=torch.float64)  # quadrature nodes over z (prior mass outside ~1e-23)


class ToyVAE(nn.Module):
    """1-D VAE: q(z|x) = N(a x + c, exp(s)^2), p(z) = N(0, 1), p(x|z) = N(sigmoid(w z + b), sigma^2)."""

    def __init__(self, sigma: float = 0.02) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma={sigma} must be positive")
        self.sigma = sigma
        init = {"enc_scale": 1.0, "enc_shift": 0.0, "enc_log_std": -1.0, "dec_weight": 1.0, "dec_bias": 0.0}
        for name, value in init.items():
            setattr(self, name, nn.Parameter(torch.tensor(value, dtype=torch.float64)))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(z|x), each shaped like x."""
        return self.enc_scale * x + self.enc_shift, torch.exp(self.enc_log_std).expand_as(x)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) + log p(z), broadcasting x against z."""
        mean = torch.sigmoid(self.dec_weight * z + self.dec_bias)
        log_px_z = -0.5 * ((x - mean) / self.sigma) ** 2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)
        return log_px_z - 0.5 * z**2 - 0.5 * math.log(2 * math.pi)

    def log_q(self, x: Tensor, z: Tensor) -> Tensor:
        mean, std = self.posterior(x)
        return -0.5 * ((z - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def toy_data(num_points: int = 200, mean: float = 0.8, std: float = 0.05, seed: int = 0) -> Tensor:
    """(num_points,) samples of N(mean, std^2): the 1-D data set."""
    return mean + std * torch.randn(num_points, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def elbo_samples(model: ToyVAE, x: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """(num_samples, N) one-sample ELBO estimates log p(x, z) - log q(z|x), z ~ q(z|x) reparameterised."""
    mean, std = model.posterior(x)
    z = mean + std * torch.randn((num_samples, *x.shape), generator=generator, dtype=torch.float64)
    return model.log_joint(x, z) - model.log_q(x, z)


def _trapezoid_log(log_f: Tensor) -> Tensor:
    """log of the trapezoid-rule integral over GRID of exp(log_f), along the last dimension."""
    step = GRID[1] - GRID[0]
    weights = torch.full_like(GRID, math.log(step))
    weights[[0, -1]] = math.log(step / 2)
    return torch.logsumexp(log_f + weights, dim=-1)


def log_marginal(model: ToyVAE, x: Tensor) -> Tensor:
    """Exact log p(x) = log integral p(x|z) p(z) dz by quadrature, (N,). Depends on the decoder only."""
    return _trapezoid_log(model.log_joint(x[:, None], GRID))


def elbo_exact(model: ToyVAE, x: Tensor) -> Tensor:
    """ELBO = integral q(z|x) [log p(x, z) - log q(z|x)] dz by quadrature, (N,): the Monte Carlo mean's limit."""
    log_q = model.log_q(x[:, None], GRID)
    integrand = torch.exp(log_q) * (model.log_joint(x[:, None], GRID) - log_q)
    return torch.trapezoid(integrand, GRID, dim=-1)


def posterior_kl(model: ToyVAE, x: Tensor) -> Tensor:
    """KL(q(z|x) || p(z|x)) by quadrature, (N,), with p(z|x) = p(x, z) / p(x): the gap log p(x) - ELBO."""
    log_q = model.log_q(x[:, None], GRID)
    log_posterior = model.log_joint(x[:, None], GRID) - log_marginal(model, x)[:, None]
    return torch.trapezoid(torch.exp(log_q) * (log_q - log_posterior), GRID, dim=-1)


def train(model: ToyVAE, x: Tensor, steps: int = 2000, lr: float = 0.02, num_samples: int = 16,
          seed: int = 0) -> ToyVAE:
    """Maximise the Monte Carlo ELBO (mean over the data and `num_samples` reparameterised draws) with Adam."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = -elbo_samples(model, x, num_samples, generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@torch.no_grad()
def sweep(model: ToyVAE, x: Tensor, name: str, offsets: Tensor, num_draws: int = 200, batch_size: int = 16,
          seed: int = 0) -> dict[str, Tensor]:
    """Move parameter `name` to trained value + each offset; per value, data means of the exact log p(x), the exact
    ELBO, the Monte Carlo ELBO and the std over `num_draws` one-sample ELBO estimates of a `batch_size` minibatch
    (the noise a training step sees). The parameter is restored afterwards."""
    parameter = getattr(model, name)
    trained = parameter.detach().clone()
    generator = torch.Generator().manual_seed(seed)
    rows = {"value": [], "log_px": [], "elbo_exact": [], "elbo_mean": [], "elbo_std": []}
    try:
        for offset in offsets:
            parameter.copy_(trained + offset)
            draws = elbo_samples(model, x, num_draws, generator)  # (num_draws, N)
            batches = draws[:, : len(x) // batch_size * batch_size].reshape(num_draws, -1, batch_size).mean(dim=-1)
            rows["value"].append(parameter.item())
            rows["log_px"].append(log_marginal(model, x).mean().item())
            rows["elbo_exact"].append(elbo_exact(model, x).mean().item())
            rows["elbo_mean"].append(draws.mean().item())
            rows["elbo_std"].append(batches.std().item())
    finally:
        parameter.copy_(trained)
    return {key: torch.tensor(values, dtype=torch.float64) for key, values in rows.items()}


def plot_study(model: ToyVAE, x: Tensor, out_dir: str | Path, points: int = 41,
               seed: int = 0) -> Path:
    """The figure: one panel for theta, one per encoder parameter; returns the PNG's path."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {**DECODER_PARAMETERS, **ENCODER_PARAMETERS}
    figure, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for axis, (name, label) in zip(axes.flat, panels.items()):
        offsets = torch.linspace(-SPANS[name], SPANS[name], points, dtype=torch.float64)
        result = sweep(model, x, name, offsets, seed=seed)
        trained = getattr(model, name).item()
        value = result["value"].numpy()
        axis.plot(value, result["log_px"].numpy(), color="black", lw=2, label="true log p(x) (quadrature)")
        axis.plot(value, result["elbo_mean"].numpy(), color="tab:blue", lw=1.5, label="ELBO (Monte Carlo mean)")
        low, high = result["elbo_mean"] - result["elbo_std"], result["elbo_mean"] + result["elbo_std"]
        axis.fill_between(value, low.numpy(), high.numpy(), color="tab:blue", alpha=0.25,
                          label="ELBO ± 1 std (one-sample, 16-point minibatch)")
        axis.axvline(trained, color="grey", ls="--", lw=1, label="trained value")
        at = len(value) // 2  # offset 0: the trained parameters
        gap = result["log_px"][at] - result["elbo_mean"][at]
        axis.annotate(f"gap at the trained value: {gap:.3f} nats", xy=(0.02, 0.95), xycoords="axes fraction",
                      fontsize=9, color="dimgrey", va="top")
        # a window of a few nats around log p(x): the ELBO's far tails dive by tens of nats
        axis.set_ylim(float(result["log_px"].min()) - 2.5, float(result["log_px"].max()) + 0.6)
        axis.set_xlabel(label)
        axis.set_ylabel("nats per data point (mean over the data)")
        axis.set_title(("decoder: log p(x) and ELBO both move" if name in DECODER_PARAMETERS else
                        "encoder: log p(x) is flat, only the ELBO moves"), fontsize=10)
        axis.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    figure.suptitle(f"ELBO gap on 1-D toy data ({len(x)} points around {x.mean():.2f}, std {x.std():.2f}); "
                    f"latent z ~ N(0, 1), p(x|z) = N(sigmoid(wz + b), {model.sigma}²), q(z|x) = N(ax + c, e^(2s))",
                    fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 0.96))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "elbo_gap.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m genlab.analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="figures", help="folder for elbo_gap.png")
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps fitting the ELBO")
    parser.add_argument("--points", type=int, default=41, help="parameter values per panel")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x = toy_data(seed=args.seed)
    model = train(ToyVAE(), x, steps=args.steps, seed=args.seed)
    path = plot_study(model, x, args.out, points=args.points, seed=args.seed)
    print(path)
    return path


if __name__ == "__main__":
    main()
