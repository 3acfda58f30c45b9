"""GAN objectives as pure functions of discriminator outputs (logits for "bce", critic values for "wgan-gp").

Every loss is computed in float32, so bf16 autocast only touches the networks, never the softplus or the penalty.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBJECTIVES = ("bce", "wgan-gp")
JS_EPS = 1e-7  # D' in [0, 1 - JS_EPS] in the JS estimate: finite where D calls a fake certainly real


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


def js_estimate(real_logits: Tensor, fake_logits: Tensor, real_label: float = 1.0) -> Tensor:
    """Held-out estimate of 2 JSD(data || model), in nats: log 4 + E_data log D'(x) + E_model log(1 - D'(x)).

    For any D' this is a lower bound on 2 JSD, which lies in [0, log 4] (Goodfellow et al., 2014, Thm. 1); it is
    tight at the optimal D' = p / (p + q). A discriminator trained with one-sided label smoothing (real target
    `real_label` = a) has optimum a p / (p + q), so D' = D / a undoes the smoothing (without it the estimate could not
    exceed log 4 + log a: 1.281 at a = 0.9). D' is capped at 1 - 1e-7, so the estimate is finite, at most log 4,
    and negative only for a discriminator worse than chance.
    """
    if not 0.0 < real_label <= 1.0:
        raise ValueError(f"real_label={real_label} is invalid: the real target must be in (0, 1]")
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    log_real = (F.logsigmoid(real_logits) - math.log(real_label)).clamp(max=math.log1p(-JS_EPS))  # log D'
    # 1 - D/a = sigmoid(-l) (1 - r), r = (1 - a) / a * e^l: log1p keeps it accurate where D << a
    ratio = (1.0 - real_label) / real_label * torch.exp(fake_logits.clamp(max=50.0))
    log_fake = (F.logsigmoid(-fake_logits) + torch.log1p(-ratio.clamp(max=1.0 - JS_EPS))).clamp(min=math.log(JS_EPS))
    return math.log(4.0) + log_real.mean() + log_fake.mean()


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
