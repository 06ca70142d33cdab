"""CoTracker3 point tracker, offline variant (single window over the whole clip).

An independent implementation of the network described in "CoTracker3: Simpler and Better Point
Tracking by Pseudo-Labelling Real Videos" (Karaev et al., 2024). Module attribute names follow the
key names of the published checkpoint (``facebook/cotracker3`` ``scaled_offline.pth``) so that
``load_state_dict(sd, strict=True)`` works; everything else (structure, helper names, chunking) is
our own. The checkpoint is released under CC-BY-NC 4.0.

Pipeline, all at the model resolution (384 x 512, stride 4):

1. A CNN (``fnet``) maps every frame to a 128-channel, L2-normalised feature map at 1/4 size; a
   4-level pyramid is built by 2x average pooling.
2. For every query, a 7x7 patch of features around the query point on its query frame is kept per
   level ("support features").
3. Each refinement iteration samples a 7x7 patch of features around every current track estimate
   on every frame and level, correlates it with the support patch (49 x 49 dot products), embeds
   that with ``corr_mlp``, adds visibility / confidence logits and a Fourier encoding of the
   frame-to-frame motion, and runs a transformer (``updateformer``) alternating attention over
   time and over tracks (through 64 learned virtual tracks). The transformer predicts additive
   updates to positions, visibility and confidence logits.

Coordinate conventions: ``x`` is the column, ``y`` the row, pixel centres at integer coordinates
(``align_corners=True`` sampling, border padding).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["CoTracker3Offline"]

InterruptFn = Optional[Callable[[], None]]


# --------------------------------------------------------------------------------------------
# Sampling helpers
# --------------------------------------------------------------------------------------------

def _patch_offsets(radius: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``((2r+1)**2, 2)`` integer ``(dx, dy)`` offsets of a square patch.

    Ordering is fixed by the trained weights of ``corr_mlp``: the x offset is the slow index and
    the y offset the fast one.
    """
    steps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dx = steps[:, None].expand(-1, steps.numel())
    dy = steps[None, :].expand(steps.numel(), -1)
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


def _sample_2d(feat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling at pixel coordinates.

    Args:
        feat: ``(M, C, H, W)`` feature maps.
        xy: ``(M, P, Q, 2)`` ``(x, y)`` positions in pixels of ``feat``.

    Returns:
        ``(M, C, P, Q)`` sampled features (border padding).
    """
    h, w = feat.shape[-2:]
    norm = xy.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = xy * norm - 1.0
    return F.grid_sample(feat, grid.to(feat.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def _sample_at_frames(fmaps: torch.Tensor, frames: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Sample features of chosen frames.

    Args:
        fmaps: ``(B, T, C, H, W)`` feature maps.
        frames: ``(B, N)`` integer frame index per point.
        xy: ``(B, N, P, 2)`` pixel positions, ``P`` per point.

    Returns:
        ``(B, N, P, C)``.
    """
    b, t, c, h, w = fmaps.shape
    scale = xy.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid_xy = xy * scale - 1.0                                               # (B, N, P, 2)
    grid_t = frames.to(xy.dtype) * (2.0 / max(t - 1, 1)) - 1.0               # (B, N)
    grid_t = grid_t[:, :, None, None].expand(-1, -1, xy.shape[2], 1)         # (B, N, P, 1)
    grid = torch.cat([grid_xy, grid_t], dim=-1)[:, :, :, None, :]            # (B, N, P, 1, 3)
    vol = fmaps.permute(0, 2, 1, 3, 4)                                       # (B, C, T, H, W)
    out = F.grid_sample(vol, grid.to(vol.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)                                  # (B, C, N, P, 1)
    return out[..., 0].permute(0, 2, 3, 1)


def _fourier_encode(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """``[x, sin(2^k x), cos(2^k x)]`` for ``k < num_freqs``; frequency-major ordering.

    ``(..., D)`` -> ``(..., D + 2 * D * num_freqs)``.
    """
    freqs = 2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype)
    phase = (x[..., None, :] * freqs[:, None]).flatten(-2)                   # (..., F * D)
    waves = torch.sin(torch.cat([phase, phase + 0.5 * math.pi], dim=-1))
    return torch.cat([x, waves], dim=-1)


def _sincos_table(length: int, dim: int) -> torch.Tensor:
    """``(1, length, dim)`` 1-D sine/cosine position table (sines first, then cosines).

    Only an initial value: the checkpoint stores the table the network was trained with.
    """
    half = dim // 2
    inv = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float64) / half))
    ang = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=1)[None].float()


# --------------------------------------------------------------------------------------------
# Feature encoder
# --------------------------------------------------------------------------------------------

class _ResBlock(nn.Module):
    """Two 3x3 convs with instance norm and a residual connection (1x1 projection when strided)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1)
        self.norm1 = nn.InstanceNorm2d(cout)
        self.norm2 = nn.InstanceNorm2d(cout)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride),
                                            nn.InstanceNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, cin, H, W)`` -> ``(M, cout, H / stride, W / stride)``."""
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y)


class _FeatureEncoder(nn.Module):
    """Multi-scale CNN: frames -> ``dim``-channel features at ``1/stride`` resolution."""

    def __init__(self, dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        widths = (dim // 2, dim // 4 * 3, dim, dim)                   # 64, 96, 128, 128
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(widths[0])
        cin = widths[0]
        for i, (cout, s) in enumerate(zip(widths, (1, 2, 2, 2)), start=1):
            setattr(self, f"layer{i}", nn.Sequential(_ResBlock(cin, cout, s), _ResBlock(cout, cout, 1)))
            cin = cout
        self.conv2 = nn.Conv2d(sum(widths), dim * 2, kernel_size=3, padding=1)
        self.norm2 = nn.InstanceNorm2d(dim * 2)
        self.conv3 = nn.Conv2d(dim * 2, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, 3, H, W)`` in -1..1 -> ``(M, dim, H / stride, W / stride)`` (not normalised)."""
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = F.relu(self.norm1(self.conv1(x)))
        scales = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            scales.append(F.interpolate(x, size, mode="bilinear", align_corners=True))
        y = F.relu(self.norm2(self.conv2(torch.cat(scales, dim=1))))
        return self.conv3(y)


# --------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------

class _Mlp(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, tanh_gelu: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.act = nn.GELU(approximate="tanh" if tanh_gelu else "none")
        self.fc2 = nn.Linear(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _MultiHeadAttention(nn.Module):
    """Multi-head attention with a fused key/value projection (``to_kv``: keys then values)."""

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, dim * 2)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``(M, L, D)``, ``context`` ``(M, S, D)`` (defaults to ``x``) -> ``(M, L, D)``."""
        context = x if context is None else context
        m, l, d = x.shape
        h = self.heads
        q = self.to_q(x).view(m, l, h, d // h).transpose(1, 2)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(m, -1, h, d // h).transpose(1, 2)
        v = v.reshape(m, -1, h, d // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)                 # scale = 1 / sqrt(D / h)
        return self.to_out(out.transpose(1, 2).reshape(m, l, d))


class _SelfAttnBlock(nn.Module):
    """Pre-norm transformer block (norms without affine parameters)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn = _MultiHeadAttention(dim, heads)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), dim, tanh_gelu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, L, D)`` -> ``(M, L, D)``."""
        d = x.shape[-1]
        x = x + self.attn(F.layer_norm(x, (d,), eps=1e-6))
        return x + self.mlp(F.layer_norm(x, (d,), eps=1e-6))


class _CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block; the context has its own affine LayerNorm."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = _MultiHeadAttention(dim, heads)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), dim, tanh_gelu=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` ``(M, L, D)`` attends to ``context`` ``(M, S, D)``."""
        d = x.shape[-1]
        x = x + self.cross_attn(F.layer_norm(x, (d,), eps=1e-6), self.norm_context(context))
        return x + self.mlp(F.layer_norm(x, (d,), eps=1e-6))


class _UpdateTransformer(nn.Module):
    """Alternating time / track attention over point tokens plus learned virtual tracks."""

    def __init__(self, input_dim: int, dim: int = 384, heads: int = 8, depth: int = 3,
                 num_virtual: int = 64, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_virtual = num_virtual
        self.input_transform = nn.Linear(input_dim, dim)
        self.flow_head = nn.Linear(dim, 2)
        self.vis_conf_head = nn.Linear(dim, 2)
        # Name (sic) fixed by the checkpoint.
        self.virual_tracks = nn.Parameter(torch.zeros(1, num_virtual, 1, dim))
        self.time_blocks = nn.ModuleList(_SelfAttnBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(
            _SelfAttnBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(
            _CrossAttnBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(
            _CrossAttnBlock(dim, heads, mlp_ratio) for _ in range(depth))
        nn.init.normal_(self.virual_tracks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, T, input_dim)`` -> ``(B, N, T, 4)``: ``dx, dy, dvis, dconf``."""
        tok = self.input_transform(x)
        b, n, t, d = tok.shape
        virt = self.virual_tracks.expand(b, -1, t, -1)
        tok = torch.cat([tok, virt], dim=1)                                   # (B, N+V, T, D)
        nv = n + self.num_virtual
        for time_blk, v_self, p_from_v, v_from_p in zip(
                self.time_blocks, self.space_virtual_blocks,
                self.space_point2virtual_blocks, self.space_virtual2point_blocks):
            tok = time_blk(tok.reshape(b * nv, t, d)).view(b, nv, t, d)
            space = tok.permute(0, 2, 1, 3).reshape(b * t, nv, d)            # (B*T, N+V, D)
            pts, vrt = space[:, :n], space[:, n:]
            vrt = v_from_p(vrt, pts)
            vrt = v_self(vrt)
            pts = p_from_v(pts, vrt)
            tok = torch.cat([pts, vrt], dim=1).view(b, t, nv, d).permute(0, 2, 1, 3)
        tok = tok[:, :n]
        return torch.cat([self.flow_head(tok), self.vis_conf_head(tok)], dim=-1)


# --------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------

class CoTracker3Offline(nn.Module):
    """CoTracker3, offline model: every frame of the clip is processed in one window.

    Hyper-parameters are those of the published ``scaled_offline.pth`` (stride 4, correlation
    radius 3, 4 pyramid levels, 64 virtual tracks, time embedding for 60 frames, model resolution
    384 x 512). Use :func:`movingbg.preprocess.cotracker.track_points` for resizing, query
    scaling and post-processing.

    Args:
        window_len: length of the stored time embedding (other clip lengths interpolate it).
        stride: feature-map stride.
        corr_radius: correlation patch radius (patch side ``2r+1``).
        corr_levels: pyramid levels.
        num_virtual_tracks: learned tracks used for attention across tracks.
        model_resolution: ``(H, W)`` the network was trained at; sets the motion-encoding scale.
        frame_chunk: frames encoded by the CNN at a time (memory bound only).
        corr_chunk_elems: approximate element budget per correlation chunk (memory bound only).
    """

    latent_dim = 128
    input_dim = 1110            # 2 (vis, conf) + 4 * 256 (correlation) + 84 (motion encoding)
    hidden_dim = 384
    motion_freqs = 10

    def __init__(self, window_len: int = 60, stride: int = 4, corr_radius: int = 3,
                 corr_levels: int = 4, num_virtual_tracks: int = 64,
                 model_resolution: tuple[int, int] = (384, 512), frame_chunk: int = 8,
                 corr_chunk_elems: int = 1 << 25) -> None:
        super().__init__()
        self.window_len = int(window_len)
        self.stride = int(stride)
        self.corr_radius = int(corr_radius)
        self.corr_levels = int(corr_levels)
        self.model_resolution = (int(model_resolution[0]), int(model_resolution[1]))
        self.frame_chunk = max(1, int(frame_chunk))
        self.corr_chunk_elems = max(1, int(corr_chunk_elems))
        side = 2 * self.corr_radius + 1
        corr_dim = 256
        expected = 2 + corr_levels * corr_dim + 4 * (1 + 2 * self.motion_freqs)
        if expected != self.input_dim:
            raise ValueError(f"corr_levels={corr_levels} gives a token size of {expected}, "
                             f"the network expects {self.input_dim}")

        self.register_buffer("time_emb", _sincos_table(self.window_len, self.input_dim))
        self.fnet = _FeatureEncoder(self.latent_dim, self.stride)
        self.updateformer = _UpdateTransformer(self.input_dim, self.hidden_dim, heads=8, depth=3,
                                               num_virtual=num_virtual_tracks)
        self.corr_mlp = _Mlp(side ** 4, 384, corr_dim, tanh_gelu=False)

    # -- pieces ---------------------------------------------------------------------------

    def encode_frames(self, video: torch.Tensor, check_interrupt: InterruptFn = None) -> torch.Tensor:
        """Unit-length CNN features.

        Args:
            video: ``(B, T, 3, H, W)`` normalised to -1..1, ``H, W`` multiples of ``stride``.

        Returns:
            ``(B, T, C, H / stride, W / stride)`` with ``C = 128``.
        """
        b, t, c, h, w = video.shape
        flat = video.reshape(b * t, c, h, w)
        parts = []
        for s in range(0, b * t, self.frame_chunk):
            f = self.fnet(flat[s:s + self.frame_chunk])
            norm = torch.sqrt(torch.clamp(f.float().square().sum(dim=1, keepdim=True), min=1e-12))
            parts.append((f / norm).to(video.dtype))
            if check_interrupt is not None:
                check_interrupt()
        fm = torch.cat(parts, dim=0)
        return fm.reshape(b, t, *fm.shape[1:])

    def _pyramid(self, fmaps: torch.Tensor) -> list[torch.Tensor]:
        """``(B, T, C, H, W)`` -> list of ``corr_levels`` maps, each level 2x average-pooled."""
        b, t = fmaps.shape[:2]
        levels = [fmaps]
        for _ in range(self.corr_levels - 1):
            prev = levels[-1]
            pooled = F.avg_pool2d(prev.reshape(b * t, *prev.shape[2:]), 2, stride=2)
            levels.append(pooled.reshape(b, t, *pooled.shape[1:]))
        return levels

    def _support_features(self, fmaps: torch.Tensor, frames: torch.Tensor,
                          xy: torch.Tensor) -> torch.Tensor:
        """Patch of features around each query on its query frame.

        Args:
            fmaps: ``(B, T, C, h, w)`` one pyramid level.
            frames: ``(B, N)`` query frame indices.
            xy: ``(B, N, 2)`` query positions in pixels of this level.

        Returns:
            ``(B, N, P, C)`` with ``P = (2r+1)**2``.
        """
        offs = _patch_offsets(self.corr_radius, xy.device, xy.dtype)
        return _sample_at_frames(fmaps, frames, xy[:, :, None, :] + offs)

    def _correlation_embedding(self, fmaps: torch.Tensor, xy: torch.Tensor,
                               support: torch.Tensor) -> torch.Tensor:
        """Embedded local correlation between the current estimates and the query patches.

        Args:
            fmaps: ``(B, T, C, h, w)`` one pyramid level.
            xy: ``(B, T, N, 2)`` current estimates in pixels of this level.
            support: ``(B, N, P, C)`` query patches.

        Returns:
            ``(B, T, N, 256)``.
        """
        b, t, c, h, w = fmaps.shape
        n = xy.shape[2]
        p = support.shape[2]
        offs = _patch_offsets(self.corr_radius, xy.device, xy.dtype)
        flat = fmaps.reshape(b * t, c, h, w)
        chunk = max(1, self.corr_chunk_elems // max(1, b * t * p * c))
        out = []
        for s in range(0, n, chunk):
            pts = xy[:, :, s:s + chunk, None, :] + offs                      # (B, T, n', P, 2)
            k = pts.shape[2]
            feat = _sample_2d(flat, pts.reshape(b * t, k, p, 2))              # (B*T, C, n', P)
            feat = feat.view(b, t, c, k, p).permute(0, 1, 3, 4, 2)            # (B, T, n', P, C)
            corr = torch.einsum("btnpc,bnqc->btnpq", feat, support[:, s:s + chunk].to(feat.dtype))
            out.append(self.corr_mlp(corr.reshape(b, t, k, p * p)))
        return torch.cat(out, dim=2)

    def time_embedding(self, num_frames: int) -> torch.Tensor:
        """``(1, T, input_dim)``: the stored table, linearly resampled when ``T != window_len``."""
        if num_frames == self.time_emb.shape[1]:
            return self.time_emb
        table = self.time_emb.float().permute(0, 2, 1)
        table = F.interpolate(table, size=num_frames, mode="linear", align_corners=False)
        return table.permute(0, 2, 1).to(self.time_emb.dtype)

    def _motion_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``(B, T, N, 2)`` positions (feature pixels) -> ``(B, T, N, 84)``.

        Encodes the displacement to the previous and the next frame (zero at the clip ends),
        scaled by the feature-map size of the model resolution.
        """
        to_next = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
        from_prev = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
        scale = coords.new_tensor([self.model_resolution[1] / self.stride,
                                   self.model_resolution[0] / self.stride])
        rel = torch.cat([to_next / scale, from_prev / scale], dim=-1)
        return _fourier_encode(rel, self.motion_freqs)

    # -- forward --------------------------------------------------------------------------

    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 6,
                check_interrupt: InterruptFn = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Track query points through a clip.

        Args:
            video: ``(B, T, 3, H, W)`` float, 0..255 RGB; ``H, W`` multiples of ``stride``
                (the checkpoint was trained at 384 x 512).
            queries: ``(B, N, 3)`` ``(t, x, y)``: frame index and pixel position in ``video``.
            iters: refinement iterations (the official predictor uses 6).
            check_interrupt: called after each chunk of frames is encoded and before every
                refinement iteration; raise from it to abort.

        Returns:
            ``tracks`` ``(B, T, N, 2)`` ``(x, y)`` pixels of ``video``; ``visibility``
            ``(B, T, N)`` probability; ``confidence`` ``(B, T, N)`` probability.
        """
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
        b, t, _, h, w = video.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"video size {h}x{w} must be a multiple of the stride {self.stride}")
        if queries.ndim != 3 or queries.shape[0] != b or queries.shape[2] != 3:
            raise ValueError(f"queries must be (B={b}, N, 3), got {tuple(queries.shape)}")
        n = queries.shape[1]

        video = 2.0 * (video / 255.0) - 1.0
        frames = queries[..., 0].long()                                      # (B, N)
        q_xy = queries[..., 1:3]
        if not q_xy.is_floating_point():
            q_xy = q_xy.float()
        q_xy = q_xy / self.stride                                            # (B, N, 2)

        levels = self._pyramid(self.encode_frames(video, check_interrupt))
        support = [self._support_features(lvl, frames, q_xy / 2 ** i) for i, lvl in enumerate(levels)]
        time_emb = self.time_embedding(t)

        coords = q_xy[:, None].expand(b, t, n, 2).clone()                    # (B, T, N, 2)
        vis = coords.new_zeros(b, t, n)
        conf = coords.new_zeros(b, t, n)
        for it in range(iters):
            if check_interrupt is not None:
                check_interrupt()
            corr = torch.cat([self._correlation_embedding(lvl, coords / 2 ** i, support[i])
                              for i, lvl in enumerate(levels)], dim=-1)      # (B, T, N, 1024)
            corr = corr.to(coords.dtype)
            tokens = torch.cat([vis[..., None], conf[..., None], corr,
                                self._motion_encoding(coords)], dim=-1)     # (B, T, N, 1110)
            tokens = tokens.permute(0, 2, 1, 3) + time_emb.to(tokens.dtype)  # (B, N, T, 1110)
            delta = self.updateformer(tokens).permute(0, 2, 1, 3).to(coords.dtype)  # (B, T, N, 4)
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
            logger.debug("CoTracker3 iteration %d/%d done", it + 1, iters)
        return coords * float(self.stride), torch.sigmoid(vis), torch.sigmoid(conf)
