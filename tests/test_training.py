"""Short real fits on the real data: the models learn, not just run. Skipped where the data is absent."""

import pytest

from genlab.datamodules import MNIST
from genlab.models import VAE
from genlab.testing import quiet_trainer


@pytest.fixture
def mnist(mnist_root):
    return MNIST(root=mnist_root, batch_size=128)


@pytest.mark.slow
def test_vae_on_real_mnist_lowers_the_elbo_loss(mnist):
    model = VAE(latent_dim=16)
    trainer = quiet_trainer(max_steps=300, limit_val_batches=10, val_check_interval=150)
    mnist.setup("fit")
    x, _ = mnist.val_batch(256)
    before = model.loss(x)["loss"].item()
    trainer.fit(model, datamodule=mnist)
    after = model.loss(x)["loss"].item()
    assert before > 500  # an untrained decoder pays ~log 2 per pixel
    assert after < 175, f"negative ELBO after 300 steps: {after:.1f} nats per image"
