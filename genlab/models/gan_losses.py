"""GAN objectives as pure functions of discriminator outputs (logits for "bce", critic values for "wgan-gp").

Every loss is computed in float32, so bf16 autocast only touches the networks, never the softplus or the penalty.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBJECTIVES = ("bce", "wgan-gp")


def bce_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_label: float = 1.0) -> Tensor:
    """BCE of D on real (target `real_label`) and fake (target 0) images (Goodfellow et al., 2014).

    `real_label` = 0.9 is one-sided label smoothing (Salimans et al., 2016): only real targets are softened, so
    D is not rewarded for putting mass on fakes.
    """
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    return real + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def bce_generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -log D(G(z)): strong gradients while D still wins (Goodfellow et al., 2014)."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def js_estimate(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """log 4 - D's unsmoothed BCE: equals 2 JSD(data || model) at the optimal D (Goodfellow et al., 2014, Thm. 1)."""
    return math.log(4.0) - bce_discriminator_loss(real_logits, fake_logits)


def wasserstein_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E[C(fake)] - E[C(real)]: the negative of the critic's Wasserstein-1 estimate (Arjovsky et al., 2017)."""
    return fake_scores.float().mean() - real_scores.float().mean()


def wasserstein_generator_loss(fake_scores: Tensor) -> Tensor:
    return -fake_scores.float().mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """E[(||grad_x C(x)||_2 - 1)^2] at random points between real and fake images (Gulrajani et al., 2017, Alg. 1).

    The graph is kept (create_graph) so that the penalty itself trains the critic.
    """
    alpha = torch.rand(len(real), *[1] * (real.ndim - 1), device=real.device)
    between = (alpha * real.float() + (1 - alpha) * fake.detach().float()).requires_grad_(True)
    scores = critic(between).float()
    (grad,) = torch.autograd.grad(scores.sum(), between, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
