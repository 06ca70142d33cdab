"""Reference attention ("global features") through diffusers' public attention-processor API.

The reference U-Net runs once per video on the reference latent (t = 0). In each of its spatial
transformer blocks the self-attention processor records its input -- the block's ``norm1`` output --
into a bank under the self-attention's module path (e.g.
``"down_blocks.0.attentions.0.transformer_blocks.0.attn1"``). In the denoising U-Net the
self-attention with the SAME path attends over ``[own tokens ; reference tokens]`` for every frame.
Pairing is by module path, never by channel count or order.

The bank travels through ``cross_attention_kwargs`` (``reference_store`` when writing,
``reference_bank`` when reading, plus an optional per-item switch ``reference_keep``), so the
processors hold no per-call state (safe with gradient checkpointing and re-entrant calls).

``reference_keep`` (a tuple of bools, one per batch ITEM, not per frame) lets one call mix items that
see the bank with items that do not, e.g. classifier-free guidance batched as ``[cond ; uncond]``
where only the unconditional half drops the reference. An item with ``False`` gets exactly plain
self-attention over its own tokens (as with no bank): the batch is cut into runs of consecutive items
with the same switch and each run gets its own attention call over ``[own ; reference]`` or
``[own]`` -- no wasted attention over masked tokens, and every run stays eligible for the fused
(flash / memory-efficient) kernels, which an additive ``-inf`` mask would rule out.

Cross-attention layers get a processor that accepts and ignores those keywords, so diffusers does
not warn about unexpected arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import Transformer2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "ReferenceBank",
    "ReferenceAttnProcessor",
    "PassThroughAttnProcessor",
    "spatial_self_attention_paths",
    "install_reference_processors",
]


@dataclass(frozen=True, eq=False)
class ReferenceBank:
    """Reference-U-Net features, one entry per spatial self-attention.

    Attributes:
        features: ``{self-attention module path: (B, N_k, C_k)}`` -- the ``norm1`` hidden states of
            the reference U-Net's block at that path (``N_k`` tokens = h_k x w_k of that level).
    """

    features: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        sizes = {t.shape[0] for t in self.features.values()}
        if len(sizes) > 1:
            raise ValueError(f"ReferenceBank entries have different batch sizes {sorted(sizes)}")
        if any(t.ndim != 3 for t in self.features.values()):
            raise ValueError("ReferenceBank entries must be (B, N, C)")

    @property
    def batch_size(self) -> int:
        return next(iter(self.features.values())).shape[0] if self.features else 0

    def keys(self) -> list[str]:
        return list(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ReferenceBank:
        """Copy on another device / dtype."""
        return ReferenceBank({k: v.to(device=device, dtype=dtype) for k, v in self.features.items()})

    def detach(self) -> ReferenceBank:
        """Bank without autograd history (for caching across sampling steps)."""
        return ReferenceBank({k: v.detach() for k, v in self.features.items()})

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.features.values())


def _keep_runs(keep: tuple[bool, ...] | None, batch: int, bank_batch: int,
               path: str) -> tuple[int, list[tuple[int, int, bool]]]:
    """Frames per item and the runs ``(first item, end item, keep)`` of equal switches.

    The denoising batch is ``items * frames`` with index ``item * frames + frame``. Without ``keep``
    every item sees the bank and ``items`` is the bank's batch (1 = shared by the whole batch).
    """
    items = len(keep) if keep is not None else bank_batch
    if items < 1 or batch % items != 0:
        raise ValueError(f"reference bank entry {path!r}: the attention batch {batch} is not a multiple "
                         f"of {items} items")
    if bank_batch not in (1, items):
        raise ValueError(f"reference bank entry {path!r} has batch {bank_batch}, the call has {items} items "
                         f"(batch 1 or {items} needed)")
    if keep is None:
        return batch // items, [(0, items, True)]
    runs: list[tuple[int, int, bool]] = []
    for i, k in enumerate(keep):
        if runs and runs[-1][2] == bool(k):
            runs[-1] = (runs[-1][0], i + 1, bool(k))
        else:
            runs.append((i, i + 1, bool(k)))
    return batch // items, runs


def _with_reference(own: torch.Tensor, ref: torch.Tensor, frames: int) -> torch.Tensor:
    """``[own ; ref]`` along tokens: ``(I*F, N, C)`` and ``(1 or I, N_ref, C)`` -> ``(I*F, N + N_ref, C)``.

    One copy: the bank is broadcast over frames (a stride-0 view) straight into the result.
    """
    items = own.shape[0] // frames
    own4 = own.view(items, frames, *own.shape[1:])
    ref4 = ref[:, None].expand(items, frames, *ref.shape[1:])
    return torch.cat([own4, ref4], dim=2).view(items * frames, -1, own.shape[-1])


def _bank_rows(ref: torch.Tensor, first: int, end: int) -> torch.Tensor:
    """The bank entries of items ``first:end`` (a batch-1 bank is shared by all)."""
    return ref if ref.shape[0] == 1 else ref[first:end]


def _rows(t: torch.Tensor | None, batch: int, start: int, stop: int) -> torch.Tensor | None:
    """``t[start:stop]`` for a per-row tensor, else ``t`` unchanged."""
    return t[start:stop] if t is not None and t.ndim > 0 and t.shape[0] == batch else t


class ReferenceAttnProcessor(AttnProcessor2_0):
    """Self-attention processor that writes to / reads from a reference bank.

    Args:
        path: module path of the ``Attention`` this processor is installed on (the bank key).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        reference_bank: Mapping[str, torch.Tensor] | None = None,
        reference_store: MutableMapping[str, torch.Tensor] | None = None,
        reference_keep: tuple[bool, ...] | None = None,
    ) -> torch.Tensor:
        """Attention over ``hidden_states`` ``(B*F, N, C)`` (+ bank tokens when ``reference_bank``).

        ``reference_store``: dict to record ``hidden_states`` into under :attr:`path`.
        ``reference_bank``: ``{path: (B or 1, N_ref, C)}``; keys/values become ``[hidden ; ref]``.
        ``reference_keep``: one bool per item (``B``); items with False get plain self-attention
            (exactly as without a bank). None = every item sees the bank.
        """
        if reference_store is not None:
            reference_store[self.path] = hidden_states
        if reference_bank is None or encoder_hidden_states is not None \
                or (reference_keep is not None and not any(reference_keep)):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ref = self._bank_entry(reference_bank, hidden_states)
        frames, runs = _keep_runs(reference_keep, hidden_states.shape[0], ref.shape[0], self.path)
        if _is_plain_self_attention(attn, hidden_states, attention_mask):
            return _attend_with_reference(attn, hidden_states, ref, frames, runs)
        # unusual Attention options: the stock processor per run, on [own ; reference] as context
        batch, outs = hidden_states.shape[0], []
        for first, end, keep in runs:
            rows = slice(first * frames, end * frames)
            own = hidden_states[rows]
            context = _with_reference(own, _bank_rows(ref, first, end), frames) if keep else None
            outs.append(super().__call__(attn, own, context, _rows(attention_mask, batch, rows.start, rows.stop),
                                         _rows(temb, batch, rows.start, rows.stop)))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _bank_entry(self, bank: Mapping[str, torch.Tensor], hidden_states: torch.Tensor) -> torch.Tensor:
        if self.path not in bank:
            raise ValueError(f"reference bank has no entry for self-attention {self.path!r}")
        ref = bank[self.path].to(dtype=hidden_states.dtype)
        if ref.ndim != 3 or ref.shape[-1] != hidden_states.shape[-1]:
            raise ValueError(f"reference bank entry {self.path!r} has shape {tuple(ref.shape)}, "
                             f"the self-attention needs (B, N, {hidden_states.shape[-1]})")
        return ref


def _is_plain_self_attention(attn: Attention, hidden_states: torch.Tensor,
                             attention_mask: torch.Tensor | None) -> bool:
    """True for SD-style self-attention (no extra norms, masks or residuals) on ``(B, N, C)`` tokens."""
    return (hidden_states.ndim == 3 and attention_mask is None and attn.spatial_norm is None
            and attn.group_norm is None and attn.norm_q is None and attn.norm_k is None
            and not attn.norm_cross and not attn.residual_connection and attn.rescale_output_factor == 1.0)


def _attend_with_reference(attn: Attention, hidden_states: torch.Tensor, ref: torch.Tensor, frames: int,
                           runs: list[tuple[int, int, bool]]) -> torch.Tensor:
    """``softmax(q [k ; k_ref]^T / sqrt(d)) [v ; v_ref]`` with the reference keys/values projected once.

    Same result as the stock processor on ``[hidden ; ref repeated per frame]``, but ``to_k`` /
    ``to_v`` run on each reference item once instead of once per frame. The projections run on the
    whole batch; only the attention itself is split into ``runs`` (items with / without the bank).

    Args:
        hidden_states: ``(B*F, N, C)`` own tokens (the block's ``norm1`` output).
        ref: ``(B or 1, N_ref, C)`` reference tokens.
        frames: ``F``; runs: from :func:`_keep_runs`.

    Returns:
        ``(B*F, N, C)``.
    """
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    k_ref, v_ref = attn.to_k(ref), attn.to_v(ref)
    outs = []
    for first, end, keep in runs:
        rows = slice(first * frames, end * frames)
        k, v = key[rows], value[rows]
        if keep:
            k = _with_reference(k, _bank_rows(k_ref, first, end), frames)
            v = _with_reference(v, _bank_rows(v_ref, first, end), frames)
        outs.append(_sdpa(attn, query[rows], k, v))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return attn.to_out[1](attn.to_out[0](out))


def _sdpa(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head ``scaled_dot_product_attention`` on ``(B, N, C)`` / ``(B, M, C)`` projections."""
    batch = query.shape[0]
    head_dim = key.shape[-1] // attn.heads
    split = lambda t: t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(query), split(key), split(value), dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


class PassThroughAttnProcessor(AttnProcessor2_0):
    """Plain ``AttnProcessor2_0`` that accepts (and ignores) the reference keywords."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        reference_bank: Mapping[str, torch.Tensor] | None = None,
        reference_store: MutableMapping[str, torch.Tensor] | None = None,
        reference_keep: tuple[bool, ...] | None = None,
    ) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def _spatial_transformer_blocks(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(path, BasicTransformerBlock)`` of every spatial transformer (inside a Transformer2DModel).

    Temporal motion modules are not ``Transformer2DModel`` and are skipped.
    """
    for name, module in unet.named_modules():
        if isinstance(module, Transformer2DModel):
            for i, block in enumerate(module.transformer_blocks):
                yield f"{name}.transformer_blocks.{i}", block


def spatial_self_attention_paths(unet: nn.Module) -> list[str]:
    """Module paths of all spatial self-attentions (``...transformer_blocks.k.attn1``) of a U-Net."""
    return [f"{path}.attn1" for path, _ in _spatial_transformer_blocks(unet)]


def install_reference_processors(unet: nn.Module) -> list[str]:
    """Put :class:`ReferenceAttnProcessor` on every spatial ``attn1`` (and pass-through on ``attn2``).

    Works for ``UNet2DConditionModel`` (writer) and ``UNetMotionModel`` (reader) alike; the same
    processor reads or writes depending on the keyword it receives.

    Returns:
        the self-attention paths (bank keys), in module order.
    """
    paths = []
    for path, block in _spatial_transformer_blocks(unet):
        if getattr(block, "only_cross_attention", False):
            raise ValueError(f"{path}: only_cross_attention blocks have no self-attention")
        block.attn1.set_processor(ReferenceAttnProcessor(f"{path}.attn1"))
        if getattr(block, "attn2", None) is not None:
            block.attn2.set_processor(PassThroughAttnProcessor())
        paths.append(f"{path}.attn1")
    logger.debug("installed reference attention on %d self-attentions", len(paths))
    return paths
