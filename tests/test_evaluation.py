"""Every reported number is what its name says (issue 14): no likelihood from a Bernoulli on grey data, the true
-ELBO beside the optimised objective, the quarter CVAE scored on the unseen quarters only, and Fréchet/kernel
distances on a genlab Classifier's features not called FID/KID."""

import json
import math

import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from genlab.evaluation import TestMetrics
from genlab.models import VAE, Classifier
from genlab.models.presets import CVAE, BaselineNN

SHAPE = (1, 8, 8)


def quiet_trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, **kwargs)


def loader(images: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(images, torch.zeros(len(images), dtype=torch.long)), batch_size=8)


def run_test_metrics(tmp_path, model, images, **kwargs) -> dict:
    callback = TestMetrics(num_importance_samples=4, chunk_size=2, num_fid_samples=0, **kwargs)
    quiet_trainer(tmp_path, callbacks=[callback]).test(model, loader(images), verbose=False)
    return json.loads((tmp_path / "test_metrics.json").read_text())


# --- defect 1: a Bernoulli likelihood on non-binary data is a cross-entropy ---
def test_bernoulli_on_grey_data_is_reported_as_bce_not_as_a_likelihood(tmp_path):
    model = VAE(image_shape=SHAPE, latent_dim=2, hidden=(8,))
    grey = torch.randint(0, 256, (16, *SHAPE)).float() / 255
    saved = run_test_metrics(tmp_path, model, grey)
    assert not {"iwae_nll", "neg_elbo", "elbo_gap", "elbo_recon", "iwae_bpd"} & set(saved)
    assert saved["bce"] > 0 and saved["posterior_kl"] >= 0
    assert any("not a likelihood" in note and "iwae_nll" in note for note in saved["protocol"]["notes"])
    assert saved["protocol"]["data_type"] == "8bit"


def test_bernoulli_on_binary_data_keeps_its_likelihood_in_nats(tmp_path):
    model = VAE(image_shape=SHAPE, latent_dim=2, hidden=(8,))
    saved = run_test_metrics(tmp_path, model, torch.rand(16, *SHAPE).round())
    assert {"iwae_nll", "neg_elbo", "elbo_recon", "elbo_kl"} <= set(saved) and "bce" not in saved
    assert saved["protocol"]["data_type"] == "binary" and not any(k.endswith("_bpd") for k in saved)


def test_declared_data_type_is_checked_against_the_data(tmp_path):
    model = VAE(image_shape=SHAPE, latent_dim=2, hidden=(8,))
    saved = run_test_metrics(tmp_path, model, torch.rand(16, *SHAPE), data_type="binary")
    assert "iwae_nll" not in saved and saved["protocol"]["data_type"] == "continuous"
    assert any("data_type='binary'" in note for note in saved["protocol"]["notes"])


def test_validation_logs_no_neg_elbo_for_a_bernoulli_on_grey_data(tmp_path):
    model = VAE(image_shape=SHAPE, latent_dim=2, hidden=(8,))
    logged = quiet_trainer(tmp_path).validate(model, loader(torch.rand(16, *SHAPE)), verbose=False)[0]
    assert "val/recon" in logged and "val/neg_elbo" not in logged


# --- defect 2: free bits, beta and warm-up change the objective, not the reported -ELBO ---
@pytest.mark.parametrize("kwargs", [dict(free_bits=2.0), dict(beta=4.0, kl_warmup_steps=100)])
def test_validation_and_test_report_the_true_negative_elbo(tmp_path, kwargs):
    model = VAE(image_shape=SHAPE, latent_dim=3, hidden=(8,), **kwargs)
    data = loader(torch.rand(16, *SHAPE).round())
    for stage, run in (("val", quiet_trainer(tmp_path).validate), ("test", quiet_trainer(tmp_path).test)):
        logged = run(model, data, verbose=False)[0]
        neg_elbo, recon, kl, loss = (logged[f"{stage}/{name}"] for name in ("neg_elbo", "recon", "kl", "loss"))
        assert neg_elbo == pytest.approx(recon + kl, rel=1e-5)
        if "free_bits" in kwargs:  # the objective floors each of the 3 dimensions at 2 nats: 6 >> the true KL
            assert loss == pytest.approx(recon + logged[f"{stage}/kl_free_bits"], rel=1e-5) and kl < 1.0
            assert loss - neg_elbo > 5.0
        else:  # the objective weighs the KL by beta = 4 (warm-up over: evaluation uses the end value)
            assert loss == pytest.approx(recon + 4 * kl, rel=1e-5) and loss - neg_elbo == pytest.approx(3 * kl, 1e-3)


# --- defect 3: the quarter CVAE scores only the three quarters it was not given ---
@pytest.mark.parametrize("make", [lambda: CVAE(image_shape=(1, 6, 10), latent_dim=2, hidden=(8,),
                                               condition="quarter"),
                                  lambda: BaselineNN(image_shape=(1, 6, 10), hidden=(8,))])
def test_quarter_condition_is_not_scored(make):
    model = make()
    last = model.decoder[0][-1]
    with torch.no_grad():  # logits 0 everywhere: every scored binary pixel costs exactly log 2
        last.weight.zero_()
        last.bias.zero_()
    x = torch.rand(4, 1, 6, 10).round()
    given = 3 * 5  # rows 3..5, columns 0..4
    expected = (60 - given) * math.log(2)
    assert model.loss(x, x)["recon"].item() == pytest.approx(expected, rel=1e-6)
    # the given quarter changes nothing in the reconstruction term when the decoder ignores its input
    changed = x.clone()
    changed[:, :, 3:, :5] = 1 - changed[:, :, 3:, :5]
    assert model.loss(changed, changed)["recon"].item() == pytest.approx(expected, rel=1e-6)


def test_quarter_cvae_importance_weights_score_the_unseen_quarters():
    """With q(z|x) = p(z) (encoder outputs zero) and a decoder ignoring z, every weight is log p(unseen | given)."""
    model = CVAE(image_shape=(1, 6, 10), latent_dim=2, hidden=(8,), condition="quarter")
    with torch.no_grad():
        for layer in (model.decoder[0][-1], model.encoder[1][-1]):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.rand(4, 1, 6, 10).round()
    log_w = model.log_importance_weights(x, x, num_samples=5)
    assert torch.allclose(log_w, torch.full((5, 4), -45 * math.log(2)), atol=1e-5)
    completions = model.sample(3, y=x[:1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(completions[:, :, 3:, :5], x[:1, :, 3:, :5].expand(3, -1, -1, -1))  # given, not generated


# --- item 6: distances on genlab Classifier features are not FID/KID ---
def test_classifier_feature_distances_are_not_called_fid(tmp_path):
    classifier = Classifier(image_shape=SHAPE, num_classes=2, widths=(4,), feature_dim=4)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(classifier, loader(torch.rand(16, *SHAPE)))
    trainer.save_checkpoint(tmp_path / "classifier.ckpt")
    callback = TestMetrics(num_importance_samples=2, num_fid_samples=16, kid_subset_size=8,
                           classifier_checkpoint=str(tmp_path / "classifier.ckpt"))
    model = VAE(image_shape=SHAPE, latent_dim=2, hidden=(8,))
    logged = quiet_trainer(tmp_path, callbacks=[callback]).test(model, loader(torch.rand(16, *SHAPE).round()),
                                                                verbose=False)[0]
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    for name in ("fd_classifier", "kd_classifier", "kd_classifier_std"):
        assert name in saved and f"test/{name}" in logged and name in callback.table()
    assert not {"fid", "kid", "kid_std"} & set(saved) and "test/fid" not in logged
    assert "Classifier" in saved["protocol"]["fd_classifier"]["feature_network"]
