"""Background point tracks: seeding on the background, KLT tracking, glue for other backends.

The paper represents background motion as sparse point tracks masked with the inverted human matte,
M = (1 - alpha) * T (it trains with 5-50 tracks per video). This module

* seeds query points on the background (``alpha < 0.5``) with a minimum spacing
  (:func:`sample_background_points`, :func:`make_queries`),
* tracks them with OpenCV's pyramidal Lucas-Kanade plus a forward-backward check and re-seeding
  (:func:`track_klt`), or wraps a dense-tracker backend's output (:func:`track_points_to_tracks`,
  e.g. CoTracker3 via ``movingbg.preprocess.cotracker.track_points``),
* subsamples tracks the way the paper does during training (:func:`select_tracks`).

All coordinates are pixels ``(x, y)`` with pixel centres at integer positions, as in
:class:`movingbg.types.Tracks`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence, Union

import cv2
import numpy as np

from ..types import Tracks

logger = logging.getLogger(__name__)

RngLike = Union[None, int, np.random.Generator]
"""``None`` (seed 0, deterministic), an int seed, or a ``numpy.random.Generator``."""

_PERSON = 0.5  # alpha >= this is "person" (same threshold as Tracks.masked)


def _rng(rng: RngLike) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """Array-like or torch tensor (without importing torch) -> numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}") from exc


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_alpha(alpha: Any, shape: tuple[int, ...], name: str = "alpha") -> np.ndarray:
    a = _as_numpy(alpha, name)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (a float matte in 0..1, 1 = person), got {a.shape}")
    return a.astype(np.float32, copy=False)


def _block_disc(blocked: np.ndarray, x: int, y: int, radius: float) -> None:
    """Mark every pixel closer than ``radius`` to ``(x, y)`` in the bool map ``blocked``."""
    if radius <= 0:
        if 0 <= y < blocked.shape[0] and 0 <= x < blocked.shape[1]:
            blocked[y, x] = True
        return
    r = int(math.ceil(radius))
    y0, y1 = max(0, y - r), min(blocked.shape[0], y + r + 1)
    x0, x1 = max(0, x - r), min(blocked.shape[1], x + r + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    blocked[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 < radius * radius


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (or already single-channel) uint8 image -> grey, as the trackers see it."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


# --------------------------------------------------------------------------------------------
# seeding


def sample_background_points(
    alpha0: Optional[np.ndarray],
    num_points: int,
    min_distance: float,
    *,
    border: int = 4,
    quality: float = 0.01,
    rng: RngLike = None,
    image: Optional[np.ndarray] = None,
    margin: int = 3,
    existing: Optional[np.ndarray] = None,
    shape: Optional[tuple[int, int]] = None,
) -> np.ndarray:
    """Seed up to ``num_points`` points on the background, at least ``min_distance`` px apart.

    Candidates lie where ``alpha0 < 0.5`` after eroding that background mask by ``margin`` px
    (keeping points off the person's edge) and at least ``border`` px inside the frame. With an
    ``image``, Shi-Tomasi corners (``cv2.goodFeaturesToTrack``) come first, strongest first; the rest
    (or all of them, without an image) are random background pixels from a jittered grid, accepted
    greedily while they keep ``min_distance`` to every point already chosen (Poisson-disc-like).
    Fewer than ``num_points`` points come back when the background cannot hold more at that spacing;
    an all-person mask gives an empty ``(0, 2)`` array (the caller should warn).

    Args:
        alpha0: ``(H, W)`` float matte in 0..1 (1 = person), or None for "all background" (then
            ``shape`` or ``image`` gives the size).
        num_points: how many points to return at most, >= 0.
        min_distance: minimum distance between returned points (and to ``existing``) in px, >= 0.
        border: keep points at least this many px inside the frame, >= 0.
        quality: ``qualityLevel`` of ``cv2.goodFeaturesToTrack`` (fraction of the best corner), in (0, 1).
        rng: randomness for the fill (None = seed 0, so the result is deterministic).
        image: optional ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8 frame to find corners in.
        margin: erosion of the background mask in px, >= 0.
        existing: optional ``(K, 2)`` points already in use; new points keep ``min_distance`` to them.
        shape: ``(H, W)``, only needed when both ``alpha0`` and ``image`` are None.

    Returns:
        ``(N, 2)`` float32 ``x, y`` with ``N <= num_points`` (integer-valued pixel positions).
    """
    num_points = _check_int(num_points, "num_points", 0)
    border = _check_int(border, "border", 0)
    margin = _check_int(margin, "margin", 0)
    if not math.isfinite(float(min_distance)) or float(min_distance) < 0:
        raise ValueError(f"min_distance must be a finite number >= 0 (px), got {min_distance!r}")
    if not 0.0 < float(quality) < 1.0:
        raise ValueError(f"quality must be in (0, 1) (fraction of the strongest corner), got {quality!r}")
    min_distance = float(min_distance)
    img = None if image is None else _as_numpy(image, "image")
    if alpha0 is not None:
        a = _as_numpy(alpha0, "alpha0").astype(np.float32, copy=False)
        if a.ndim != 2:
            raise ValueError(f"alpha0 must be an (H, W) matte, got shape {a.shape}")
        H, W = a.shape
    elif img is not None:
        H, W = img.shape[:2]
        a = None
    elif shape is not None:
        H, W = int(shape[0]), int(shape[1])
        a = None
    else:
        raise ValueError("alpha0, image or shape must give the frame size")
    if img is not None:
        if img.dtype != np.uint8 or img.shape[:2] != (H, W) or img.ndim not in (2, 3):
            raise ValueError(f"image must be ({H}, {W}, 3) or ({H}, {W}) uint8, got {img.shape} {img.dtype}")
    empty = np.zeros((0, 2), dtype=np.float32)
    if num_points == 0:
        return empty

    valid = np.ones((H, W), dtype=np.uint8) if a is None else (a < _PERSON).astype(np.uint8)
    if margin > 0 and a is not None:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        valid = cv2.erode(valid, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    if border > 0:
        valid[:border] = 0
        valid[H - border :] = 0
        valid[:, :border] = 0
        valid[:, W - border :] = 0
    blocked = valid == 0
    if existing is not None:
        ex = np.rint(_as_numpy(existing, "existing").reshape(-1, 2)).astype(np.int64)
        ex = ex[(ex[:, 0] >= 0) & (ex[:, 0] < W) & (ex[:, 1] >= 0) & (ex[:, 1] < H)]
        if len(ex) and min_distance > 0:
            free = np.ones((H, W), dtype=np.uint8)
            free[ex[:, 1], ex[:, 0]] = 0
            dist = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            blocked |= dist < min_distance
        elif len(ex):
            blocked[ex[:, 1], ex[:, 0]] = True
    if blocked.all():
        return empty

    chosen: list[tuple[int, int]] = []
    if img is not None:
        corners = cv2.goodFeaturesToTrack(
            to_gray(img),
            maxCorners=num_points,
            qualityLevel=float(quality),
            minDistance=max(min_distance, 1.0),
            mask=(~blocked).astype(np.uint8),
            blockSize=5,
        )
        if corners is not None:
            for x, y in np.rint(corners.reshape(-1, 2)).astype(np.int64):
                if not blocked[y, x]:
                    chosen.append((int(x), int(y)))
                    _block_disc(blocked, int(x), int(y), min_distance)

    if len(chosen) < num_points:
        gen = _rng(rng)
        step = max(1, int(min_distance // 2))
        oy, ox = (int(v) for v in gen.integers(0, step, size=2))
        ys, xs = np.nonzero(~blocked[oy::step, ox::step])
        if ys.size:
            ys = ys * step + oy
            xs = xs * step + ox
            if step > 1:  # jitter inside the grid cell
                ys = np.minimum(ys + gen.integers(0, step, size=ys.size), H - 1)
                xs = np.minimum(xs + gen.integers(0, step, size=xs.size), W - 1)
            for i in gen.permutation(ys.size):
                x, y = int(xs[i]), int(ys[i])
                if blocked[y, x]:
                    continue
                chosen.append((x, y))
                _block_disc(blocked, x, y, min_distance)
                if len(chosen) >= num_points:
                    break
    if not chosen:
        return empty
    return np.asarray(chosen[:num_points], dtype=np.float32)


def make_queries(
    alpha: Optional[np.ndarray],
    num_points: int,
    min_distance: float,
    *,
    every: Optional[int] = None,
    frames: Optional[np.ndarray] = None,
    border: int = 4,
    margin: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Query points ``[t, x, y]`` on the background for a point-tracking backend (e.g. CoTracker3).

    ``num_points`` points are seeded on the background of frame 0 (see
    :func:`sample_background_points`; corners first when ``frames`` is given) and, with ``every=k``,
    another ``num_points`` on the background of frames ``k, 2k, ...`` so the backend can replace
    tracks that were lost or left the frame (the backend does not tell us which ones survive, so
    up to ``num_points * ceil(T / k)`` queries come back).

    Args:
        alpha: ``(T, H, W)`` float matte in 0..1 (1 = person), or None (whole frame is background;
            ``frames`` then gives the size).
        num_points: queries per seeding frame, >= 0.
        min_distance: minimum spacing in px between queries of the same seeding frame.
        every: re-seed every this many frames (>= 1), or None for frame 0 only.
        frames: optional ``(T, H, W, 3)`` uint8 RGB clip, to prefer corners.
        border, margin: as in :func:`sample_background_points`.
        seed: seed of the random fill.

    Returns:
        ``(N, 3)`` float32 rows ``[t, x, y]`` (``t`` frame index, ``x, y`` in px), sorted by ``t``.
    """
    fr = None if frames is None else _as_numpy(frames, "frames")
    if alpha is None:
        if fr is None:
            raise ValueError("alpha or frames must be given (frames gives the clip size when alpha is None)")
        T, H, W = fr.shape[:3]
        a = None
    else:
        a = _as_numpy(alpha, "alpha").astype(np.float32, copy=False)
        if a.ndim != 3:
            raise ValueError(f"alpha must be a (T, H, W) matte in 0..1, got shape {a.shape}")
        T, H, W = a.shape
    if fr is not None and (fr.ndim != 4 or fr.shape[:3] != (T, H, W) or fr.dtype != np.uint8):
        raise ValueError(f"frames must be ({T}, {H}, {W}, 3) uint8 RGB, got {fr.shape} {fr.dtype}")
    if every is not None:
        every = _check_int(every, "every", 1)
    gen = np.random.default_rng(int(seed))
    seed_frames = [0] if every is None else list(range(0, T, every))
    rows = []
    for t in seed_frames:
        pts = sample_background_points(
            None if a is None else a[t],
            num_points,
            min_distance,
            border=border,
            margin=margin,
            rng=gen,
            image=None if fr is None else fr[t],
            shape=(H, W),
        )
        if len(pts):
            rows.append(np.concatenate([np.full((len(pts), 1), t, dtype=np.float32), pts], axis=1))
    if not rows:
        logger.debug("make_queries: no background to seed on")
        return np.zeros((0, 3), dtype=np.float32)
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------------------------
# KLT


_CV_WARP_EXACT: Optional[bool] = None


def _cv_warp_is_exact() -> bool:
    """Whether ``cv2.warpAffine`` on float32 images samples at exact sub-pixel positions.

    OpenCV 5 does; older builds snap source positions to a 1/32 px grid (as they always do for
    uint8 images), which for a near-identity warp shifts whole regions by the same rounding error.
    """
    global _CV_WARP_EXACT
    if _CV_WARP_EXACT is None:
        ramp = np.tile(np.arange(16, dtype=np.float32) * 10.0, (4, 1))
        shifted = cv2.warpAffine(ramp, np.array([[1.0, 0.0, 0.01], [0.0, 1.0, 0.0]]), (16, 4), flags=cv2.INTER_LINEAR)
        _CV_WARP_EXACT = bool(abs(float(shifted[1, 8]) - (80.0 - 0.1)) < 1e-3)
        logger.debug("cv2.warpAffine float32 exact sub-pixel sampling: %s", _CV_WARP_EXACT)
    return _CV_WARP_EXACT


def _warp_bilinear(img: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Warp a gray uint8 image by the ``(2, 3)`` affine ``A`` (``dst(A p) = img(p)``), bilinear.

    Samples at exact sub-pixel positions (``cv2.warpAffine`` on float32 where that is exact, else
    numpy): snapping positions to a 1/32 px grid would shift whole regions of a near-identity warp
    by the same rounding error, a bias that frame-to-frame tracking accumulates. Samples outside the
    image clamp to the edge.
    """
    H, W = img.shape
    if _cv_warp_is_exact():
        out = cv2.warpAffine(
            img.astype(np.float32),
            A.astype(np.float64),
            (W, H),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    inv = cv2.invertAffineTransform(A.astype(np.float64))
    xs = np.arange(W, dtype=np.float64)
    ys = np.arange(H, dtype=np.float64)
    sx = (inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None] + inv[0, 2]).astype(np.float32)
    sy = (inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None] + inv[1, 2]).astype(np.float32)
    np.clip(sx, 0, W - 1, out=sx)
    np.clip(sy, 0, H - 1, out=sy)
    x0 = np.minimum(sx.astype(np.int32), max(W - 2, 0))
    y0 = np.minimum(sy.astype(np.int32), max(H - 2, 0))
    fx = sx - x0
    fy = sy - y0
    flat = img.astype(np.float32).ravel()
    i00 = y0 * W + x0
    dx = 1 if W > 1 else 0
    dy = W if H > 1 else 0
    top = flat[i00] * (1 - fx) + flat[i00 + dx] * fx
    bot = flat[i00 + dy] * (1 - fx) + flat[i00 + dy + dx] * fx
    out = top * (1 - fy) + bot * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _snap_affine(A: np.ndarray, width: int, height: int, eps: float = 1e-3) -> np.ndarray:
    """Make a fitted global affine safe to resample with.

    Resampling an image at a fractional offset distorts its phase (bilinear interpolation is not
    an exact shift), an error that frame-to-frame tracking would accumulate. So the displacement
    at the frame centre is rounded to whole pixels (LK finds the fractional rest), and a linear
    part within ``eps`` of the identity is set to the identity (then the warp is an exact
    integer shift and LK sees the same pair of images as without compensation).
    """
    A = np.asarray(A, dtype=np.float64).copy()
    if np.abs(A[:, :2] - np.eye(2)).max() < eps:
        A[:, :2] = np.eye(2)
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    d = A[:, :2] @ c + A[:, 2] - c
    A[:, 2] += np.rint(d) - d
    return A


def person_masks(alpha: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Person masks of a ``(T, H, W)`` matte for the trackers.

    Returns:
        ``(coverage, danger)``, both ``(T, H, W)`` bool: ``coverage`` is any person coverage (soft
        edges included) dilated by 1 px (the pixels :func:`lk_step` neutralises); ``danger`` is the
        person (alpha >= 0.5) dilated by ``margin`` px (tracks there count as occluded).
    """
    ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    coverage = np.stack([cv2.dilate((f > 0.02).astype(np.uint8), ring) for f in alpha]).astype(bool)
    person = (alpha >= _PERSON).astype(np.uint8)
    if margin > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        danger = np.stack([cv2.dilate(p, kernel) for p in person]).astype(bool)
    else:
        danger = person.astype(bool)
    return coverage, danger


def lk_params(win_size: int, levels: int) -> dict:
    """OpenCV pyramidal Lucas-Kanade settings shared by the tracker and the motion metric."""
    return dict(winSize=(int(win_size), int(win_size)), maxLevel=int(levels),
                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 0.003))


def lk_step(
    prev: np.ndarray,
    nxt: np.ndarray,
    p0: np.ndarray,
    lk: dict,
    compensate: bool,
    fg_prev: Optional[np.ndarray] = None,
    fg_next: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track ``(K, 2)`` points from gray ``prev`` to gray ``nxt`` with a forward-backward check.

    With ``compensate``, a global affine fitted (RANSAC) to a first LK pass warps ``prev`` onto
    ``nxt`` and LK runs again on the aligned pair, starting from the global prediction.
    Translation-only LK is biased under zoom/rotation (by (scale - 1) times the offset of the
    window's gradient centroid, accumulating frame after frame); after alignment the residual
    motion is a near translation. With the person masks ``fg_prev``/``fg_next`` (``(H, W)`` bool),
    the person pixels of the next frame are replaced by the previous frame moved by the fitted
    global motion, so windows (at any pyramid level) that overlap the person see the global
    background motion there instead of being dragged along by the person.

    Returns:
        ``(p1 (K, 2) float32, fb_error (K,) float32 px, ok (K,) bool)``; ``ok`` is False where LK
        failed or the result left the frame.
    """
    H, W = nxt.shape[:2]
    q0 = p0.reshape(-1, 1, 2).astype(np.float32)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, q0, None, **lk)
    ok = st1.ravel() == 1
    src, dst, ref = prev, nxt, q0
    if compensate and ok.sum() >= 6:
        A, _ = cv2.estimateAffine2D(
            q0[ok], p1[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0, maxIters=500, confidence=0.99, refineIters=10
        )
        if A is not None and np.isfinite(A).all():
            A_fit, A = A, _snap_affine(A, W, H)
            src = _warp_bilinear(prev, A)
            ref = (q0.reshape(-1, 2) @ A[:, :2].T.astype(np.float32) + A[:, 2].astype(np.float32)).reshape(-1, 1, 2)
            if fg_prev is not None and fg_next is not None and (fg_prev.any() or fg_next.any()):
                # inside the person the pair shows the previous frame moved by the fitted global
                # motion (src holds it moved by the snapped one): there it says "global motion"
                hole = cv2.warpAffine(fg_prev.astype(np.uint8), A, (W, H), flags=cv2.INTER_NEAREST).astype(bool)
                hole |= fg_next
                dst = nxt.copy()
                dst[hole] = _warp_bilinear(prev, A_fit)[hole]
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(src, dst, ref, ref.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
            ok = st1.ravel() == 1
    back, st2, _ = cv2.calcOpticalFlowPyrLK(dst, src, p1, ref.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    p1 = p1.reshape(-1, 2)
    fb = np.linalg.norm(back.reshape(-1, 2) - ref.reshape(-1, 2), axis=1).astype(np.float32)
    ok &= (st2.ravel() == 1) & np.isfinite(p1).all(axis=1) & np.isfinite(fb)
    ok &= (p1[:, 0] >= 0) & (p1[:, 1] >= 0) & (p1[:, 0] <= W - 1) & (p1[:, 1] <= H - 1)
    return p1.astype(np.float32), fb, ok


def track_klt(
    frames: np.ndarray,
    alpha: Optional[np.ndarray] = None,
    *,
    num_points: int = 50,
    min_distance: float = 12,
    win_size: int = 21,
    levels: int = 3,
    fb_threshold: float = 1.0,
    reseed: bool = True,
    compensate: bool = True,
    occlusion_margin: Optional[int] = None,
    border: int = 4,
    seed: int = 0,
    check_interrupt: Optional[Callable[[], Any]] = None,
    on_frame: Optional[Callable[[int, int], None]] = None,
) -> Tracks:
    """Track background points through a clip with pyramidal Lucas-Kanade (OpenCV), frame to frame.

    Points are seeded on the background of frame 0 (:func:`sample_background_points`, corners
    first). Each step tracks forward ``t-1 -> t`` and back ``t -> t-1``; a point is lost when either
    pass fails, when the forward-backward error exceeds ``fb_threshold`` px, when it leaves the frame,
    or (with ``alpha``) when it comes within ``occlusion_margin`` px of the person (the LK window
    would mix person and background motion). A lost track never comes back: it is invisible from
    then on and its position is held at its last tracked position. With ``reseed``, whenever fewer
    than ``num_points`` tracks are alive, new ones are seeded on the background of the current frame
    (keeping ``min_distance`` to live points), so the visible count stays near ``num_points`` and the
    total ``N`` may exceed it; a track born at frame ``b`` is invisible before ``b`` and holds its
    birth position there. Finally ``Tracks.masked(alpha)`` hides any point on the person.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB (or ``(T, H, W)`` uint8 gray) clip.
        alpha: ``(T, H, W)`` float human matte in 0..1 (1 = person), or None (no person).
        num_points: target number of live tracks, >= 1.
        min_distance: minimum spacing of seeded points in px.
        win_size: LK window side in px (odd, >= 5).
        levels: LK pyramid levels above the base (0 = no pyramid).
        fb_threshold: forward-backward error limit in px, > 0.
        reseed: spawn new tracks to replace lost ones.
        occlusion_margin: distance from the person (alpha >= 0.5) in px below which a track is
            dropped and no seed is placed; default ``win_size // 4``.
        border: seeds keep this many px from the frame edge.
        seed: seed of the random fill used when there are too few corners (deterministic).
        check_interrupt: called before every frame; it may raise to abort (e.g. ComfyUI's
            ``throw_exception_if_processing_interrupted``), and a truthy return raises
            ``InterruptedError``.
        on_frame: ``on_frame(done, total)`` after each frame (``done`` frames of ``total`` processed).

    Returns:
        :class:`Tracks` with ``T`` frames and ``N >= 0`` tracks (``N == 0`` when there is no
        background to seed on; a warning is logged).
    """
    fr = _as_numpy(frames, "frames")
    if fr.dtype != np.uint8 or fr.ndim not in (3, 4) or (fr.ndim == 4 and fr.shape[-1] != 3):
        raise ValueError(f"frames must be (T, H, W, 3) RGB or (T, H, W) gray uint8, got {fr.shape} {fr.dtype}")
    T, H, W = fr.shape[:3]
    if T < 1 or H < 2 or W < 2:
        raise ValueError(f"frames must hold at least one frame of at least 2x2 px, got {fr.shape}")
    a = None if alpha is None else _check_alpha(alpha, (T, H, W))
    num_points = _check_int(num_points, "num_points", 1)
    win_size = _check_int(win_size, "win_size", 5)
    if win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, got {win_size}")
    levels = _check_int(levels, "levels", 0)
    if not float(fb_threshold) > 0:
        raise ValueError(f"fb_threshold must be > 0 (px), got {fb_threshold!r}")
    margin = win_size // 4 if occlusion_margin is None else _check_int(occlusion_margin, "occlusion_margin", 0)
    rng = np.random.default_rng(int(seed))

    def interrupted() -> None:
        if check_interrupt is not None and check_interrupt():
            raise InterruptedError("track_klt was interrupted")

    fg, danger = person_masks(a, margin) if a is not None else (None, None)

    def seed_points(t: int, count: int, existing: Optional[np.ndarray]) -> np.ndarray:
        return sample_background_points(
            None if a is None else a[t],
            count,
            min_distance,
            border=border,
            rng=rng,
            image=fr[t],
            margin=margin,
            existing=existing,
            shape=(H, W),
        )

    interrupted()
    cap = max(4 * num_points, 16)
    points = np.zeros((T, cap, 2), dtype=np.float32)
    vis = np.zeros((T, cap), dtype=bool)
    n = 0

    def add(t: int, pts: np.ndarray) -> np.ndarray:
        nonlocal points, vis, n, cap
        k = len(pts)
        if n + k > cap:
            cap = max(2 * cap, n + k)
            points = np.concatenate([points, np.zeros((T, cap - points.shape[1], 2), np.float32)], axis=1)
            vis = np.concatenate([vis, np.zeros((T, cap - vis.shape[1]), bool)], axis=1)
        points[: t + 1, n : n + k] = pts[None]
        vis[t, n : n + k] = True
        ids = np.arange(n, n + k)
        n += k
        return ids

    seeds = seed_points(0, num_points, None)
    active = add(0, seeds)
    cur = seeds.astype(np.float32)
    if on_frame is not None:
        on_frame(1, T)

    lk = lk_params(win_size, levels)
    gray = [to_gray(f) for f in fr]
    for t in range(1, T):
        interrupted()
        points[t, :n] = points[t - 1, :n]  # hold (lost tracks keep their last position)
        if len(active):
            p1, fb, ok = lk_step(
                gray[t - 1],
                gray[t],
                cur,
                lk,
                compensate,
                None if fg is None else fg[t - 1],
                None if fg is None else fg[t],
            )
            ok &= fb <= fb_threshold
            if danger is not None and ok.any():
                xi = np.clip(np.rint(p1[:, 0]), 0, W - 1).astype(np.int64)
                yi = np.clip(np.rint(p1[:, 1]), 0, H - 1).astype(np.int64)
                ok &= ~danger[t, yi, xi]
            active, cur = active[ok], p1[ok].astype(np.float32)
            points[t, active] = cur
            vis[t, active] = True
        if reseed and len(active) < num_points:
            new = seed_points(t, num_points - len(active), cur if len(active) else None)
            if len(new):
                active = np.concatenate([active, add(t, new)])
                cur = np.concatenate([cur, new.astype(np.float32)])
        if on_frame is not None:
            on_frame(t + 1, T)

    tracks = Tracks(points[:, :n].copy(), vis[:, :n].copy(), W, H)
    if a is not None:
        tracks = tracks.masked(a)
    if n == 0:
        logger.warning("track_klt: no background to track (the matte covers the whole clip); returning 0 tracks")
    else:
        logger.debug(
            "track_klt: %d tracks over %d frames, %.1f visible per frame on average",
            n,
            T,
            float(tracks.visible.sum(axis=1).mean()),
        )
    return tracks


# --------------------------------------------------------------------------------------------
# glue and selection


def track_points_to_tracks(
    points: Any,
    visible: Any,
    width: int,
    height: int,
    *,
    alpha: Optional[np.ndarray] = None,
    queries: Optional[np.ndarray] = None,
    hide_before_query: bool = False,
) -> Tracks:
    """Wrap a tracking backend's output (e.g. CoTracker3) as masked :class:`Tracks`.

    Args:
        points: ``(T, N, 2)`` (or ``(1, T, N, 2)``) ``x, y`` in px of a ``width`` x ``height``
            frame; numpy or a torch tensor.
        visible: ``(T, N)`` (or ``(1, T, N)``) bool, or floats where > 0.5 means visible.
        width, height: frame size the coordinates refer to.
        alpha: optional ``(T, H, W)`` float matte in 0..1; applies M = (1 - alpha) * T.
        queries: optional ``(N, 3)`` ``[t, x, y]`` the backend was asked to track (needed by
            ``hide_before_query``).
        hide_before_query: hide every point before its query frame (as KLT tracks are; CoTracker3
            in offline mode also tracks backwards in time, so the default keeps those).

    Returns:
        :class:`Tracks`; points outside the frame are invisible.
    """
    pts = _as_numpy(points, "points").astype(np.float32)
    vis = _as_numpy(visible, "visible")
    if pts.ndim == 4 and pts.shape[0] == 1:
        pts = pts[0]
    if vis.ndim == 3 and vis.shape[0] == 1:
        vis = vis[0]
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"points must be (T, N, 2) x, y in px, got {pts.shape}")
    if vis.shape != pts.shape[:2]:
        raise ValueError(f"visible must be {pts.shape[:2]} (T, N), got {vis.shape}")
    vis = vis > 0.5 if vis.dtype != bool else vis
    vis = vis & np.isfinite(pts).all(axis=-1)
    pts = np.nan_to_num(pts, nan=-1.0, posinf=-1.0, neginf=-1.0)
    T, N = vis.shape
    if hide_before_query:
        if queries is None:
            raise ValueError("queries must be given when hide_before_query is True")
        q = _as_numpy(queries, "queries")
        if q.ndim == 3 and q.shape[0] == 1:
            q = q[0]
        if q.shape != (N, 3):
            raise ValueError(f"queries must be ({N}, 3) [t, x, y], got {q.shape}")
        vis = vis & (np.arange(T)[:, None] >= np.rint(q[:, 0]).astype(np.int64)[None, :])
    tracks = Tracks(pts, vis, width, height)
    tracks = Tracks(tracks.points, tracks.visible & tracks.in_frame(), tracks.width, tracks.height)
    if alpha is not None:
        tracks = tracks.masked(_check_alpha(alpha, (T, tracks.height, tracks.width)))
    return tracks


def select_tracks(tracks: Tracks, num: Union[int, Sequence[int]], rng: RngLike = None) -> Tracks:
    """Random subset of tracks, as the paper samples 5-50 background tracks per training video.

    Tracks that are visible in at least one frame are preferred; never-visible tracks are only
    used when there are not enough of the others. The chosen tracks keep their original order.

    Args:
        tracks: the full set.
        num: how many to keep (>= 0), or ``(low, high)`` to draw the count uniformly from
            ``low..high`` inclusive (e.g. ``(5, 50)``).
        rng: None (seed 0), an int seed or a ``numpy.random.Generator``.

    Returns:
        :class:`Tracks` with ``min(num, N)`` tracks.
    """
    return tracks.subset(select_track_indices(tracks, num, rng))


def select_track_indices(tracks: Tracks, num: Union[int, Sequence[int]], rng: RngLike = None) -> np.ndarray:
    """The sorted track indices :func:`select_tracks` keeps (same arguments, same random draws)."""
    gen = _rng(rng)
    if isinstance(num, (int, np.integer)) and not isinstance(num, bool):
        count = _check_int(num, "num", 0)
    else:
        try:
            low, high = (int(v) for v in num)  # type: ignore[union-attr]
        except Exception as exc:
            raise ValueError(f"num must be an int >= 0 or a (low, high) pair, got {num!r}") from exc
        if not 0 <= low <= high:
            raise ValueError(f"num must satisfy 0 <= low <= high, got {num!r}")
        count = int(gen.integers(low, high + 1))
    N = tracks.num_tracks
    if count >= N:
        return np.arange(N)
    seen = tracks.visible.any(axis=0)
    good, bad = np.nonzero(seen)[0], np.nonzero(~seen)[0]
    if count <= len(good):
        idx = gen.choice(good, size=count, replace=False)
    else:
        idx = np.concatenate([good, gen.choice(bad, size=count - len(good), replace=False)])
    return np.sort(idx)
