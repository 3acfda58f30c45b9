"""What the latent-path figures compute: interpolation ends and slerp, traversal ranking by KL or variance and rows
labelled with the true factors."""

import pytest
import torch
from torch import Tensor, nn
from test_figures import row_labels, tiny_vae
from tiny_data import SHAPE, TinyImages

from genlab.callbacks import LatentTraversal, interpolate, interpolate_latents, rank_dimensions
from genlab.figures.traversal import factor_correlations
from genlab.models import ConvAE


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_interpolation_ends_are_the_reconstructions(mode):
    model = tiny_vae().eval()
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        path = interpolate(model, x[:2], x[2:], steps=6, mode=mode)
        assert path.shape == (2, 6, *SHAPE)
        torch.testing.assert_close(path[:, 0], model.reconstruct(x[:2]))
        torch.testing.assert_close(path[:, -1], model.reconstruct(x[2:]))


def test_slerp_keeps_the_norm_of_equal_norm_codes_and_handles_parallel_ones():
    z0, z1 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    path = interpolate_latents(z0, z1, steps=5, mode="slerp")
    torch.testing.assert_close(path.norm(dim=-1), torch.full((1, 5), 3.0))
    assert interpolate_latents(z0, 2 * z0, 3, "slerp").isfinite().all()  # parallel: falls back to the line


class VarianceToy(nn.Module):
    """A LatentModel whose code variance falls from the first dimension to the last."""

    latent_dim = 3

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.flatten(1)[:, :3] * torch.tensor([3.0, 2.0, 1.0])

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return z.sigmoid().view(-1, 1, 1, 3)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))


class KLToy(VarianceToy):
    """The same codes, but a KL per dimension that orders them differently."""

    has_kl_per_dim = True

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.tensor([0.1, 5.0, 2.0])


def test_traversal_rows_follow_kl_then_fall_back_to_variance():
    x = torch.randn(64, 1, 1, 3)
    order, scores, name = rank_dimensions(KLToy(), x)
    assert name == "KL" and order.tolist() == [1, 2, 0] and scores[1] == 5.0
    order, _, name = rank_dimensions(VarianceToy(), x)
    assert name == "var" and order.tolist() == [0, 1, 2]


def test_traversal_of_a_model_without_kl_ranks_by_variance():
    model = ConvAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16))  # has_kl_per_dim is False: no KL term
    _, _, name = rank_dimensions(model, torch.rand(8, *SHAPE))
    assert name == "var"


def test_factor_correlation_names_the_matching_factor():
    factors = torch.rand(100, 2)
    codes = torch.stack([-factors[:, 1] + 0.01 * torch.randn(100), torch.randn(100)], dim=1)
    corr = factor_correlations(codes, torch.cat([factors, torch.ones(100, 1)], dim=1))  # constant factor: 0
    assert corr.shape == (2, 3) and corr[0].argmax() == 1 and corr[0, 1] > 0.99 and corr[:, 2].abs().max() == 0


def test_traversal_labels_rows_with_true_factors():
    class WithFactors(TinyImages):
        factor_names = ["shape", "x"]

        def val_factors(self, n: int) -> Tensor:
            return torch.stack([self.y[:n].float(), self.x[:n].mean((1, 2, 3))], dim=1)

    fig = LatentTraversal(num_dims=2, steps=3, num_images=16).draw(tiny_vae(), WithFactors())
    labels = row_labels(fig)
    assert len(labels) == 2 and all("|r|" in label for label in labels)
