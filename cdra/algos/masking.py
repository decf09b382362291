"""Masked reductions over (batch, seq) tensors.

Every function here selects entries with ``torch.where`` rather than multiplying by the mask,
so whatever sits at masked-out positions (padding, even ``inf`` or ``nan``) never reaches the
result or its gradient.
"""

from __future__ import annotations

import torch

__all__ = ["masked_mean", "masked_normalize", "masked_whiten", "masked_sum"]


def _bool_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.broadcast_to(mask.to(device=like.device).bool(), like.shape)


def masked_sum(tensor: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``tensor`` over positions where ``mask`` is 1 (all dims, or along ``dim``)."""
    m = _bool_mask(mask, tensor)
    selected = torch.where(m, tensor, torch.zeros((), dtype=tensor.dtype, device=tensor.device))
    return selected.sum() if dim is None else selected.sum(dim)


def masked_mean(tensor: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``tensor`` over the positions where ``mask`` is 1.

    With ``dim=None`` the mean is over every masked entry (a scalar); with ``dim`` it is taken
    along that dimension (e.g. ``dim=-1`` gives one mean per row).

    Empty masks: a row (or the whole tensor, for ``dim=None``) with no masked entry gives
    **0**, not NaN, so an example with an empty response contributes nothing instead of
    poisoning the batch. Its gradient is 0 too.
    """
    m = _bool_mask(mask, tensor)
    total = masked_sum(tensor, m, dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp(min=1).to(total.dtype)


def masked_normalize(
    tensor: torch.Tensor,
    mask: torch.Tensor,
    normalize_constant: float,
    dim: int | None = None,
) -> torch.Tensor:
    """Sum of ``tensor`` over masked positions (all dims, or along ``dim``) divided by a constant.

    This is the "masked sum / constant" aggregation (Dr. GRPO, SFT with a fixed normalizer):
    unlike :func:`masked_mean` the divisor does not depend on how many tokens are masked.
    """
    return masked_sum(tensor, mask, dim) / normalize_constant


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    eps: float = 1e-8,
    shift_mean: bool = True,
    unbiased: bool = False,
) -> torch.Tensor:
    """Normalize ``values`` to zero mean and unit variance over the masked entries of the batch.

    ``(v - mean) / sqrt(var + eps)`` with mean and variance taken over every masked entry of the
    whole tensor (e.g. advantages of every response token in a batch). The variance is the
    population one by default (OpenRLHF's advantage normalization); ``unbiased=True`` applies
    Bessel's correction. ``shift_mean=False`` only rescales. Masked-out positions come back as
    0. An all-equal or empty selection gives 0 everywhere (eps keeps it finite).
    """
    m = _bool_mask(mask, values)
    mean = masked_mean(values, m)
    centered = torch.where(m, values - mean, torch.zeros((), dtype=values.dtype, device=values.device))
    n = m.sum()
    denom = (n - 1) if unbiased else n
    var = centered.pow(2).sum() / denom.clamp(min=1).to(values.dtype)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros((), dtype=values.dtype, device=values.device))
