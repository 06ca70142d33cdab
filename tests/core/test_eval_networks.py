"""LPIPS and FVD networks: official key layouts, strict loading, offline skip, Fréchet-distance math.

No real weights are downloaded: the networks run on random weights saved under the official tensor
names and shapes (torchvision's ``features.*`` + LPIPS v0.1 ``lin*`` heads; the I3D layout of
``i3d_pretrained_400.pt``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from movingbg.eval import evaluate
from movingbg.eval.fvd import (
    I3D,
    I3D_KINETICS400,
    _same_pad,
    fvd,
    frechet_distance,
    gaussian_stats,
    i3d_features,
    load_i3d,
    preprocess_clips,
)
from movingbg.eval.lpips_net import LPIPS, LPIPS_BACKBONES, LPIPS_HEADS, load_lpips, lpips_frames
from movingbg.weights import WeightsNotFoundError

# torchvision's alexnet().features parameter shapes (alexnet-owt-7be5be79.pth)
ALEX_FEATURES = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
}
ALEX_CLASSIFIER = {"classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
                   "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
                   "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}
# lpips/weights/v0.1/alex.pth (lpips 0.1.4 wheel)
ALEX_HEADS = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
VGG_HEADS = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}


def _random(shapes: dict, seed: int = 0, positive: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        t = torch.randn(s, generator=g) * 0.05
        out[k] = t.abs() if positive else t
    return out


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    sd = _random(ALEX_FEATURES)
    sd.update({k: torch.zeros(s) for k, s in ALEX_CLASSIFIER.items()})
    torch.save(sd, d / LPIPS_BACKBONES["alex"].filename)
    torch.save(_random(ALEX_HEADS, 1, positive=True), d / LPIPS_HEADS["alex"].filename)
    return d


# --------------------------------------------------------------------------------------------
# LPIPS


def test_lpips_layout_matches_the_official_files():
    assert LPIPS("alex").backbone_keys() == ALEX_FEATURES
    assert LPIPS("alex").head_keys() == ALEX_HEADS
    assert LPIPS("vgg").head_keys() == VGG_HEADS
    tv = pytest.importorskip("torchvision")
    for net, ctor in (("alex", tv.models.alexnet), ("vgg", tv.models.vgg16)):
        with torch.device("meta"):  # shapes only, no 138 M-parameter initialisation
            tv_model = ctor(weights=None)
        want = {k: tuple(v.shape) for k, v in tv_model.state_dict().items() if k.startswith("features.")}
        assert LPIPS(net).backbone_keys() == want


def test_lpips_on_random_weights_is_a_distance(lpips_files):
    model = load_lpips("alex", search_dirs=[lpips_files], download_dir=lpips_files, allow_download=False)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 80, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 64, 80, 3), dtype=np.uint8)
    same = lpips_frames(a, a, model, device="cpu")
    d_ab = lpips_frames(a, b, model, device="cpu")
    d_ba = lpips_frames(b, a, model, device="cpu")
    assert same.shape == (3,) and np.allclose(same, 0.0, atol=1e-7)
    assert (d_ab > 1e-4).all() and np.allclose(d_ab, d_ba, rtol=1e-5)
    slight = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    assert (lpips_frames(a, slight, model, device="cpu") < d_ab).all()


def test_lpips_matches_the_official_implementation():
    lpips = pytest.importorskip("lpips")
    for net in ("alex", "vgg"):
        official = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()  # real heads
        sd = {k: v for k, v in official.state_dict().items() if k.startswith("lin") and not k.startswith("lins")}
        for name, p in official.net.named_parameters():  # sliceK.<torchvision index>.weight
            _, idx, kind = name.split(".")
            sd[f"features.{idx}.{kind}"] = p.detach()
        ours = LPIPS(net)
        ours.load_state_dict(sd, strict=True)
        x0 = torch.rand(2, 3, 64, 96) * 2 - 1
        x1 = torch.rand(2, 3, 64, 96) * 2 - 1
        with torch.no_grad():
            assert torch.allclose(ours(x0, x1), official(x0, x1).flatten(), atol=1e-6)


def test_lpips_loading_is_strict(tmp_path, lpips_files):
    import shutil

    for f in lpips_files.iterdir():
        shutil.copy(f, tmp_path / f.name)
    heads = torch.load(tmp_path / LPIPS_HEADS["alex"].filename)
    heads["lin5.model.1.weight"] = torch.zeros(1, 8, 1, 1)
    torch.save(heads, tmp_path / LPIPS_HEADS["alex"].filename)
    with pytest.raises(ValueError, match=r"Unexpected keys \(1\): lin5"):
        load_lpips("alex", search_dirs=[tmp_path], download_dir=tmp_path, allow_download=False)
    bad = torch.load(lpips_files / LPIPS_BACKBONES["alex"].filename)
    bad["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    torch.save(bad, tmp_path / LPIPS_BACKBONES["alex"].filename)
    with pytest.raises(ValueError, match="Shape mismatches"):
        LPIPS("alex").load_weights(tmp_path / LPIPS_BACKBONES["alex"].filename,
                                   lpips_files / LPIPS_HEADS["alex"].filename)


def test_lpips_and_fvd_are_skipped_offline(tmp_path, monkeypatch):
    monkeypatch.setattr("movingbg.eval.lpips_net._installed_heads", lambda net: None)
    with pytest.raises(WeightsNotFoundError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex", search_dirs=[tmp_path], download_dir=tmp_path, allow_download=False)
    with pytest.raises(WeightsNotFoundError, match=I3D_KINETICS400.sha256):
        load_i3d(search_dirs=[tmp_path], download_dir=tmp_path, allow_download=False)
    video = np.random.default_rng(0).integers(0, 256, (32, 24, 24, 3), dtype=np.uint8)
    res = evaluate(video, gt=video, metrics=["lpips", "fvd"], weight_dirs=[tmp_path], download_dir=tmp_path,
                   allow_download=False)
    for name in ("lpips", "fvd"):
        assert res[name].status == "skipped"
        assert res[name].summary.startswith("skipped: weights unavailable (Weight file '")
        assert "downloads are disabled" in res[name].reason
    # MOVINGBG_OFFLINE (set for the whole test session) disables downloads by default
    res = evaluate(video, gt=video, metrics=["lpips"], weight_dirs=[tmp_path], download_dir=tmp_path)
    assert res["lpips"].status == "skipped" and "downloads are disabled" in res["lpips"].reason


def test_lpips_runs_in_evaluate_with_local_weights(lpips_files):
    video = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    res = evaluate(video, gt=video, metrics=["lpips"], weight_dirs=[lpips_files], download_dir=lpips_files,
                   allow_download=False, device="cpu")
    assert res["lpips"].status == "ok" and res["lpips"].value == pytest.approx(0.0, abs=1e-7)


# --------------------------------------------------------------------------------------------
# I3D / FVD


def test_i3d_layout_is_that_of_the_converted_tf_hub_model():
    sd = {k: tuple(v.shape) for k, v in I3D().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(sd) == 287  # 57 conv+BN units x 5 tensors + logits weight and bias
    assert sd["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert sd["Conv3d_2c_3x3.bn.running_var"] == (192,)
    assert sd["Mixed_4b.b1b.conv3d.weight"] == (208, 96, 3, 3, 3)
    assert sd["Mixed_5c.b3b.conv3d.weight"] == (128, 832, 1, 1, 1)
    assert sd["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and sd["logits.conv3d.bias"] == (400,)
    assert not any(".b3a." in k for k in sd)  # the max-pool branch has no parameters


@pytest.fixture(scope="module")
def i3d(tmp_path_factory):
    """Random I3D saved the way the converted checkpoint is (no num_batches_tracked), loaded strictly."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in I3D().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("bn.weight"):
            sd[k] = torch.ones(v.shape)
        elif k.endswith("conv3d.weight"):
            sd[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        else:
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
    path = tmp_path_factory.mktemp("i3d") / I3D_KINETICS400.filename
    torch.save(sd, path)
    return path


def test_i3d_loads_strictly_and_reports_mismatches(i3d, tmp_path):
    model = load_i3d(search_dirs=[i3d.parent], download_dir=i3d.parent, allow_download=False)
    assert isinstance(model, I3D)
    sd = torch.load(i3d)
    sd["Mixed_3b.b9.conv3d.weight"] = sd.pop("Mixed_3b.b0.conv3d.weight")
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"Missing keys \(1\): Mixed_3b.b0.conv3d.weight.*Unexpected keys"):
        I3D().load_weights(tmp_path / "bad.pt")


def test_tf_same_padding_and_tf1_resize():
    assert _same_pad(224, 7, 2) == (2, 3)
    assert _same_pad(16, 7, 2) == (2, 3)
    assert _same_pad(56, 3, 2) == (0, 1)
    assert _same_pad(8, 1, 1) == (0, 0)
    const = np.full((1, 2, 5, 7, 3), 51, dtype=np.uint8)
    x = preprocess_clips(const, resolution=9)
    assert x.shape == (1, 3, 2, 9, 9) and torch.allclose(x, torch.full_like(x, 2 * 51 / 255 - 1))
    ramp = np.zeros((1, 1, 1, 4, 3), dtype=np.uint8)
    ramp[..., 0] = np.array([0, 60, 120, 180], dtype=np.uint8)
    x = preprocess_clips(np.broadcast_to(ramp, (1, 1, 4, 4, 3)).copy(), resolution=8)
    # TF1 resize_bilinear: source = destination * in / out, clamped at the last pixel
    want = np.array([0, 30, 60, 90, 120, 150, 180, 180]) * 2 / 255 - 1
    assert np.allclose(x[0, 0, 0, 0].numpy(), want, atol=1e-6)


def test_fvd_on_random_weights(i3d, monkeypatch):
    model = I3D().load_weights(i3d)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (18, 48, 64, 3), dtype=np.uint8)  # two 9-frame clips (I3D's minimum)
    b = np.clip(a.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
    seen = []

    def spy(clips, m, **kw):
        feats = i3d_features(clips, m, **kw)
        seen.append(feats)
        return feats

    monkeypatch.setattr("movingbg.eval.fvd.i3d_features", spy)
    res = fvd(a, b, model, clip_frames=9, device="cpu")
    assert res["num_generated_clips"] == 2 and res["num_real_clips"] == 2 and res["fvd"] > 0
    fa, fb = seen
    assert fa.shape == fb.shape == (2, 400) and np.isfinite(fa).all()
    assert res["fvd"] == pytest.approx(frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb)))
    assert frechet_distance(*gaussian_stats(fa), *gaussian_stats(fa)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=">= 2 clips"):
        fvd(a[:9], b, model, clip_frames=9)


# --------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_of_gaussians_matches_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 2.0, 6), rng.uniform(0.1, 2.0, 6)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2
    want = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(want, rel=1e-10)
    # identical Gaussians -> 0; scaled covariance c^2 S: (1 - c)^2 tr(S)
    a = rng.normal(size=(6, 6))
    s = a @ a.T
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu1, s, mu1, 4.0 * s) == pytest.approx(np.trace(s), rel=1e-9)
    # general case against scipy's matrix square root
    linalg = pytest.importorskip("scipy.linalg")
    b = rng.normal(size=(6, 6))
    s2m = b @ b.T
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s + s2m - 2 * linalg.sqrtm(s @ s2m).real)
    assert frechet_distance(mu1, s, mu2, s2m) == pytest.approx(ref, rel=1e-8)
    # rank-deficient covariances (fewer samples than dimensions, as with few FVD clips)
    f1, f2 = rng.normal(size=(3, 10)), rng.normal(size=(4, 10)) + 1.0
    d = frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))
    assert d > 0 and math.isfinite(d)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(f1[:1])
    with pytest.raises(ValueError, match="mu1/mu2"):
        frechet_distance(mu1, s, mu2[:3], s2m)
