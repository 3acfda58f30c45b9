"""VectorQuantizer's formulas by hand: nearest codes, terms and weights, perplexity and usage, the EMA update, dead
codes restarted, k-means initialisation, bf16."""

import torch
from torch.distributions import Categorical

from genlab.models.quantizer import VectorQuantizer


def test_codes_are_the_nearest_codebook_entries():
    vq = VectorQuantizer(num_embeddings=10, embedding_dim=3).eval()
    vq.codebook.data = torch.randn(10, 3)
    h = torch.randn(2, 3, 4, 5)
    z_q, _ = vq(h)
    flat = h.movedim(1, -1).reshape(-1, 3)
    expected = torch.cdist(flat, vq.codebook.detach()).argmin(1).view(2, 4, 5)
    assert torch.equal(vq.indices(h), expected)
    assert torch.allclose(z_q, vq.codebook.detach()[expected].movedim(-1, 1))
    assert torch.allclose(vq.encode(h), z_q)


def test_terms_and_weights():
    h = torch.randn(4, 3, 2, 2)
    vq = VectorQuantizer(num_embeddings=8, embedding_dim=3, commitment_cost=0.25)
    z_q, terms = vq(h)
    by_hand = (h - z_q.detach()).pow(2).sum((1, 2, 3)).mean()  # per-image sum over grid and code dims, batch mean
    assert torch.allclose(terms["codebook"], by_hand) and torch.allclose(terms["commitment"], by_hand)
    assert vq.weights == {"commitment": 0.25, "codebook": 1.0}
    assert set(terms) == {"codebook", "commitment", "perplexity", "usage", "z_min", "z_max", "z_std"}
    assert terms["z_min"] == h.min() and terms["z_max"] == h.max() and torch.allclose(terms["z_std"], h.std())
    ema = VectorQuantizer(num_embeddings=8, embedding_dim=3, ema=True)
    assert "codebook" not in ema(h)[1] and ema.weights == {"commitment": 0.25}
    assert not ema.codebook.requires_grad


def test_perplexity_is_exp_entropy_and_usage_is_the_used_fraction():
    vq = VectorQuantizer(num_embeddings=16, embedding_dim=2).eval()
    vq.codebook.data = torch.randn(16, 2)
    h = torch.randn(8, 2, 3, 3)
    _, terms = vq(h)
    counts = torch.bincount(vq.indices(h).flatten(), minlength=16).float()
    assert torch.allclose(terms["perplexity"], Categorical(probs=counts / counts.sum()).entropy().exp())
    assert terms["usage"] == (counts > 0).float().mean()


def test_ema_update_equals_the_formula():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(num_embeddings=3, embedding_dim=2, ema=True, decay=decay, epsilon=eps)
    vq.codebook.data = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]])
    vq.embed_sum.copy_(vq.codebook.data), vq.cluster_size.fill_(1.0)
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0], [-1.0, -1.0]])  # codes 0, 0, 1, 0; code 2 unused
    vq(vectors.T.reshape(1, 2, 2, 2))  # (1, D, 2, 2): the four vectors in raster order
    n = torch.tensor([3.0, 1.0, 0.0])
    sums = torch.stack([vectors[[0, 1, 3]].sum(0), vectors[2], torch.zeros(2)])
    cluster = decay * 1.0 + (1 - decay) * n
    embed = decay * torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]]) + (1 - decay) * sums
    smoothed = (cluster + eps) / (cluster.sum() + 3 * eps) * cluster.sum()
    assert torch.allclose(vq.cluster_size, cluster) and torch.allclose(vq.embed_sum, embed)
    assert torch.allclose(vq.codebook.detach(), embed / smoothed[:, None])


def test_eval_mode_updates_nothing():
    vq = VectorQuantizer(num_embeddings=4, embedding_dim=2, ema=True, dead_code_steps=1).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 2, 3, 3))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_a_dead_code_is_restarted_from_encoder_outputs():
    vq = VectorQuantizer(num_embeddings=4, embedding_dim=2, dead_code_steps=2)
    vq.codebook.data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])  # code 3: never nearest
    h = torch.rand(2, 2, 3, 3)
    vq(h)
    assert torch.equal(vq.codebook.data[3], torch.tensor([100.0, 100.0]))  # unused once: not dead yet
    vq(h)
    outputs = h.movedim(1, -1).reshape(-1, 2)
    assert (outputs == vq.codebook.data[3]).all(1).any()  # now a copy of one of this batch's encoder outputs
    assert vq.unused_steps[3] == 0


def test_kmeans_init_finds_the_clusters():
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, 0.0], [0.0, -5.0]])
    flat = centres.repeat(16, 1) + 0.01 * torch.randn(64, 2)
    h = flat.view(4, 4, 4, 2).movedim(-1, 1)
    vq = VectorQuantizer(num_embeddings=4, embedding_dim=2, kmeans_init=True)
    assert not vq.initialized
    _, terms = vq(h)
    assert vq.initialized and terms["usage"] == 1.0
    assert torch.cdist(centres, vq.codebook.detach()).min(1).values.max() < 0.1


def test_same_codes_under_bf16_autocast():
    vq = VectorQuantizer(num_embeddings=64, embedding_dim=8)
    vq.codebook.data = torch.randn(64, 8)
    h = torch.randn(4, 8, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes_bf16 = vq.indices(h)
        z_q, terms = vq(torch.nn.Identity()(h))
    assert torch.equal(codes_bf16, vq.indices(h)) and z_q.dtype == torch.float32
    assert all(torch.isfinite(t) for t in terms.values())
