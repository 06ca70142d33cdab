"""CoTracker3 offline: checkpoint layout, strict loading and the numpy tracking front end.

Runs on the CPU with random weights (no checkpoint download).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from movingbg.models.cotracker3 import CoTracker3Offline
from movingbg.preprocess.cotracker import COTRACKER3_OFFLINE, load_cotracker3, track_points

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "cotracker3_scaled_offline_keys.json"


def _manifest() -> list[tuple[str, tuple[int, ...]]]:
    doc = json.loads(MANIFEST.read_text())
    return [(name, tuple(shape)) for name, shape in doc["tensors"]]


def _random_state_dict(seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Random tensors with the manifest's names and shapes (small scale keeps activations tame)."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * scale for name, shape in _manifest()}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ct3") / "scaled_offline.pth"
    torch.save(_random_state_dict(1234), path)
    return path


@pytest.fixture(scope="module")
def model(weights_file) -> CoTracker3Offline:
    return load_cotracker3(weights_file)


# --------------------------------------------------------------------------------------------
# Layout and loading
# --------------------------------------------------------------------------------------------

def test_manifest_is_the_official_layout():
    entries = _manifest()
    assert len(entries) == 188
    assert len({n for n, _ in entries}) == 188
    numel = sum(math.prod(s) for _, s in entries)
    assert numel == 25_452_300                          # ~25.4 M, time_emb included
    assert dict(entries)["time_emb"] == (1, 60, 1110)


def test_state_dict_matches_manifest():
    own = {k: tuple(v.shape) for k, v in CoTracker3Offline().state_dict().items()}
    expected = dict(_manifest())
    assert sorted(set(own) - set(expected)) == []
    assert sorted(set(expected) - set(own)) == []
    assert {k: s for k, s in own.items() if expected[k] != s} == {}
    assert len(own) == 188


def test_weight_spec():
    assert COTRACKER3_OFFLINE.filename == "scaled_offline.pth"
    assert COTRACKER3_OFFLINE.urls[0].startswith("https://huggingface.co/facebook/cotracker3/")
    assert re.fullmatch(r"[0-9a-f]{64}", COTRACKER3_OFFLINE.sha256)


def test_load_is_strict_and_exact(weights_file, model):
    saved = torch.load(weights_file, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    for k, v in saved.items():
        assert torch.equal(loaded[k], v), k
    assert not model.training


def test_load_wrapped_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = _random_state_dict(7)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": sd, "step": torch.tensor(3)}, wrapped)
    m = load_cotracker3(wrapped)
    assert torch.equal(m.corr_mlp.fc1.weight, sd["corr_mlp.fc1.weight"])

    st = tmp_path / "w.safetensors"
    save_file(sd, str(st))
    m = load_cotracker3(st)
    assert torch.equal(m.time_emb, sd["time_emb"])
    assert torch.equal(m.updateformer.virual_tracks, sd["updateformer.virual_tracks"])


def test_load_reports_missing_and_unexpected_keys(tmp_path):
    sd = _random_state_dict(3)
    del sd["corr_mlp.fc2.bias"]
    sd["updateformer.renamed_head.weight"] = sd.pop("updateformer.flow_head.weight")
    bad = tmp_path / "broken_ckpt.pth"
    torch.save(sd, bad)
    with pytest.raises(ValueError) as err:
        load_cotracker3(bad)
    msg = str(err.value)
    assert "broken_ckpt.pth" in msg
    missing = msg.split("Missing keys", 1)[1].split("Unexpected keys", 1)[0]
    unexpected = msg.split("Unexpected keys", 1)[1]
    assert "corr_mlp.fc2.bias" in missing
    assert "updateformer.flow_head.weight" in missing
    assert "updateformer.renamed_head.weight" in unexpected


def test_load_reports_shape_mismatch(tmp_path):
    sd = _random_state_dict(4)
    sd["fnet.conv3.weight"] = torch.zeros(64, 256, 1, 1)
    bad = tmp_path / "wrong_shape.pth"
    torch.save(sd, bad)
    with pytest.raises(ValueError, match=r"wrong_shape\.pth.*Shape mismatches.*fnet\.conv3\.weight"):
        load_cotracker3(bad)


def test_load_rejects_non_state_dict(tmp_path):
    bad = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(ValueError, match="list.pth"):
        load_cotracker3(bad)


# --------------------------------------------------------------------------------------------
# Network output against the official implementation
# --------------------------------------------------------------------------------------------

# Outputs of the official CoTrackerThreeOffline(stride=4, corr_radius=3, window_len=60)
# (facebookresearch/co-tracker @ 82e02e8, run outside this repository) for the inputs built in
# test_network_matches_official_outputs: weights _random_state_dict(99, 0.02), a 3-frame 32x48
# clip torch.rand(..., generator=manual_seed(5)) * 255, three queries, iters=2.
_OFFICIAL_TRACKS = [
    [[9.87084, 8.83388], [30.32966, 22.03761], [47.35146, 1.74018]],
    [[9.89623, 8.70804], [30.44851, 21.91516], [47.42828, 1.70940]],
    [[9.87847, 8.72951], [30.35524, 22.01088], [47.39772, 1.73168]],
]
_OFFICIAL_VIS = [[0.30789, 0.29869, 0.30372], [0.29993, 0.29526, 0.30520],
                 [0.29551, 0.29108, 0.29825]]
_OFFICIAL_CONF = [[0.45881, 0.45697, 0.43047], [0.45910, 0.45996, 0.44638],
                  [0.45597, 0.46239, 0.43521]]


def test_network_matches_official_outputs():
    net = CoTracker3Offline().eval()
    net.load_state_dict(_random_state_dict(99, 0.02), strict=True)
    video = torch.rand(1, 3, 3, 32, 48, generator=torch.Generator().manual_seed(5)) * 255
    queries = torch.tensor([[[0, 10.0, 7.0], [2, 30.5, 20.25], [1, 47.0, 0.0]]])
    with torch.inference_mode():
        tracks, vis, conf = net(video, queries, iters=2)
    assert tracks.shape == (1, 3, 3, 2) and vis.shape == conf.shape == (1, 3, 3)
    torch.testing.assert_close(tracks[0], torch.tensor(_OFFICIAL_TRACKS), rtol=0, atol=2e-4)
    torch.testing.assert_close(vis[0], torch.tensor(_OFFICIAL_VIS), rtol=0, atol=2e-5)
    torch.testing.assert_close(conf[0], torch.tensor(_OFFICIAL_CONF), rtol=0, atol=2e-5)


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------

T, H, W = 6, 64, 80
QUERIES = np.array([[0, 10.0, 12.0], [2, 40.5, 30.25], [5, 79.0, 63.0], [3, 0.0, 0.0]], np.float32)


def _clip(frames: int = T, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (H + frames, W + frames, 3), dtype=np.uint8)
    # a texture sliding one pixel per frame, so there is motion to follow
    return np.stack([base[i:i + H, i:i + W] for i in range(frames)])


@pytest.fixture(scope="module")
def tracked(model):
    calls = []
    tracks, visible = track_points(model, _clip(), QUERIES, check_interrupt=lambda: calls.append(1))
    return tracks, visible, len(calls)


def test_track_points_outputs(tracked):
    tracks, visible, _ = tracked
    assert tracks.shape == (T, len(QUERIES), 2) and tracks.dtype == np.float32
    assert visible.shape == (T, len(QUERIES)) and visible.dtype == np.bool_
    assert np.all(np.isfinite(tracks))


def test_track_points_pins_query_frames(tracked):
    tracks, visible, _ = tracked
    n = np.arange(len(QUERIES))
    t = QUERIES[:, 0].astype(int)
    np.testing.assert_array_equal(tracks[t, n], QUERIES[:, 1:])
    assert visible[t, n].all()
    # elsewhere the (random) network moves the points: the output is not just the queries echoed
    other = np.ones((T, len(QUERIES)), bool)
    other[t, n] = False
    assert np.abs(tracks[other] - np.repeat(QUERIES[None, :, 1:], T, 0)[other]).max() > 1e-3


def test_track_points_calls_interrupt(tracked):
    _, _, calls = tracked
    assert calls >= 6                                    # at least once per refinement iteration


def test_interrupt_aborts(model):
    class Stop(Exception):
        pass

    def stop():
        raise Stop

    with pytest.raises(Stop):
        track_points(model, _clip(2), QUERIES[:1] * [0, 1, 1], check_interrupt=stop)


def test_track_points_follows_official_conventions(model):
    """Same result as driving the network directly with the predictor's resize / query scaling /
    6x6 support grid at frame 0, then scaling back."""
    frames = 2
    video = _clip(frames, seed=5)
    queries = np.array([[1, 20.0, 50.0], [0, 70.0, 5.0]], np.float32)
    tracks, visible = track_points(model, video, queries, iters=2)

    clip = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    clip = F.interpolate(clip, (384, 512), mode="bilinear", align_corners=True)[None]
    q = torch.from_numpy(queries).clone()
    q[:, 1] *= 511 / (W - 1)
    q[:, 2] *= 383 / (H - 1)
    ys, xs = torch.meshgrid(torch.linspace(8, 376, 6), torch.linspace(8, 504, 6), indexing="ij")
    grid = torch.stack([torch.zeros(36), xs.reshape(-1), ys.reshape(-1)], dim=1)
    with torch.inference_mode():
        coords, vis, _ = model(clip, torch.cat([q, grid])[None], iters=2)
    ref = coords[0, :, :2].numpy() * np.array([(W - 1) / 511, (H - 1) / 383])
    ref_vis = vis[0, :, :2].numpy() > 0.9

    keep = np.ones((frames, 2), bool)
    keep[queries[:, 0].astype(int), [0, 1]] = False
    # float noise here is ~1e-5 px; moving the support grid by 4 px changes results by ~2e-4 px
    np.testing.assert_allclose(tracks[keep], ref[keep], rtol=0, atol=3e-5)
    np.testing.assert_array_equal(visible[keep], ref_vis[keep])


@pytest.mark.parametrize("bad", [
    np.zeros((3, 2), np.float32),                        # no t column
    np.zeros((3,), np.float32),                          # not 2-D
    np.zeros((0, 3), np.float32),                        # empty
    np.array([[T, 1.0, 1.0]], np.float32),               # t past the last frame
    np.array([[-1, 1.0, 1.0]], np.float32),              # negative t
    np.array([[1.5, 1.0, 1.0]], np.float32),             # fractional t
    np.array([[0, np.nan, 1.0]], np.float32),            # NaN position
])
def test_bad_queries_raise(model, bad):
    with pytest.raises(ValueError, match="queries"):
        track_points(model, _clip(), bad)


@pytest.mark.parametrize("bad", [
    np.zeros((T, H, W, 3), np.float32),                  # wrong dtype
    np.zeros((H, W, 3), np.uint8),                       # no time axis
    np.zeros((T, H, W, 4), np.uint8),                    # RGBA
    [[0]],                                               # not an array
])
def test_bad_video_raises(model, bad):
    with pytest.raises(ValueError, match="video"):
        track_points(model, bad, QUERIES)


def test_bad_options_raise(model):
    with pytest.raises(ValueError, match="iters"):
        track_points(model, _clip(), QUERIES, iters=0)
    with pytest.raises(ValueError, match="support_grid"):
        track_points(model, _clip(), QUERIES, support_grid=-1)
