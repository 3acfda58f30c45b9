"""`VectorQuantizer`: the VQ-VAE bottleneck (van den Oord et al., 2017, "Neural Discrete Representation Learning").

It is a `Bottleneck` (see `bottlenecks.py`) on spatial latents: `forward(h) -> (z_q, terms)` with
h and z_q of shape (B, D, H', W') and D = `embedding_dim`. Loss terms use genlab's scale: squared errors summed over
the latent grid and the code dimensions of each image, then averaged over the batch. (The paper and Sonnet average
over every element instead; that only rescales the terms against the reconstruction term.)
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .bottlenecks import Bottleneck

def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over DDP ranks (a no-op on one process): EMA statistics and code counts must agree everywhere."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast(tensor: Tensor) -> Tensor:
    """Rank 0's values everywhere: codes drawn at random (k-means, restarts) must be identical on every rank."""
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


class VectorQuantizer(Bottleneck):
    """Replaces each D-dimensional encoder vector by its nearest of `num_embeddings` codes.

    Terms (nats-per-image scale, see the module docstring), z_e the encoder output and e its nearest code:
      `codebook`   ||sg(z_e) - e||^2, weight 1 (absent with `ema`: the codes then follow an EMA of their vectors)
      `commitment` ||z_e - sg(e)||^2, weight `commitment_cost` (beta in the paper; 0 is the no-commitment ablation)
      diagnostics, unweighted: `perplexity` (exp of the code histogram's entropy), `usage` (fraction of codes used
      in the batch) and `z_min`, `z_max`, `z_std` of the encoder outputs.

    Args:
        ema: update codes by exponential moving averages with `decay` (paper, appendix A.1) instead of the loss.
        dead_code_steps: re-seed codes unused for this many training steps from the batch's encoder outputs
            (0 switches it off), the usual cure for codebook collapse (random restarts as in Jukebox, Dhariwal et
            al., 2020; here drawn in proportion to quantisation error).
        kmeans_init: set the codebook by k-means on the first training batch (with `kmeans_iters` Lloyd steps).
        epsilon: Laplace smoothing of the EMA cluster sizes, so a code with no vectors never divides by zero.

    Distances and the codebook are float32 even under bf16/fp16 autocast: in bf16 two nearby codes can tie, and
    the choice of code would then depend on the precision. Training-time statistics are summed over DDP ranks.
    """

    def __init__(self, num_embeddings: int = 512, embedding_dim: int = 64, commitment_cost: float = 0.25,
                 ema: bool = False, decay: float = 0.99, dead_code_steps: int = 0, kmeans_init: bool = False,
                 kmeans_iters: int = 10, epsilon: float = 1e-5) -> None:
        super().__init__(embedding_dim)  # deterministic: forward's z is encode(h), the nearest code
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(f"num_embeddings={num_embeddings} and embedding_dim={embedding_dim} must be positive")
        if commitment_cost < 0 or not 0 <= decay < 1 or dead_code_steps < 0:
            raise ValueError(f"commitment_cost={commitment_cost} must be >= 0, decay={decay} in [0, 1) and "
                             f"dead_code_steps={dead_code_steps} >= 0")
        self.num_embeddings = num_embeddings
        self.ema, self.decay, self.epsilon = ema, decay, epsilon
        self.dead_code_steps, self.kmeans_iters = dead_code_steps, kmeans_iters
        self.weights = {"commitment": commitment_cost}
        if not ema:
            self.weights["codebook"] = 1.0
        # Uniform in +-1/K as in the paper's code; k-means or restarts replace it when the encoder's scale differs.
        codebook = torch.empty(num_embeddings, embedding_dim).uniform_(-1 / num_embeddings, 1 / num_embeddings)
        # With EMA the codebook is state, not a trained parameter: no gradient, and DDP does not reduce it.
        self.codebook = nn.Parameter(codebook, requires_grad=not ema)
        self.register_buffer("cluster_size", torch.ones(num_embeddings))  # EMA of N_i, vectors per code
        self.register_buffer("embed_sum", codebook.clone())  # EMA of m_i, the sum of those vectors
        self.register_buffer("unused_steps", torch.zeros(num_embeddings, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))  # in checkpoints: no re-init on resume

    # --- the bottleneck contract ---
    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_e = h.float()  # (B, D, H', W')
        flat = z_e.detach().movedim(1, -1).reshape(-1, self.latent_dim)  # (B * H' * W', D)
        if self.training and not self.initialized:
            self._kmeans_init(flat)
        indices = self.nearest(flat)
        e = self.lookup(indices.view(z_e.shape[0], *z_e.shape[2:]))  # (B, D, H', W')
        counts = torch.bincount(indices, minlength=self.num_embeddings).float()
        if self.training:
            counts = _all_reduce_sum(counts)
            if self.ema:
                self._ema_update(flat, indices, counts)
            if self.dead_code_steps:
                self._restart_dead_codes(flat, indices, counts)
        terms = {
            "codebook": (z_e.detach() - e).pow(2).flatten(1).sum(1).mean(),
            "commitment": (z_e - e.detach()).pow(2).flatten(1).sum(1).mean(),
            **self.diagnostics(counts, z_e.detach()),
        }
        if self.ema:
            del terms["codebook"]
        z_q = z_e + (e - z_e).detach()  # straight-through: forward uses e, the decoder's gradient flows to z_e
        return z_q, terms

    def encode(self, h: Tensor) -> Tensor:
        """The quantised grid z_q (B, D, H', W'); no statistics are updated (safe in callbacks on rank 0 only)."""
        return self.lookup(self.indices(h))

    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        raise NotImplementedError("A VectorQuantizer has no prior over its codes: train a `CodePrior` on the "
                                  "indices of a trained VQVAE and sample from it.")

    # --- codes ---
    def indices(self, h: Tensor) -> Tensor:
        """Nearest-code indices (B, H', W') of encoder outputs h (B, D, H', W')."""
        flat = h.detach().float().movedim(1, -1).reshape(-1, self.latent_dim)
        return self.nearest(flat).view(h.shape[0], *h.shape[2:])

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes (B, D, H', W') of an index grid (B, H', W')."""
        return F.embedding(indices, self.codebook.float()).movedim(-1, 1)

    def nearest(self, flat: Tensor) -> Tensor:
        """argmin_k ||z - e_k||^2 for rows z of flat (N, D), in float32 whatever the autocast state."""
        with torch.autocast(device_type=flat.device.type, enabled=False):
            flat, codebook = flat.float(), self.codebook.detach().float()
            # ||z||^2 is the same for every k, so it is left out of the argmin.
            distances = codebook.pow(2).sum(1) - 2 * flat @ codebook.T  # (N, K)
            return distances.argmin(dim=1)

    def diagnostics(self, counts: Tensor, z_e: Tensor) -> dict[str, Tensor]:
        probs = counts / counts.sum()
        entropy = -torch.special.xlogy(probs, probs).sum()  # xlogy: 0 log 0 = 0 for unused codes
        return {"perplexity": entropy.exp(), "usage": (counts > 0).float().mean(),
                "z_min": z_e.min(), "z_max": z_e.max(), "z_std": z_e.std()}

    # --- codebook updates (training only, no gradients) ---
    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """N_i <- g N_i + (1-g) n_i;  m_i <- g m_i + (1-g) sum of z assigned to i;  e_i = m_i / N_i (smoothed)."""
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
        sums = _all_reduce_sum(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        # Laplace smoothing (Sonnet's VectorQuantizerEMA): keeps N_i > 0 while preserving the total count.
        smoothed = (self.cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        self.codebook.data.copy_(self.embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """Codes unused for `dead_code_steps` steps jump to encoder outputs of this batch, drawn with probability
        proportional to their squared quantisation error (as in k-means++ seeding): uniform draws would mostly land
        on the many near-identical background vectors of a dataset like MNIST, which one code already serves."""
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= self.dead_code_steps).nonzero().squeeze(1)
        if len(dead) == 0:
            return
        errors = (flat - self.codebook.detach()[indices]).pow(2).sum(1)
        weights = errors if errors.sum() > 0 else torch.ones_like(errors)
        picks = torch.multinomial(weights, len(dead), replacement=int((weights > 0).sum()) < len(dead))
        new_codes = _broadcast(flat[picks].contiguous())
        self.codebook.data[dead] = new_codes
        self.embed_sum[dead] = new_codes  # EMA state restarts as a cluster of one vector at the new code
        self.cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0

    @torch.no_grad()
    def _kmeans_init(self, flat: Tensor) -> None:
        """k-means on the first batch: k-means++ seeding (Arthur & Vassilvitskii, 2007), then Lloyd steps."""
        k = self.num_embeddings
        centroids = flat[torch.randint(len(flat), (1,), device=flat.device)]
        nearest = (flat - centroids).pow(2).sum(1)  # squared distance of each vector to its closest centroid
        for _ in range(k - 1):
            # D^2 sampling spreads seeds over the clusters; a batch with fewer distinct vectors than codes
            # (all distances 0) falls back to uniform picks, i.e. duplicates that restarts can later move.
            weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
            new = flat[torch.multinomial(weights, 1)]
            centroids = torch.cat([centroids, new])
            nearest = torch.minimum(nearest, (flat - new).pow(2).sum(1))
        for _ in range(self.kmeans_iters):
            assign = torch.cdist(flat, centroids).argmin(dim=1)
            counts = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
            filled = counts > 0  # an empty cluster keeps its centroid
            centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        centroids = _broadcast(centroids.contiguous())
        self.codebook.data.copy_(centroids)
        self.embed_sum.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)
