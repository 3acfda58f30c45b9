"""`Compile`: opt-in `torch.compile` of a model's networks, and channels-last memory for conv models on GPUs.

Model-agnostic: it compiles the model's named child networks in place (`nn.Module.compile`), so parameter names,
checkpoints and the model's own methods (`loss`, `sample`, ...) are unchanged; parts with data-dependent control
flow or collective calls (bottlenecks such as the vector quantizer) stay eager.
"""

from collections.abc import Sequence

import torch
from lightning import Callback, LightningModule, Trainer
from torch import nn

NETWORKS = ("encoder", "decoder", "generator", "discriminator", "prior", "body", "head")


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def has_conv(module: nn.Module) -> bool:
    return any(isinstance(layer, CONVOLUTIONS) for layer in module.modules())


def compile_networks(model: nn.Module, networks: Sequence[str] = NETWORKS, mode: str | None = None,
                     channels_last: bool = False, backend: str = "inductor") -> list[str]:
    """Compile `model.<name>` in place for every name in `networks` that the model has; return those names.

    `channels_last` stores 4-D weights as NHWC, which the convolutions then propagate to their outputs (faster with
    cuDNN and bf16/fp16 on recent GPUs; on CPU it is usually no gain).
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    compiled = []
    for name in networks:
        network = getattr(model, name, None)
        if isinstance(network, nn.Module) and any(True for _ in network.parameters()):
            network.compile(mode=mode, backend=backend)
            compiled.append(name)
    return compiled


class Compile(Callback):
    """Compiles the model's networks with `torch.compile` when fitting starts (before DDP wraps the model).

    Args:
        mode: torch.compile's mode (None, "reduce-overhead", "max-autotune", ...).
        networks: attribute names of the networks to compile; those a model lacks are skipped.
        channels_last: NHWC weights for conv models; None means on CUDA only, where it helps.
        backend: torch.compile's backend ("inductor" generates kernels; "aot_eager" only traces, for debugging).

    The first steps are slow while the graphs compile (tens of seconds); worth it for long runs on a GPU.
    """

    def __init__(self, mode: str | None = None, networks: Sequence[str] = NETWORKS,
                 channels_last: bool | None = None, backend: str = "inductor") -> None:
        self.mode, self.networks, self.channels_last, self.backend = mode, tuple(networks), channels_last, backend
        self.compiled: list[str] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.compiled:
            return
        on_cuda = trainer.strategy.root_device.type == "cuda"
        channels_last = (on_cuda if self.channels_last is None else self.channels_last) and has_conv(pl_module)
        self.compiled = compile_networks(pl_module, self.networks, self.mode, channels_last, self.backend)
