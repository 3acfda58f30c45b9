"""The SAGAN self-attention block: the identity at initialisation, attention as released once the gate opens."""

import pytest
import torch
import torch.nn.functional as F

from genlab.models.attention import SelfAttention2d, attention_at, check_attention_resolutions


@pytest.mark.parametrize("spectral_norm", [False, True])
@pytest.mark.parametrize("size", [(2, 2), (8, 8), (4, 6), (16, 16)])
def test_exactly_the_identity_at_initialisation(size, spectral_norm):
    x = torch.randn(3, 16, *size)
    block = SelfAttention2d(16, spectral_norm=spectral_norm)
    out = block(x)
    assert out.shape == x.shape and torch.equal(out, x)


def test_open_gate_changes_the_output_and_gradients_reach_gamma():
    block = SelfAttention2d(16)
    x = torch.randn(2, 16, 8, 8)
    weights = torch.randn(2, 16, 8, 8)
    (block(x) * weights).sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs() > 0  # d out / d gamma = o, nonzero at gamma = 0
    with torch.no_grad():
        block.gamma.fill_(0.5)
    assert not torch.allclose(block(x), x)


def test_matches_softmax_attention_over_pooled_keys_and_values():
    """gamma = 1: o = W_out (softmax(Q K^T) V) with K, V max-pooled 2x2 and no 1/sqrt(d) scaling, as released."""
    block = SelfAttention2d(32)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    x = torch.randn(2, 32, 6, 4)
    query = block.query(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
    key = F.max_pool2d(block.key(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/8)
    value = F.max_pool2d(block.value(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/2)
    attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)  # (B, HW, C/2)
    expected = x + block.out(attended.transpose(1, 2).reshape(2, 16, 6, 4))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_channel_widths_as_released():
    block = SelfAttention2d(64)
    assert (block.query.out_channels, block.key.out_channels, block.value.out_channels, block.out.out_channels) \
        == (8, 8, 32, 64)


def test_bad_shapes_are_refused_with_one_line():
    with pytest.raises(ValueError, match="at least 8 channels"):
        SelfAttention2d(4)
    block = SelfAttention2d(8)
    with pytest.raises(ValueError, match="H and W even"):
        block(torch.randn(1, 8, 5, 4))
    with pytest.raises(ValueError, match=r"SelfAttention2d\(8\)"):
        block(torch.randn(1, 16, 4, 4))


def test_attention_is_placed_only_at_the_named_resolutions():
    assert [type(m) for m in attention_at(16, 32, [16])] == [SelfAttention2d]
    assert attention_at(8, 32, [16]) == [] and attention_at(16, 32, []) == []
    check_attention_resolutions([14], available=[28, 14, 7])
    message = r"\[16\] is not a feature-map size of this network; choose from \[7, 14, 28\]"
    with pytest.raises(ValueError, match=message):
        check_attention_resolutions([16, 14], available=[28, 14, 7])


def test_conv_vae_places_attention_where_asked_and_starts_as_without_it():
    from genlab.models import ConvVAE

    plain = ConvVAE((1, 16, 16), latent_dim=4, widths=(8, 16))
    attended = ConvVAE((1, 16, 16), latent_dim=4, widths=(8, 16), attention_resolutions=[8])
    blocks = [m for m in attended.modules() if isinstance(m, SelfAttention2d)]
    assert len(blocks) == 2  # one in the encoder after the 8x8 map, one in the decoder before it is upsampled
    conv_weights = {k: v for k, v in plain.state_dict().items()}
    mapped = dict(zip([k for k in attended.state_dict() if "gamma" not in k and not any(
        p in k for p in ("query", "key", "value", "out"))], conv_weights.values()))
    attended.load_state_dict({**attended.state_dict(), **mapped})
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(attended.reconstruct(x), plain.reconstruct(x), atol=1e-6)  # gamma = 0: the identity
    with pytest.raises(ValueError, match=r"attention_resolutions=\[5\]"):
        ConvVAE((1, 16, 16), latent_dim=4, widths=(8, 16), attention_resolutions=[5])


def test_dcgan_places_attention_in_generator_and_discriminator():
    from genlab.models import DCGAN

    model = DCGAN((1, 32, 32), latent_dim=8, width=8, attention_resolutions=[8])
    for network in (model.generator, model.discriminator):
        assert sum(isinstance(m, SelfAttention2d) for m in network.modules()) == 1
    samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 1, 32, 32)
    assert torch.isfinite(model.discriminator(torch.rand(2, 1, 32, 32))).all()
    with pytest.raises(ValueError, match=r"attention_resolutions=\[3\]"):
        DCGAN((1, 32, 32), latent_dim=8, width=8, attention_resolutions=[3])
