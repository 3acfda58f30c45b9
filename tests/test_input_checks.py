"""`check_images`: one clear line for images a model must not train on (NaN/Inf, outside [0, 1], wrong shape)."""

import re

import pytest
import torch

from genlab.models.checks import check_images

SHAPE = (1, 4, 4)


def test_good_images_pass():
    check_images(torch.rand(3, *SHAPE), SHAPE)
    check_images(torch.tensor([0.0, 1.0]).repeat(8).view(1, *SHAPE), SHAPE)  # the bounds themselves
    check_images(torch.rand(3, *SHAPE).bfloat16(), SHAPE)
    check_images(torch.empty(0, *SHAPE), SHAPE)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_name_the_batch(bad):
    x = torch.rand(3, *SHAPE)
    x[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"^training batch 7: images contain NaN or Inf .*finite") as error:
        check_images(x, SHAPE, where="training batch 7")
    assert "\n" not in str(error.value)


def test_images_in_0_255_say_to_divide_by_255():
    x = torch.rand(3, *SHAPE) * 255
    low, high = torch.aminmax(x)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got values from .* to .*; .*divide .* by 255") as err:
        check_images(x, SHAPE)
    assert f"{high.item():.4g}" in str(err.value) and f"{low.item():.4g}" in str(err.value)


def test_normalized_images_below_zero_are_refused():
    with pytest.raises(ValueError, match=r"got values from -1 to 1"):
        check_images(torch.tensor([-1.0, 1.0]).repeat(8).view(1, *SHAPE), SHAPE)


def test_integer_images_and_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match=r"must be float in \[0, 1\], got dtype torch.uint8.*/ 255"):
        check_images(torch.zeros(2, *SHAPE, dtype=torch.uint8), SHAPE)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 1, 4, 4\), got \(2, 3, 4, 4\)"):
        check_images(torch.rand(2, 3, 4, 4), SHAPE)


def test_one_reduction_and_no_per_element_python(monkeypatch):
    """Cheap: a single aminmax over the batch, whatever its size."""
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda x, *a, **k: calls.append(x.numel()) or real(x, *a, **k))
    check_images(torch.rand(64, 3, 32, 32), (3, 32, 32))
    assert calls == [64 * 3 * 32 * 32]


@pytest.mark.parametrize("bad, words", [(255.0, "must be in [0, 1]"), (float("nan"), "NaN or Inf")])
def test_models_refuse_images_outside_the_unit_interval(bad, words):
    from genlab.models import VAE

    x = torch.rand(4, 1, 28, 28)
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=re.escape(words)):
        VAE(hidden=(8,), latent_dim=2).loss(x)


def test_labels_beyond_num_classes_are_named():
    from genlab.models import CVAE

    model = CVAE(image_shape=(1, 8, 8), hidden=(8,), latent_dim=2, num_classes=3)
    with pytest.raises(ValueError, match=re.escape("labels must be in 0..2 (num_classes=3), got labels from 0 to 7")):
        model.loss(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 7]))
