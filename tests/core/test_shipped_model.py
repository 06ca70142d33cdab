"""The miniature model shipped in movingbg/assets: it loads strictly, its demo inputs are what the demo
writes, and generation on test-split clips (never trained on) is conditioned on the reference in every
clip. (That it follows the driving pose and background tracks is not shown yet: see the README's
reproduction section for what the shipped model does and does not do.)"""

import json

import numpy as np
import pytest
import torch

from movingbg.assets import (DEMO_FRAMES, DEMO_POSE, DEMO_REFERENCE, DEMO_SEED, DEMO_SIZE, DEMO_VIDEO, MINI_BUNDLE,
                             MINI_VAE)
from movingbg.repro import ReproOptions, TEST_SEED0
from movingbg.repro.experiment import generate_video, driving_inputs

FRAMES = 16  # two progressive clips of 8 (7 new frames each after the first)


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
