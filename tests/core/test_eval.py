"""Evaluation metrics (issue 6): PSNR/SSIM, background-motion fidelity, seams, drift, report and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from movingbg.eval import (
    boundary_continuity,
    background_motion_error,
    clip_boundaries,
    drift,
    evaluate,
    frame_quality,
    load_tracks,
    measure_background_motion,
    psnr,
    save_tracks,
    ssim,
)
from movingbg.preprocess.tracks import make_queries, track_klt
from movingbg.synth.scene import gt_tracks, make_clip
from movingbg.types import Tracks

T = 16


# --------------------------------------------------------------------------------------------
# PSNR / SSIM


def test_identical_images_psnr_inf_ssim_one():
    img = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_known_noise_follows_the_formula():
    img = np.full((32, 40, 3), 128, dtype=np.uint8)
    noise = np.where((np.indices((32, 40)).sum(axis=0) % 2)[..., None] == 0, 5, -5)  # +-5 checkerboard
    noisy = (img.astype(int) + noise).astype(np.uint8)
    assert psnr(img, noisy) == pytest.approx(10 * math.log10(255.0 ** 2 / 25.0), abs=1e-9)  # 34.15 dB
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255.0 ** 2 / mse))


def test_ssim_of_constant_images_has_the_closed_form():
    # constant images: variances and covariance vanish, SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1)
    a = np.full((20, 24, 3), 100, dtype=np.uint8)
    b = np.full((20, 24, 3), 120, dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1), rel=1e-9)


def test_ssim_matches_scikit_image_gaussian_ssim():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    want = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=255, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(want, abs=1e-9)


def test_frame_quality_over_a_video_and_bad_inputs():
    clip = make_clip(seed=3, num_frames=4, width=48, height=32)
    noisy = clip.frames.copy()
    noisy[2:] = np.clip(noisy[2:].astype(int) + 9, 0, 255).astype(np.uint8)
    fq = frame_quality(noisy, clip.frames)
    assert fq["num_identical"] == 2 and np.isinf(fq["psnr_per_frame"][:2]).all()
    assert fq["psnr"] == pytest.approx(fq["psnr_per_frame"][2:].mean())
    assert fq["ssim_per_frame"][0] == pytest.approx(1.0) and fq["ssim_per_frame"][3] < 1.0
    with pytest.raises(ValueError, match="gt"):
        frame_quality(clip.frames, clip.frames[:3])
    with pytest.raises(ValueError, match="uint8"):
        psnr(clip.frames[0].astype(np.float32), clip.frames[0])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(clip.frames[0, :8, :8], clip.frames[0, :8, :8])


# --------------------------------------------------------------------------------------------
# background-motion fidelity


@pytest.fixture(scope="module")
def moving():
    """Camera pans 1.5 px/frame and zooms 1 %/frame behind a walking figure; exact GT guidance."""
    clip = make_clip(seed=0, num_frames=T, width=128, height=96, pan=(1.5, 0.5), zoom=0.01)
    queries = make_queries(clip.alpha, 40, 8, frames=clip.frames)
    return clip, gt_tracks(clip, queries[:, 1:])


def test_motion_error_is_near_zero_when_the_background_follows_the_guidance(moving):
    clip, guidance = moving
    rep = measure_background_motion(clip.frames, guidance, clip.alpha)
    assert rep.epe < 0.25, rep.to_dict()
    assert rep.static_epe > 5.0  # the guidance does move
    assert rep.relative_epe < 0.03
    assert rep.coverage > 0.7 and rep.num_samples > 200
    assert rep.per_frame_epe.shape == (T,) and np.isnan(rep.per_frame_epe[0])  # frame 0 is the start
    assert background_motion_error(clip.frames, guidance, clip.alpha) == pytest.approx(rep.epe)


def test_motion_error_is_large_for_a_frozen_background(moving):
    clip, guidance = moving
    frozen = np.repeat(clip.frames[:1], T, axis=0)
    rep = measure_background_motion(frozen, guidance, np.repeat(clip.alpha[:1], T, axis=0))
    assert rep.epe > 5.0
    assert rep.relative_epe == pytest.approx(1.0, abs=0.05)  # as bad as a static background, by definition
    good = background_motion_error(clip.frames, guidance, clip.alpha)
    assert rep.epe > 20 * good


def test_motion_error_grows_with_the_motion_mismatch(moving):
    clip, guidance = moving
    # same scene moving at half the speed: between the faithful and the frozen background
    half = make_clip(seed=0, num_frames=T, width=128, height=96, pan=(0.75, 0.25), zoom=0.005)
    rep = measure_background_motion(half.frames, guidance, half.alpha)
    assert 0.3 < rep.relative_epe < 0.7
    assert 1.0 < rep.epe < 0.8 * rep.static_epe


def test_motion_error_with_klt_guidance_and_rescaled_guidance(moving):
    clip, guidance = moving
    klt = track_klt(clip.frames, clip.alpha, num_points=30)
    assert background_motion_error(clip.frames, klt, clip.alpha) < 0.1
    # guidance extracted at twice the resolution: rescaled to the generated video's pixels
    big = Tracks((guidance.points + 0.5) * 2 - 0.5, guidance.visible, guidance.width * 2, guidance.height * 2)
    rep = measure_background_motion(clip.frames, big, clip.alpha)
    assert rep.scale == (0.5, 0.5) and rep.epe < 0.25


def test_motion_error_rejects_mismatched_inputs(moving):
    clip, guidance = moving
    with pytest.raises(ValueError, match="guidance has 16 frames"):
        background_motion_error(clip.frames[:10], guidance)
    with pytest.raises(ValueError, match="alpha must be"):
        background_motion_error(clip.frames, guidance, clip.alpha[:, :10])
    with pytest.raises(ValueError, match="Tracks"):
        background_motion_error(clip.frames, guidance.points)


def test_tracks_npz_round_trip(tmp_path, moving):
    _, guidance = moving
    path = save_tracks(tmp_path / "g.npz", guidance)
    back = load_tracks(path)
    assert np.array_equal(back.points, guidance.points) and np.array_equal(back.visible, guidance.visible)
    assert (back.width, back.height) == (guidance.width, guidance.height)
    np.savez(tmp_path / "cotracker.npz", tracks=guidance.points[None], visibility=guidance.visible[None])
    assert load_tracks(tmp_path / "cotracker.npz", width=128, height=96).num_frames == T
    with pytest.raises(ValueError, match="width/height"):
        load_tracks(tmp_path / "cotracker.npz")


# --------------------------------------------------------------------------------------------
# clip-boundary continuity


@pytest.fixture(scope="module")
def smooth():
    return make_clip(seed=1, num_frames=25, width=128, height=96, pan=(1.0, 0.3), zoom=0.0).frames


def test_clip_boundaries_follow_the_progressive_plan():
    assert clip_boundaries(25, 8) == [8, 15, 22]  # clip k+1 re-uses clip k's last frame as condition
    assert clip_boundaries(8, 8) == []


def test_continuity_ratio_is_one_for_a_smooth_clip(smooth):
    res = boundary_continuity(smooth, clip_boundaries(25, 8))
    assert 0.85 < res["ratio"] < 1.2
    assert 0.85 < res["ratio_local"] < 1.2
    assert res["frame_diff"].shape == (24,) and res["num_boundaries"] == 3


def test_continuity_ratio_is_large_when_seams_jump(smooth):
    b = clip_boundaries(25, 8)
    jumped = smooth.astype(np.int16)
    for k, frame in enumerate(b):  # every new clip starts brighter (a colour handover error)
        jumped[frame:] += 25
    jumped = np.clip(jumped, 0, 255).astype(np.uint8)
    res = boundary_continuity(jumped, b)
    assert res["ratio"] > 2.5 and res["ratio_local"] > 2.5
    # a single bad seam: the median stays ~1, the worst seam shows it
    one = smooth.copy()
    one[b[1]:] = np.roll(one[b[1]:], 6, axis=2)  # spatial jump at the second seam
    res = boundary_continuity(one, b)
    assert res["worst_ratio"] > 2.5 and res["per_boundary"][1]["ratio"] == pytest.approx(res["worst_ratio"])
    assert res["ratio_local"] < 1.3


def test_continuity_rejects_bad_boundaries(smooth):
    with pytest.raises(ValueError, match="boundaries is empty"):
        boundary_continuity(smooth, [])
    with pytest.raises(ValueError, match="boundaries must lie"):
        boundary_continuity(smooth, [0, 8])
    with pytest.raises(ValueError, match="at least 3 frames"):
        boundary_continuity(smooth[:2], [1])


# --------------------------------------------------------------------------------------------
# drift


def test_drift_is_near_zero_for_a_stable_clip():
    clip = make_clip(seed=1, num_frames=25, width=128, height=96, pan=(0.0, 0.0), zoom=0.0)
    res = drift(clip.frames, clip.frames[0], alpha=clip.alpha, reference_alpha=clip.alpha[0])
    assert abs(res["color_shift_slope"]) < 0.02
    assert res["color_shift"].max() < 0.5
    assert abs(res["std_shift_slope"]) < 0.02
    assert res["color_shift"].shape == (25,) and res["mean"].shape == (25, 3)
    still = np.repeat(clip.frames[:1], 5, axis=0)
    res = drift(still, clip.frames[0])
    assert np.isinf(res["psnr"]).all() and res["color_shift_slope"] == 0.0


def test_drift_grows_for_progressively_shifted_colours():
    clip = make_clip(seed=1, num_frames=25, width=128, height=96, pan=(0.0, 0.0), zoom=0.0)
    t = np.arange(25, dtype=np.float32)[:, None, None]
    shifted = clip.frames.astype(np.float32) * (1 - 0.01 * t[..., None])  # darker...
    shifted[..., 0] += 1.0 * t  # ...and redder every frame
    shifted = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    res = drift(shifted, clip.frames[0], alpha=clip.alpha, reference_alpha=clip.alpha[0])
    stable = drift(clip.frames, clip.frames[0], alpha=clip.alpha, reference_alpha=clip.alpha[0])
    assert res["color_shift_slope"] > 0.3 > 20 * abs(stable["color_shift_slope"])
    assert res["color_shift_last"] > 8.0
    assert res["mean_slope"][0] < 0 and res["mean_slope"][1] > 0  # L falls, a (red) rises
    assert res["psnr_slope"] < stable["psnr_slope"] < 0.1
    with pytest.raises(ValueError, match="reference must be"):
        drift(clip.frames, clip.frames[0, :10])


# --------------------------------------------------------------------------------------------
# report and CLI


def test_evaluate_reports_what_it_can_and_skips_the_rest(tmp_path, moving):
    clip, guidance = moving
    res = evaluate(clip.frames, guidance=guidance, alpha=clip.alpha, clip_length=6, reference=clip.frames[0],
                   weight_dirs=[tmp_path], download_dir=tmp_path, allow_download=False)
    assert list(res) == ["psnr", "ssim", "lpips", "fvd", "background_motion", "boundary_continuity", "drift"]
    for name in ("psnr", "ssim", "lpips", "fvd"):
        assert res[name].status == "skipped" and "ground-truth" in res[name].reason
    assert res["background_motion"].status == "ok" and res["background_motion"].value < 0.25
    assert res["boundary_continuity"].status == "ok" and res["boundary_continuity"].details["boundaries"] == [6, 11]
    assert res["drift"].status == "ok"
    json.dumps(res["background_motion"].to_dict())  # JSON-friendly
    with pytest.raises(ValueError, match="metrics"):
        evaluate(clip.frames, metrics=["nope"])


def test_cli_prints_every_metric(tmp_path, moving, capsys):
    from PIL import Image

    from movingbg.eval.__main__ import main
    from movingbg.io.video import write_video

    clip, guidance = moving
    gen = write_video(tmp_path / "gen.mp4", clip.frames, 8.0, crf=12)
    Image.fromarray(clip.frames[0]).save(tmp_path / "ref.png")
    save_tracks(tmp_path / "tracks.npz", guidance)
    args = ["--generated", str(gen), "--reference", str(tmp_path / "ref.png"), "--tracks", str(tmp_path / "tracks.npz"),
            "--clip-length", "6", "--gt", str(gen), "--weights-dir", str(tmp_path / "w"), "--offline"]
    assert main(args + ["--json", str(tmp_path / "r.json")]) == 0
    table = capsys.readouterr().out
    for name in ("psnr", "ssim", "lpips", "fvd", "background_motion", "boundary_continuity", "drift"):
        assert name in table
    assert "skipped: weights unavailable (" in table
    report = json.loads((tmp_path / "r.json").read_text())
    m = report["metrics"]
    assert m["psnr"]["value"] == "inf" and m["ssim"]["value"] == pytest.approx(1.0)
    assert m["lpips"]["status"] == "skipped" and m["lpips"]["reason"].startswith("weights unavailable (")
    assert m["fvd"]["status"] == "skipped"  # 16 frames: too short for two FVD clips
    assert m["background_motion"]["status"] == "ok" and m["background_motion"]["value"] < 1.0  # after H.264
    assert m["boundary_continuity"]["status"] == "ok"
    assert main(["--generated", str(tmp_path / "missing.mp4")]) == 2
