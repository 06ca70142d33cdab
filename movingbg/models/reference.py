"""Reference attention ("global features") through diffusers' public attention-processor API.

The reference U-Net runs once per video on the reference latent (t = 0). In each of its spatial
transformer blocks the self-attention processor records its input -- the block's ``norm1`` output --
into a bank under the self-attention's module path (e.g.
``"down_blocks.0.attentions.0.transformer_blocks.0.attn1"``). In the denoising U-Net the
self-attention with the SAME path attends over ``[own tokens ; reference tokens]`` for every frame.
Pairing is by module path, never by channel count or order.

The bank travels through ``cross_attention_kwargs`` (``reference_store`` when writing,
``reference_bank`` when reading), so the processors hold no per-call state (safe with gradient
checkpointing and re-entrant calls). Cross-attention layers get a processor that accepts and ignores
those keywords, so diffusers does not warn about unexpected arguments.
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


def _expand_to_batch(ref: torch.Tensor, batch: int, path: str) -> torch.Tensor:
    """``(Bb, N, C)`` -> ``(batch, N, C)`` by repeating each bank item over its frames.

    The denoising batch is ``B * F`` with index ``b * F + f``, so item ``b`` is repeated ``F`` times.
    """
    if ref.shape[0] == batch:
        return ref
    if batch % ref.shape[0] != 0:
        raise ValueError(f"reference bank entry {path!r} has batch {ref.shape[0]}, "
                         f"which does not divide the attention batch {batch}")
    return ref.repeat_interleave(batch // ref.shape[0], dim=0)


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
    ) -> torch.Tensor:
        """Attention over ``hidden_states`` ``(B*F, N, C)`` (+ bank tokens when ``reference_bank``).

        ``reference_store``: dict to record ``hidden_states`` into under :attr:`path`.
        ``reference_bank``: ``{path: (B, N_ref, C)}``; keys/values become ``[hidden ; ref]``.
        """
        if reference_store is not None:
            reference_store[self.path] = hidden_states
        if reference_bank is None or encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ref = self._bank_entry(reference_bank, hidden_states)
        if _is_plain_self_attention(attn, hidden_states, attention_mask):
            return _attend_with_reference(attn, hidden_states, ref, self.path)
        # unusual Attention options: let the stock processor handle [own ; reference] as context
        context = torch.cat([hidden_states, _expand_to_batch(ref, hidden_states.shape[0], self.path)], dim=1)
        return super().__call__(attn, hidden_states, context, attention_mask, temb)

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


def _attend_with_reference(attn: Attention, hidden_states: torch.Tensor, ref: torch.Tensor,
                           path: str) -> torch.Tensor:
    """``softmax(q [k ; k_ref]^T / sqrt(d)) [v ; v_ref]`` with the reference keys/values projected once.

    Same result as the stock processor on ``[hidden ; ref repeated per frame]``, but ``to_k`` /
    ``to_v`` run on each reference item once instead of once per frame.

    Args:
        hidden_states: ``(B*F, N, C)`` own tokens (the block's ``norm1`` output).
        ref: ``(B or 1, N_ref, C)`` reference tokens.

    Returns:
        ``(B*F, N, C)``.
    """
    batch = hidden_states.shape[0]
    key = torch.cat([attn.to_k(hidden_states), _expand_to_batch(attn.to_k(ref), batch, path)], dim=1)
    value = torch.cat([attn.to_v(hidden_states), _expand_to_batch(attn.to_v(ref), batch, path)], dim=1)
    query = attn.to_q(hidden_states)
    head_dim = key.shape[-1] // attn.heads
    split = lambda t: t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(query), split(key), split(value), dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    return attn.to_out[1](attn.to_out[0](out))


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
