"""The miniature model shipped in movingbg/assets: it loads strictly, its demo inputs are what the demo
writes, and generation on test-split clips (never trained on) keeps the reference in every clip,
follows the driving pose (the figure is where the pose says, not where it was in the reference) and
moves the background with the guidance tracks better than without them or with another clip's."""

import json

import numpy as np
import pytest
import torch

from movingbg.assets import (DEMO_FRAMES, DEMO_POSE, DEMO_REFERENCE, DEMO_SEED, DEMO_SIZE, DEMO_VIDEO, MINI_BUNDLE,
                             MINI_VAE)
from movingbg.repro import ReproOptions, TEST_SEED0
from movingbg.repro.experiment import generate_video, driving_inputs

FRAMES = 16  # two progressive clips of 8 (7 new frames each after the first)
TRACKED_FRAMES = 40  # the reproduction's test length: 6 progressive clips, where the tracks' effect builds up
POSE_MARGIN = 0.95


@pytest.fixture(scope="module")
def mini(single_thread):
    from movingbg.models.bundle import load_bundle
    from movingbg.train.encoders import load_vae

    return load_bundle(MINI_BUNDLE, dtype=torch.float32).eval(), load_vae(MINI_VAE)


def _options(**kw):
    return ReproOptions(test_frames=FRAMES, **kw)


def test_shipped_files_load_strictly_and_fit_together(mini):
    model, vae = mini
    cfg = model.config
    assert cfg.use_fg and cfg.use_bg and cfg.use_reference and cfg.use_concat
    assert type(vae).__name__ == "AutoencoderTiny"
    meta = json.loads(MINI_BUNDLE.with_suffix(".json").read_text())
    assert meta["vae_scale_factor"] == pytest.approx(cfg.vae_scale_factor)
    for p in (MINI_BUNDLE, MINI_VAE):
        assert p.stat().st_size < 12 * 2 ** 20, p  # "a few MB"


def test_demo_assets_are_the_demo_inputs(tmp_path):
    from PIL import Image

    from movingbg.demo import write_demo_inputs
    from movingbg.io.video import read_video
    from movingbg.repro import world_clip

    write_demo_inputs(tmp_path)
    assert json.loads(DEMO_POSE.read_text()) == json.loads((tmp_path / DEMO_POSE.name).read_text())
    ours = np.asarray(Image.open(tmp_path / DEMO_REFERENCE.name))
    assert np.array_equal(np.asarray(Image.open(DEMO_REFERENCE)), ours)
    shipped = read_video(DEMO_VIDEO).frames
    clip = world_clip(DEMO_SEED, DEMO_FRAMES, DEMO_SIZE)
    assert shipped.shape == clip.frames.shape == (DEMO_FRAMES, DEMO_SIZE, DEMO_SIZE, 3)
    assert np.abs(shipped.astype(float) - clip.frames).mean() < 6  # H.264 at crf 10
    assert DEMO_SEED >= TEST_SEED0  # the demo clip was never trained on


@pytest.mark.parametrize("k", [0, 2])
def test_generation_is_the_reference_person_and_scene_in_every_clip(mini, k):
    """Frames generated from a test clip's reference resemble that reference more than any of the other five
    test clips' references, in the first clip and after the hand-over (condition concatenation + global
    features). An unconditioned model passes the 4 checks by chance with probability ~(1/6)^4."""
    from movingbg.repro import world_clip

    model, vae = mini
    o = _options()
    inp = driving_inputs(TEST_SEED0 + k, o)
    video = generate_video(model, vae, inp, o).astype(float)
    refs = [world_clip(TEST_SEED0 + j, 1, 64).frames[0].astype(float) for j in range(6)]
    for t in (0, FRAMES - 1):
        d = [np.abs(video[t] - r).mean() for r in refs]
        others = min(d[j] for j in range(6) if j != k)
        assert d[k] < others, (t, np.round(d, 1))


MOVED = range(FRAMES - 4, FRAMES)  # the last four frames: the figure has moved 10-25 px since frame 0


@pytest.fixture(scope="module")
def driven(mini):
    """Test clips 0, 2 and 4 generated twice: driven by their own pose and tracks, and with the pose held at
    frame 0 (same tracks, reference, seed)."""
    model, vae = mini
    o = _options()
    out = {}
    for k in (0, 2, 4):
        inp = driving_inputs(TEST_SEED0 + k, o)
        still = dict(inp, pose_maps=np.repeat(inp["pose_maps"][:1], FRAMES, axis=0))
        out[k] = (inp["clip"], generate_video(model, vae, inp, o).astype(float),
                  generate_video(model, vae, still, o).astype(float))
    return out


def _moved_region_error(video, clip, target):
    """Mean |video[t] - clip.frames[target(t)]| over the last frames, in the pixels the figure entered or left
    since frame 0 (the person's matte at t XOR at 0)."""
    errs = []
    for t in MOVED:
        moved = (clip.alpha[t] > 0.5) ^ (clip.alpha[0] > 0.5)
        errs.append(np.abs(video[t] - clip.frames[target(t)].astype(float))[moved].mean())
    return float(np.mean(errs))


def test_the_generated_figure_follows_the_driving_pose(driven):
    """Where the figure moved, frames driven by the clip's pose are closer to the true frame than frames
    generated with the pose held at frame 0 (every clip), and, over the clips, closer to the true frame than
    to the reference frame: the figure is drawn where the pose puts it. A model that ignores the pose, or
    copies the reference, fails both (an early shipped model, 2,200 steps in a slower world: 46.0 to the
    reference vs 49.5 to the true frame on the demo clip). Measured on this one, frames 12-15 of clips 0 / 2 /
    4: 41.7 / 34.9 / 34.3 driven vs 44.9 / 65.5 / 53.3 with the pose held; 37.0 to the true frame vs 53.5 to
    the reference over the clips."""
    rows = {k: (_moved_region_error(video, clip, lambda t: t), _moved_region_error(still, clip, lambda t: t),
                _moved_region_error(video, clip, lambda t: 0)) for k, (clip, video, still) in driven.items()}
    for k, (driven_err, still_err, _) in rows.items():
        assert driven_err < POSE_MARGIN * still_err, (k, rows)
    mean = np.mean(list(rows.values()), axis=0)
    assert mean[0] < POSE_MARGIN * mean[2], rows


def _through_vae(vae, frames: np.ndarray) -> np.ndarray:
    """``frames`` sent through the VAE (encode -> decode): the best the model can draw, as float 0..255."""
    from movingbg.train.encoders import decode_latents, encode_latents

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        y = decode_latents(vae, encode_latents(vae, x, 1.0), 1.0)
    return (y.permute(0, 2, 3, 1).numpy() * 255.0).round()


@pytest.fixture(scope="module")
def tracked(mini):
    """The 6 test clips (40 frames, as in the README's tables) generated with their own background tracks, with
    none, and with the next clip's (the same kind of input, the wrong motion): per clip and guidance, the
    background's mean |error| against the true clip through the VAE (frames after the first) and the
    background-motion EPE."""
    from movingbg.repro.experiment import score_video

    model, vae = mini
    o = ReproOptions(test_frames=TRACKED_FRAMES)
    inputs = [driving_inputs(TEST_SEED0 + k, o) for k in range(6)]
    rows = []
    for k, inp in enumerate(inputs):
        clip = inp["clip"]
        truth, bg = _through_vae(vae, clip.frames)[1:], clip.alpha[1:] < 0.5
        row = []
        for video in (generate_video(model, vae, inp, o), generate_video(model, vae, inp, o, use_tracks=False),
                      generate_video(model, vae, dict(inp, tracks=inputs[(k + 1) % 6]["tracks"]), o)):
            err = float(np.abs(video[1:].astype(float) - truth)[bg].mean())
            epe = score_video(video, inp, o.clip_length, ("background_motion",))["background_motion"].value
            row.append((err, float(epe)))
        rows.append(row)
    return np.array(rows)  # (clip, own / none / another's, error / EPE)


def test_the_generated_background_moves_with_the_guidance_tracks(tracked):
    """With its own tracks the generated background is closer to the true one than with none or with
    another clip's, and the tracks re-extracted from it are closer to the guidance (EPE) than without
    tracks on at least 5 of 6 clips and on average by more than 7 %. Measured on this model: |error| 29.36 /
    30.26 / 32.90 grey levels, EPE 3.63 / 4.16 / 4.20 px (own better than none on 6 of 6 clips). The model
    shipped before it (12,000 steps of the same run) fails: |error| 30.97 / 31.25 / 31.38, EPE 4.00 with its
    tracks vs 4.19 without, better on 3 of 6; the one before that had a dead track encoder."""
    err, epe = tracked[..., 0], tracked[..., 1]
    mean = err.mean(axis=0)
    assert mean[0] < 0.985 * mean[1] and mean[0] < 0.985 * mean[2], np.round(err, 2)
    assert (epe[:, 0] < epe[:, 1]).sum() >= 5, np.round(epe, 2)
    assert epe[:, 0].mean() < 0.93 * epe[:, 1].mean() and epe[:, 0].mean() < 0.93 * epe[:, 2].mean(), np.round(epe, 2)
