"""Sample-quality metrics on feature matrices against closed forms and torchmetrics; Inception from a weights file."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import InceptionA, InceptionC, InceptionE
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd

from genlab.errors import GenlabError
from genlab.metrics import (FeatureNetwork, InceptionFeatures, SampleDistances, frechet_distance, kernel_distance,
                            precision_recall_density_coverage)
from genlab.metrics.images import TFPoolBranch

DIM = 8


def gaussian(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


# --- Fréchet distance ---
def test_frechet_distance_of_a_translation_is_the_squared_shift():
    real = gaussian(400, 0)
    shift = torch.linspace(-1, 1, DIM, dtype=torch.float64)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(real, real + shift) == pytest.approx(shift.pow(2).sum().item(), rel=1e-8)


def test_frechet_distance_agrees_with_torchmetrics():
    identity = FeatureNetwork(nn.Flatten(), num_features=DIM)
    real, fake = gaussian(300, 0).float(), (1.5 * gaussian(300, 1) + 0.3).float()
    reference = FrechetInceptionDistance(feature=identity)
    reference.update(real[:, :, None, None], real=True)
    reference.update(fake[:, :, None, None], real=False)
    assert frechet_distance(real, fake) == pytest.approx(reference.compute().item(), rel=1e-4)


# --- KID ---
def test_kid_subsets_give_a_spread_and_an_unbiased_mean():
    """1000 images each (the evaluation callback's default): subsets of 1000 would all be the whole set (std 0)."""
    result = kernel_distance(gaussian(1000, 0), gaussian(1000, 1, shift=0.3))
    assert result["kid_std"] > 0 and result["kid_subset_size"] == 500 and result["kid_subsets"] == 100
    assert result["kid"] > 3 * result["kid_std"]  # a real difference is detected
    same = [kernel_distance(gaussian(1000, 2 * s), gaussian(1000, 2 * s + 1), subsets=10)["kid"] for s in range(20)]
    mean = sum(same) / len(same)
    spread = (sum((v - mean) ** 2 for v in same) / (len(same) - 1)) ** 0.5
    assert abs(mean) < 3 * spread / len(same) ** 0.5  # unbiased: same law -> 0 on average, not O(1/m) above it


def test_kid_of_one_full_subset_equals_torchmetrics_poly_mmd():
    real, fake = gaussian(60, 0), gaussian(60, 1, shift=0.5)
    result = kernel_distance(real, fake, subsets=1, subset_size=60, max_fraction=1.0)
    assert result["kid"] == pytest.approx(poly_mmd(real, fake).item(), rel=1e-10) and result["kid_std"] == 0


def test_kid_rejects_too_few_samples():
    with pytest.raises(ValueError, match="KID needs"):
        kernel_distance(gaussian(3, 0), gaussian(3, 1))


# --- precision, recall, density, coverage ---
def test_prdc_of_a_set_with_itself_and_of_far_apart_sets():
    real = gaussian(200, 0)
    same = precision_recall_density_coverage(real, real, nearest_k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(6 / 5)  # each ball holds its centre and its 5 neighbours
    far = precision_recall_density_coverage(real, gaussian(200, 1, shift=100.0), nearest_k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_separates_fidelity_from_diversity():
    """Fakes collapsed onto 3 real points: every fake is realistic (precision 1), little of the data is covered (low
    recall and coverage)."""
    real = gaussian(300, 0)
    collapsed = real[:3].repeat(100, 1)
    result = precision_recall_density_coverage(real, collapsed, nearest_k=5)
    assert result["precision"] == 1.0 and result["coverage"] < 0.1
    assert result["recall"] == pytest.approx(3 / 300)  # fake balls have radius 0: only the 3 copied points


# --- SampleDistances on images ---
def test_sample_distances_report_every_metric_with_its_protocol():
    """The defaults on 1000 images a side: kid_std used to be float rounding noise (2e-7 for a KID of 0.4)."""
    identity = FeatureNetwork(nn.Flatten(), num_features=DIM)
    distances = SampleDistances(identity)
    distances.update(gaussian(1000, 0).float()[:, :, None, None], real=True)
    distances.update(gaussian(1000, 1, shift=0.3).float()[:, :, None, None], real=False)
    result = distances.compute()
    assert set(result) == {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert result["kid_std"] > 0.01 * result["kid"] > 0
    assert distances.protocol == {"feature_network": "FeatureNetwork", "kid_subsets": 100, "kid_subset_size": 500,
                                  "nearest_k": 5, "real_images": 1000, "generated_images": 1000}


# --- Inception from a local file ---
@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    """A torchvision Inception-v3 state dict with random weights, saved like the real file (no download)."""
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    network = inception_v3(weights=None, init_weights=True, aux_logits=True)
    for layer in network.modules():  # batch-norm statistics of random images keep the features at a sane scale
        if isinstance(layer, nn.BatchNorm2d):
            layer.momentum = None
    with torch.no_grad():
        network.train()(torch.rand(4, 3, 299, 299))
    path = tmp_path_factory.mktemp("weights") / "inception_v3_random.pth"
    torch.save(network.state_dict(), path)
    return path


def test_inception_features_from_a_weights_file(random_inception_file):
    network = InceptionFeatures(random_inception_file)
    images = torch.rand(2, 1, 16, 16)  # grey and small: replicated to RGB, resized to 299
    features = network(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert torch.equal(network(images), features)  # eval mode: deterministic
    quantised = torch.round(images * 255) / 255  # uint8 quantisation comes first: the same 8-bit image, same features
    assert torch.allclose(network(quantised), features)
    assert network.protocol["resize"].startswith("PIL bicubic") and network.protocol["input_size"] == 299
    assert network.protocol["quantisation"] == "uint8" and network.protocol["weights"] == "torchvision ImageNet"


def test_sample_distances_with_inception(random_inception_file):
    distances = SampleDistances(InceptionFeatures(random_inception_file), kid_subsets=5, nearest_k=3)
    distances.update(torch.rand(4, 3, 8, 8), real=True)
    distances.update(torch.rand(4, 3, 8, 8), real=False)
    result = distances.compute()
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())
    assert distances.protocol["feature_network"]["weights"] == "torchvision ImageNet"


@pytest.mark.parametrize("block", [InceptionA(16, 8), InceptionC(16, 8), InceptionE(16)])
def test_tf_pooling_replaces_exactly_the_pool_branch(block):
    """The pool branch is the block's last output channels; TensorFlow's average ignores the zero padding."""
    block.eval()
    x = torch.randn(2, 16, 5, 5)
    pool_branch = block.branch_pool(F.avg_pool2d(x, 3, 1, 1))  # torchvision: padding counted
    channels = pool_branch.shape[1]
    assert torch.equal(block(x)[:, -channels:], pool_branch)
    for pool, pooled in (("avg", F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)), ("max", F.max_pool2d(x, 3, 1, 1))):
        out = TFPoolBranch(block, pool)(x)
        assert torch.equal(out[:, :-channels], block(x)[:, :-channels])
        assert torch.allclose(out[:, -channels:], block.branch_pool(pooled))


def test_the_fid_weights_layout_selects_the_tf_graph(random_inception_file, tmp_path):
    """pytorch-fid's file: 1008 classes and no auxiliary head."""
    state = {k: v for k, v in torch.load(random_inception_file).items() if not k.startswith("AuxLogits.")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception.pth")
    network = InceptionFeatures(tmp_path / "pt_inception.pth")
    assert network.tf_graph and isinstance(network.network.Mixed_7c, TFPoolBranch)
    assert network.protocol["normalisation"] == "2x - 1" and "TF FID" in network.protocol["weights"]
    assert network(torch.rand(1, 3, 8, 8)).shape == (1, 2048)


def test_missing_inception_weights_say_how_to_get_them(tmp_path):
    for path in (None, tmp_path / "nope.pth"):
        with pytest.raises(GenlabError, match="--metrics.inception_weights") as error:
            InceptionFeatures(path)
        assert "\n" not in str(error.value) and "pt_inception-2015-12-05" in str(error.value)
    with pytest.raises(GenlabError, match="--metrics.inception_weights"):
        SampleDistances("inception")
    (tmp_path / "junk.pth").write_text("not weights")
    with pytest.raises(GenlabError, match="cannot be read"):
        InceptionFeatures(tmp_path / "junk.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 2048)}, bad)
    with pytest.raises(GenlabError, match="not an Inception-v3 state dict"):
        InceptionFeatures(bad)


def test_genlab_test_reports_inception_fid_and_prdc_from_a_local_weights_file(tmp_path):
    import json

    import torchvision

    from genlab.cli import main

    weights = tmp_path / "inception.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               weights)
    common = ["--model=VAE", "--model.hidden=[16]", "--model.latent_dim=2", "--data=FakeImages",
              "--data.image_shape=[1, 8, 8]", "--data.size=80", "--data.batch_size=8",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
    main(["fit", "--trainer.max_epochs=1", "--figures=false", *common])
    main(["test", "--ckpt_path=last", *common, "--metrics.num_importance_samples=2", "--metrics.num_fid_samples=8",
          f"--metrics.inception_weights={weights}"])
    result = json.loads(next(tmp_path.rglob("test_metrics.json")).read_text())
    assert {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"} <= set(result)
    assert "fd_classifier" not in result and result["protocol"]["fid"]["feature_network"]["weights_file"]
