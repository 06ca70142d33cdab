"""``python -m movingbg.repro`` end to end at smoke-test size: every stage runs for real (prepare, VAE
training, movingbg.train in a subprocess, progressive and sliding-window generation, metrics) and a
rerun resumes instead of redoing the work."""

import json

import numpy as np
import pytest

from movingbg.repro import ReproOptions, TEST_SEED0, camera_of, world_clip
from movingbg.repro.__main__ import QUICK, main


def test_world_splits_are_deterministic_and_varied():
    a, b = world_clip(3, 4, 64), world_clip(3, 4, 64)
    assert np.array_equal(a.frames, b.frames)
    cams = [camera_of(s, 64) for s in range(40)]
    assert len({(c["pan"], c["zoom"], c["rotation_deg"]) for c in cams}) == 40
    assert any(c["zoom"] != 0 for c in cams) and any(c["rotation_deg"] != 0 for c in cams)
    assert not np.array_equal(world_clip(0, 2, 64).frames, world_clip(TEST_SEED0, 2, 64).frames)


def test_world_motion_is_large_within_a_training_clip():
    """What the model must learn to follow is bigger than a latent cell (8 px) within an 8-frame clip: the
    figure's matte centroid moves 8+ px on average, and the background under camera motion is not static."""
    moves, bg = [], []
    for seed in range(12):
        clip = world_clip(seed, 8, 64)
        cx = [(a * np.arange(64)[None]).sum() / a.sum() for a in clip.alpha]
        moves.append(abs(cx[-1] - cx[0]))
        corners = np.array([[0.0, 0.0, 1.0], [63.0, 63.0, 1.0]])
        bg.append(np.abs(corners @ clip.bg_transforms[-1].T - corners[:, :2]).max())
    assert np.mean(moves) > 8 and min(bg) > 0.5, (np.round(moves, 1), np.round(bg, 1))


def test_options_are_checked():
    with pytest.raises(ValueError, match="variants"):
        ReproOptions(variants=("full", "nonsense"))
    with pytest.raises(ValueError, match="multiple of 32"):
        ReproOptions(size=48)
    assert main(["/nonexistent", "--set", "bogus=1"]) == 2


def test_quick_reproduction_runs_every_stage_and_resumes(tmp_path, capsys):
    pytest.importorskip("accelerate")
    wd = tmp_path / "repro"
    argv = [str(wd), "--quick", "--variants", "full,no_bg,sliding_window", "--set", "anchor_tracks=true",
            "--ship", str(tmp_path / "ship")]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| MovingBG (full) |" in table and "sliding window" in table
    res = json.loads((wd / "results.json").read_text())
    from movingbg.repro.experiment import TEST_TIME

    assert set(res["variants"]) == {"full", "no_bg", "sliding_window", *TEST_TIME}
    tt = res["variants"]
    assert tt["full_latent_handover"]["handover"] == "latent" and tt["tt_no_reference"]["reference"] is False
    assert tt["tt_no_tracks"]["bg_scale"] == 0 and tt["tt_sliding_window"]["method"] == "sliding_window"
    assert res["variants"]["sliding_window"]["method"] == "sliding_window"
    assert json.loads((wd / "runs" / "full" / "train.json").read_text())["anchor_tracks"] is True
    # trained in rounds of `parallel` (2) sharing the 2 threads: the last round's lone model gets both
    assert [json.loads((wd / "runs" / v / "train.json").read_text())["torch_threads"]
            for v in ("full", "no_bg", "sliding_window")] == [1, 1, 2]
    full = res["variants"]["full"]
    assert full["method"] == "progressive" and len(full["clips"]) == QUICK["test_videos"]
    for key in ("psnr", "ssim", "background_motion", "boundary_continuity", "drift"):
        assert full["mean"][key] is not None and np.isfinite(full["mean"][key]), key
    assert "lpips" in full["skipped"]  # offline: no weights, reported as skipped
    # withholding an input changes the output even of an untrained model (the inputs reach the network)
    assert tt["tt_no_reference"]["mean"]["psnr"] != full["mean"]["psnr"]
    shipped = sorted(str(p.relative_to(tmp_path / "ship")) for p in (tmp_path / "ship").rglob("*") if p.is_file())
    assert shipped == ["movingbg/movingbg_mini.json", "movingbg/movingbg_mini.safetensors",
                       "vae/movingbg_mini_vae.safetensors"]
    from movingbg.models.bundle import read_bundle_config

    cfg = read_bundle_config(tmp_path / "ship" / "movingbg" / "movingbg_mini.safetensors")
    assert cfg.vae_scale_factor == pytest.approx(res["vae"]["vae_scale_factor"])
    # a rerun skips every finished stage (nothing is retrained: the bundles keep their timestamps)
    stamp = (wd / "runs" / "full" / "movingbg_mini.safetensors").stat().st_mtime_ns
    assert main([str(wd), "--quick", "--variants", "full,sliding_window"]) == 0
    assert (wd / "runs" / "full" / "movingbg_mini.safetensors").stat().st_mtime_ns == stamp


def test_a_given_vae_replaces_the_vae_stage(tmp_path):
    """``--set vae=FILE``: the models are trained for that VAE (its scale factor, its test PSNR reported) and
    nothing is trained in its place; a VAE without the scale factor in its metadata is named and refused."""
    from safetensors.torch import load_file, save_file

    from movingbg.assets import MINI_BUNDLE, MINI_VAE
    from movingbg.models.bundle import read_bundle_config
    from movingbg.repro.experiment import train_vae_stage

    path, info = train_vae_stage(tmp_path, ReproOptions(vae=str(MINI_VAE), test_videos=2))
    assert path == MINI_VAE and not (tmp_path / "vae.safetensors").exists()
    assert info["vae_scale_factor"] == pytest.approx(read_bundle_config(MINI_BUNDLE).vae_scale_factor, rel=1e-5)
    assert 18 < info["psnr_test_db"] < 24  # README: ~20.5 dB on the test clips
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(MINI_VAE)), str(bare))
    with pytest.raises(ValueError, match="vae: .*movingbg_vae_scale_factor"):
        train_vae_stage(tmp_path, ReproOptions(vae=str(bare)))
    for bad in (tmp_path / "missing.safetensors", tmp_path):
        with pytest.raises(ValueError, match="vae: .* is not a .safetensors file"):
            train_vae_stage(tmp_path, ReproOptions(vae=str(bad)))
