"""`genlab predict` writes samples, reconstructions and latent codes into the trained run, for every family."""

import pytest
import torch

from genlab.cli import main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
DATA = ["--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=40", "--data.batch_size=8"]


@pytest.mark.parametrize("model, has_codes", [("VAE", True), ("GAN", False), ("CVAE", True)])
def test_predict_writes_files_into_the_run(tmp_path, model, has_codes):
    root = [f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", f"--model={model}", "--model.latent_dim=3", *DATA, "--trainer.max_epochs=1", "--figures=false",
          *root])
    flags = ["predict", f"--model={model}", "--ckpt_path=last", "--predict.num_samples=12", "--predict.seed=3", *root]
    if model == "CVAE":
        flags.append("--predict.labels=[7]")
    main(flags)
    out = tmp_path / "lightning_logs" / "version_0" / "predictions"
    samples = torch.load(out / "samples.pt")
    assert samples.shape == (12, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert (out / "samples.png").stat().st_size > 1000
    if has_codes:
        codes = torch.load(out / "codes.pt")
        test_images = 4  # FakeImages(size=40): the test split's share
        assert codes["codes"].shape[1] == 3 and len(codes["codes"]) == len(codes["labels"]) >= test_images
        assert torch.load(out / "reconstructions.pt").shape[1:] == (1, 8, 8)
    main(flags)  # the same seed gives the same samples, into the same folder
    assert torch.equal(torch.load(out / "samples.pt"), samples)
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
