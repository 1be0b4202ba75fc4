"""PatchNCE (Park, Efros, Zhang, Zhu 2020): a contrastive loss between patches of a generator's
input and output, read through the generator's own encoder.

For each tapped layer, the same random positions are taken from the encoder's features of the
input (keys) and of the output (queries); a small MLP per layer projects each position's feature
vector to ``dim`` dimensions on the unit sphere. A query should match the key at its own position
(the positive) rather than the keys at the other positions (the negatives): a (1 + P - 1)-way
classification with logits ``q . k / temperature``, cross-entropy to the positive. Negatives come
from the same image, or with ``batch_negatives`` from every image of the batch (the reference's
``nce_includes_all_negatives_from_minibatch``, for single-image training).

The keys carry no gradient (the reference detaches them after the heads): the encoder and the
heads learn through the queries, so the keys are projected without building a graph.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# the logit that takes a query's own position out of its negatives (before the temperature), as the reference
SELF_LOGIT = -10.0


class PatchHeads(nn.Module):
    """One two-layer MLP (Linear, ReLU, Linear) per tapped layer, from its channels to ``dim``; the
    reference's ``PatchSampleF`` with ``mlp_sample``. Built from the channel counts, which the
    generator's architecture fixes, so the heads exist (and are initialised, saved and restored)
    from the start instead of being created from the first batch."""

    def __init__(self, channels: Sequence[int], dim: int = 256) -> None:
        super().__init__()
        self.dim = dim
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(True), nn.Linear(dim, dim))
                                  for c in channels)

    def forward(self, feats: Sequence[torch.Tensor], positions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``feats[i]`` (N, C, H, W) sampled at ``positions[i]`` (indices into H * W), projected and
        L2-normalised: (N * P, dim) per layer, image-major."""
        return [F.normalize(mlp(sample_positions(f, pos)).float(), dim=1, eps=1e-7)
                for mlp, f, pos in zip(self.mlps, feats, positions)]


def sample_positions(feat: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The feature vectors of ``feat`` (N, C, H, W) at ``positions`` (P indices into H * W, the same
    for every image): (N * P, C)."""
    n, c = feat.shape[:2]
    return feat.flatten(2).index_select(2, positions.to(feat.device)).transpose(1, 2).reshape(-1, c)


def random_positions(feats: Sequence[torch.Tensor], count: int, generator: torch.Generator | None = None
                     ) -> list[torch.Tensor]:
    """``count`` distinct random positions per feature map (all of them when it has fewer), drawn on
    the CPU from ``generator`` (default: torch's global one, which checkpoints save)."""
    out = []
    for f in feats:
        hw = f.shape[2] * f.shape[3]
        out.append(torch.randperm(hw, generator=generator)[:min(count, hw)])
    return out


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, batch: int, temperature: float = 0.07,
                   batch_negatives: bool = False) -> torch.Tensor:
    """PatchNCE per query: (N * P,) cross-entropies.

    ``q``, ``k``: (N * P, dim) L2-normalised queries (output patches) and keys (input patches at the
    same positions), image-major; ``batch`` = N. Query i's positive is key i; its negatives are the
    other keys of its image, or of the whole batch with ``batch_negatives``. ``k`` is detached."""
    k = k.detach()
    dim = q.shape[1]
    positive = (q * k).sum(dim=1, keepdim=True)  # (N * P, 1)
    groups = 1 if batch_negatives else batch
    qg, kg = q.view(groups, -1, dim), k.view(groups, -1, dim)
    negative = torch.bmm(qg, kg.transpose(1, 2))  # (groups, M, M): every query against every key
    m = negative.shape[1]
    eye = torch.eye(m, dtype=torch.bool, device=q.device).unsqueeze(0)
    negative = negative.masked_fill(eye, SELF_LOGIT).view(-1, m)  # a query's own key is its positive, not a negative
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=q.device), reduction="none")


class PatchNCE(nn.Module):
    """The PatchNCE loss over several tapped layers, with their projection heads.

    ``forward(feats_q, feats_k)`` samples ``num_patches`` positions per layer (the same for queries
    and keys), projects both with the heads and returns the mean over layers of each layer's mean
    patch loss, as the reference does."""

    def __init__(self, channels: Sequence[int], *, num_patches: int = 256, dim: int = 256,
                 temperature: float = 0.07, batch_negatives: bool = False) -> None:
        super().__init__()
        self.heads = PatchHeads(channels, dim)
        self.num_patches, self.temperature, self.batch_negatives = num_patches, temperature, batch_negatives

    def forward(self, feats_q: Sequence[torch.Tensor], feats_k: Sequence[torch.Tensor]) -> torch.Tensor:
        positions = random_positions(feats_k, self.num_patches)
        with torch.no_grad():
            keys = self.heads(feats_k, positions)
        queries = self.heads(feats_q, positions)
        batch = feats_q[0].shape[0]
        losses = [patch_nce_loss(q, k, batch, self.temperature, self.batch_negatives).mean()
                  for q, k in zip(queries, keys)]
        return torch.stack(losses).mean()
