"""`genlab plot` reads the run: the model from the checkpoint, the data from the run's config, options as flags."""

import pytest
from lightning import Trainer

from genlab.cli import main
from genlab.errors import GenlabError, UsageError
from genlab.models import VQVAE, CodePrior

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    main(["fit", "--model=VAE", "--model.hidden=[16]", "--model.latent_dim=3", "--data=FakeImages",
          "--data.image_shape=[1, 8, 8]", "--data.size=48", "--data.batch_size=8", "--trainer.max_epochs=1",
          "--figures=false", f"--trainer.default_root_dir={root}", *QUIET])
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("figure, options", [
    ("traversal", ["--dims=[0, 2]", "--start=3", "--span=2", "--split=test"]),
    ("traversal", ["--dims=even", "--num_dims=2"]),
    ("samples", ["--around=1", "--radius=0.3", "--temperatures=[1, 2]"]),
    ("sample_pca", ["--num_samples=[5, 20]", "--num_images=30"]),
])
def test_plot_needs_only_the_checkpoint(checkpoint, figure, options):
    path = main(["plot", f"--ckpt_path={checkpoint}", f"--figure={figure}", *options])
    assert path == checkpoint.parent.parent / "plots" / f"{figure}.png" and path.stat().st_size > 1000


def test_a_figure_that_does_not_apply_names_those_that_do(checkpoint):
    with pytest.raises(GenlabError, match="does not apply to VAE.*figures that do: samples, reconstructions"):
        main(["plot", f"--ckpt_path={checkpoint}", "--figure=codebook"])


def test_an_unknown_figure_option_lists_the_options(checkpoint):
    with pytest.raises(UsageError, match="--spam.*takes: --num_dims, --span"):
        main(["plot", f"--ckpt_path={checkpoint}", "--figure=traversal", "--spam=2"])


def test_code_prior_records_its_vqvae_checkpoint_resolved(tmp_path, monkeypatch):
    vqvae = VQVAE(image_shape=(1, 8, 8), num_hiddens=8, num_residual_hiddens=4, embedding_dim=4, num_embeddings=8)
    trainer = Trainer(logger=False, enable_checkpointing=False, max_epochs=0, accelerator="cpu")
    trainer.strategy.connect(vqvae)
    trainer.save_checkpoint(tmp_path / "vq.ckpt")
    monkeypatch.chdir(tmp_path)
    prior = CodePrior("vq.ckpt", hidden=8, num_layers=2)
    assert prior.hparams.vqvae_checkpoint == str(tmp_path / "vq.ckpt")
    with pytest.raises(ValueError, match="vqvae_checkpoint='nope.ckpt' is not a file"):
        CodePrior("nope.ckpt")
