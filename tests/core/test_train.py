"""Training (in this process): config checks, samples, loss wiring, overfitting a batch, export -> generate.

The model is the tiny config with narrow motion encoders, the VAE a tiny diffusers AutoencoderKL built
here, the data three 64 x 64 synthetic clips prepared with their ground-truth pose.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from movingbg.models.config import MovingBGConfig
from movingbg.prepare import PrepareOptions, prepare_folder
from movingbg.train import TrainConfig, load_config
from movingbg.train.data import ClipDataset, DataOptions, Geometry, StreamSampler

SIZE = 64
TINY = MovingBGConfig.tiny(encoder_channels=(8, 8, 16, 16))

logging.getLogger("diffusers").setLevel(logging.ERROR)


def make_workspace(root: Path) -> dict[str, Path]:
    """Three prepared synthetic clips (20 frames, 64 x 64) and a tiny VAE folder under ``root``."""
    from diffusers import AutoencoderKL

    from tests.core.test_prepare import write_synthetic

    for seed in range(3):
        write_synthetic(root / "videos", f"clip{seed}", seed, frames=20)
    prepare_folder(root / "videos", root / "cache", PrepareOptions(width=SIZE, height=SIZE, pose="none"),
                   progress=False)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=8,
                        latent_channels=4, sample_size=SIZE)
    vae.save_pretrained(str(root / "vae"))
    return {"root": root, "data": root / "cache", "vae": root / "vae"}


def config_dict(ws: dict[str, Path], out: Path, **overrides) -> dict:
    """A small, fast training config as the JSON a user would write."""
    cfg = {"data_dir": str(ws["data"]), "output_dir": str(out), "vae": str(ws["vae"]), "model": TINY.to_dict(),
           "clip_length": 8, "width": SIZE, "height": SIZE, "learning_rate": 1e-3, "max_steps": 4,
           "checkpoint_every": 2, "keep_last": 2, "num_workers": 0, "torch_threads": 1, "export_dtype": "fp32",
           "progress": False, "log_every": 1}
    cfg.update(overrides)
    return cfg


def make_config(ws, out, **overrides) -> TrainConfig:
    return TrainConfig.from_dict(config_dict(ws, out, **overrides))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trainer_for(ws, out, **overrides):
    pytest.importorskip("accelerate")
    from movingbg.train import Trainer

    return Trainer(make_config(ws, out, **overrides))


# ---- config -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1e-5}, "learning_rate"),
    ({"clip_length": 33}, "clip_length"),
    ({"width": 60}, "width"),
    ({"tracks_range": [50, 5]}, "tracks_range"),
    ({"blank_condition_prob": 1.5}, "blank_condition_prob"),
    ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"init": "bundle"}, "init_path"),
    ({"batch_size": 0}, "batch_size"),
    ({"high_noise_prob": 1.2}, "high_noise_prob"),
    ({"high_noise_min": 1000}, "high_noise_min"),
    ({"high_noise_min": 1.5}, "high_noise_min"),
    ({"reset_encoders": ["pose"]}, "reset_encoders"),
    ({"reset_encoders": "bg"}, "reset_encoders"),
    ({"reset_encoders": ["bg", "bg"]}, "reset_encoders"),
    ({"reset_encoders": ["bg"]}, "reset_encoders needs init"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_values_fail_when_the_config_is_built(ws, tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        make_config(ws, tmp_path / "out", **overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"data_dir": "/nonexistent/cache"}, "data_dir: folder not found"),
    ({"vae": "/nonexistent/vae"}, "vae: not found"),
    ({"init": "bundle", "init_path": "/nonexistent/x.safetensors", "model": None}, "init_path: not found"),
    ({"clip_encoder": "/nonexistent/clip"}, "clip_encoder: not found"),
    ({"clip_length": 24}, "data_dir: no prepared video has the 24 frames"),
    ({"width": 48}, "width and height must be multiples of 32"),
    ({"model": "/nonexistent/model.json"}, "model:"),
])
def test_bad_paths_and_data_fail_at_start(ws, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(ws, tmp_path / "out", **overrides).check_start()


def test_empty_data_dir_and_missing_fields(ws, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="data_dir: no prepared videos"):
        make_config(ws, tmp_path / "out", data_dir=str(tmp_path / "empty")).check_start()
    with pytest.raises(ValueError, match=r"missing required TrainConfig fields \['vae'\]"):
        TrainConfig.from_dict({"data_dir": "x", "output_dir": "y"})


def test_cli_rejects_bad_config_before_loading_anything(ws, tmp_path, caplog):
    from movingbg.train.__main__ import main

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config_dict(ws, tmp_path / "out", learning_rate=0)))
    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(path)]) == 2
    assert "learning_rate must be > 0" in caplog.text
    path.write_text(json.dumps(config_dict(ws, tmp_path / "out")))
    assert main(["--config", str(path), "--check"]) == 0
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["--config", str(path), "--set", "clip_length=40"]) == 2
    assert "clip_length must be in 2..32" in caplog.text
    assert not (tmp_path / "out").exists()


def test_yaml_config(ws, tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config_dict(ws, tmp_path / "out", freeze=["reference_unet.*"])))
    cfg = load_config(path, {"seed": 3})
    assert cfg.seed == 3 and cfg.freeze == ("reference_unet.*",) and cfg.model == TINY
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ---- data ---------------------------------------------------------------------------------------------

def test_samples_are_deterministic_and_follow_the_paper(ws):
    opts = DataOptions(clip_length=8, frame_stride=2, width=SIZE, height=SIZE, tracks_range=(5, 50), seed=7,
                       blank_condition_prob=0.5, drop_joint_prob=0.5)
    ds = ClipDataset(str(ws["data"]), opts)
    a, b = ds[11], ds[11]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["frames"].shape == (8, SIZE, SIZE, 3) and a["pose"].shape == a["tracks"].shape == a["frames"].shape
    assert a["reference"].shape == (SIZE, SIZE, 3) and a["index"] == 11
    flags = {k: set() for k in ("blank", "drop_clip", "drop_reference")}
    counts = []
    for g in range(40):
        choice, _ = ds.choose(g)
        assert np.diff(choice.frames).tolist() == [2] * 7
        assert choice.reference not in range(choice.frames[0], choice.frames[-1] + 1), "reference from elsewhere"
        assert choice.drop_clip == choice.drop_reference  # only joint drops configured here
        for k in flags:
            flags[k].add(getattr(choice, k))
        maps = ds[g]["tracks"].reshape(-1, 3)
        counts.append(len({tuple(c) for c in maps[maps.any(axis=1)]}))
    assert all(v == {True, False} for v in flags.values())
    assert max(counts) <= 50 and min(counts) >= 1
    assert sorted(ds._video_of(g) for g in range(3)) == [0, 1, 2], "each epoch is a permutation of the videos"


def test_crop_geometry_moves_pose_and_tracks_with_the_frames(ws):
    ds = ClipDataset(str(ws["data"]), DataOptions(clip_length=4, width=32, height=SIZE, tracks_range=(999, 999),
                                                  track_radius=1))
    choice, rng = ds.choose(0)
    item = ds.render(choice, rng)
    video = ds.videos[choice.video]
    full = video.frames(list(choice.frames))
    np.testing.assert_array_equal(item["frames"], full[:, :, 16:48])  # scale 1, centre crop of 32 columns
    geo = Geometry(SIZE, SIZE, 32, SIZE)
    assert geo.pose(video.poses()[0]).people[0].body[1, 0] == pytest.approx(video.poses()[0].people[0].body[1, 0] - 16)
    tracks = video.tracks()
    t0 = choice.frames[0]
    drawn = item["tracks"][0]
    for x, y in tracks.points[t0][tracks.visible[t0]]:
        if 18 <= x < 46 and 2 <= y < 62:
            assert drawn[int(round(y)), int(round(x - 16))].any(), "a visible track must be drawn where it moved"


def test_track_trail_draws_where_the_points_came_from_before_the_clip(ws):
    base = dict(clip_length=4, width=SIZE, height=SIZE, tracks_range=(999, 999), track_radius=1)
    plain = ClipDataset(str(ws["data"]), DataOptions(**base))
    trailed = ClipDataset(str(ws["data"]), DataOptions(**base, track_trail=3))
    seen_history = False
    for g in range(6):
        choice, rng = trailed.choose(g)
        a, b = plain.render(choice, plain.choose(g)[1])["tracks"], trailed.render(choice, rng)["tracks"]
        assert a.shape == b.shape == (4, SIZE, SIZE, 3)
        # discs are drawn over the trails: every disc pixel is the same; trails only add pixels
        disc = a.any(axis=-1)
        np.testing.assert_array_equal(b[disc], a[disc])
        extra = b.any(axis=-1) & ~disc
        tracks = trailed.videos[choice.video].tracks()
        t0, back = choice.frames[0], max(0, choice.frames[0] - 3)
        both = tracks.visible[t0] & tracks.visible[back]
        moved = np.abs(tracks.points[t0, both] - tracks.points[back, both]).max(initial=0.0)
        if t0 > 0 and moved > 2.5:  # the first map's trail comes from frames before the clip
            assert extra[0].any(), "frame 0 of a clip must show the trail from the frames before it"
            seen_history = True
    assert seen_history, "the fixture's clips never start late enough with motion: test not exercised"


def test_track_trail_is_the_models_and_a_run_can_set_it(ws, tmp_path):
    assert make_config(ws, tmp_path).model_config().track_trail == 0
    assert make_config(ws, tmp_path, track_trail=5).model_config().track_trail == 5
    model = dict(TINY.to_dict(), track_trail=2)
    assert make_config(ws, tmp_path, model=model).model_config().track_trail == 2
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="track_trail"):
            make_config(ws, tmp_path, track_trail=bad)
    with pytest.raises(ValueError, match="track_trail"):
        TINY.replace(track_trail=-2)


def _colours(m: np.ndarray) -> set:
    px = m.reshape(-1, 3)
    return {tuple(c) for c in px[px.any(axis=1)]}


def test_anchor_tracks_draws_only_tracks_seen_in_the_condition_frame(ws, tmp_path):
    """With ``anchor_tracks`` every disc of a clip's track maps is already in its first map (the condition frame),
    so it can be followed back to the content it marks; without it, tracks born mid-clip are drawn too (the
    fixture's KLT tracks are re-seeded), which this checks happens, so the test exercises a difference."""
    base = dict(clip_length=6, width=SIZE, height=SIZE, tracks_range=(8, 8), track_radius=1)
    plain = ClipDataset(str(ws["data"]), DataOptions(**base))
    anchored = ClipDataset(str(ws["data"]), DataOptions(**base, anchor_tracks=True))
    unanchored_seen = 0
    for g in range(12):
        choice, rng = anchored.choose(g)
        a, b = plain.render(choice, plain.choose(g)[1])["tracks"], anchored.render(choice, rng)["tracks"]
        assert _colours(b[0]), "anchored maps must still draw tracks"
        assert all(_colours(m) <= _colours(b[0]) for m in b[1:]), g
        unanchored_seen += any(not _colours(m) <= _colours(a[0]) for m in a[1:])
    assert unanchored_seen, "no clip of the fixture draws a track born mid-clip: test not exercised"
    assert make_config(ws, tmp_path, anchor_tracks=True).anchor_tracks is True
    with pytest.raises(ValueError, match="anchor_tracks"):
        make_config(ws, tmp_path, anchor_tracks="yes")


def test_stream_sampler_shards_and_resumes():
    take = lambda s, n: [next(it) for it in [iter(s)] for _ in range(n)]  # noqa: E731
    r0, r1 = take(StreamSampler(0, 2, 3), 9), take(StreamSampler(1, 2, 3), 9)
    assert sorted(r0 + r1) == list(range(18)) and r0[:3] == [0, 1, 2] and r1[:3] == [3, 4, 5]
    assert take(StreamSampler(1, 2, 3, start=2), 3) == r1[6:9]


# ---- the model wiring -----------------------------------------------------------------------------------

def _randomised_tiny():
    from movingbg.models.generator import MovingBGModel

    torch.manual_seed(0)
    net = MovingBGModel(TINY)
    with torch.no_grad():
        net.denoising_unet.conv_in.weight[:, 4:].normal_(0, 0.3)
        for enc in (net.fg_encoder, net.bg_encoder):
            enc.conv_out.weight.normal_(0, 0.05)
    return net


def _inputs(batch=2, frames=4):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 4, frames, 8, 8, generator=g), torch.tensor([10, 700][:batch]),
            dict(ref_latent=torch.randn(batch, 4, 8, 8, generator=g),
                 clip_embeds=torch.randn(batch, 1, 32, generator=g),
                 clip_keep=torch.tensor([True, False][:batch]), cond_latent=torch.randn(batch, 4, 8, 8, generator=g),
                 cond_keep=torch.tensor([False, True][:batch]),
                 pose_maps=torch.rand(batch, 3, frames, SIZE, SIZE, generator=g),
                 track_maps=torch.rand(batch, 3, frames, SIZE, SIZE, generator=g), use_bank=True))


def test_per_sample_blank_condition_and_clip_drop_match_separate_calls():
    from movingbg.models.reference import ReferenceBank
    from movingbg.train.trainer import TrainingModule

    net = _randomised_tiny()
    noisy, t, kw = _inputs()
    with torch.no_grad():
        out = TrainingModule(net)(noisy, t, **kw)
        bank = net.encode_reference(kw["ref_latent"], kw["clip_embeds"])
        part = lambda i: ReferenceBank({k: v[i:i + 1] for k, v in bank.features.items()})  # noqa: E731
        blank0 = net(noisy[:1], t[:1], clip_embeds=kw["clip_embeds"][:1], bank=part(0), cond_latent=None,
                     pose_maps=kw["pose_maps"][:1], track_maps=kw["track_maps"][:1])
        noclip1 = net(noisy[1:], t[1:], clip_embeds=None, bank=part(1), cond_latent=kw["cond_latent"][1:],
                      pose_maps=kw["pose_maps"][1:], track_maps=kw["track_maps"][1:])
    torch.testing.assert_close(out[:1], blank0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1:], noclip1, atol=1e-5, rtol=1e-4)


def test_per_sample_reference_drop_matches_separate_calls():
    """``use_bank`` per sample: sample 0 without the bank, sample 1 with it, in one forward; the
    reference U-Net gets gradients only through the kept sample."""
    from movingbg.models.reference import ReferenceBank
    from movingbg.train.trainer import TrainingModule

    net = _randomised_tiny()
    noisy, t, kw = _inputs()
    kw = dict(kw, use_bank=torch.tensor([False, True]))
    one = lambda i: dict(clip_embeds=kw["clip_embeds"][i:i + 1] * kw["clip_keep"][i],  # noqa: E731
                         cond_latent=kw["cond_latent"][i:i + 1] if kw["cond_keep"][i] else None,
                         pose_maps=kw["pose_maps"][i:i + 1], track_maps=kw["track_maps"][i:i + 1])
    with torch.no_grad():
        out = TrainingModule(net)(noisy, t, **kw)
        bank = net.encode_reference(kw["ref_latent"], kw["clip_embeds"])
        nobank0 = net(noisy[:1], t[:1], bank=None, **one(0))
        bank1 = net(noisy[1:], t[1:], bank=ReferenceBank({k: v[1:] for k, v in bank.features.items()}), **one(1))
        with_bank0 = net(noisy[:1], t[:1], bank=ReferenceBank({k: v[:1] for k, v in bank.features.items()}), **one(0))
        none = TrainingModule(net)(noisy, t, **dict(kw, use_bank=torch.tensor([False, False])))
    torch.testing.assert_close(out[:1], nobank0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1:], bank1, atol=1e-5, rtol=1e-4)
    assert (with_bank0 - nobank0).abs().max() > 1e-3              # the drop did change sample 0
    torch.testing.assert_close(none, TrainingModule(net)(noisy, t, **dict(kw, use_bank=False)), atol=0, rtol=0)

    def ref_grad(use_bank, weights):
        net.zero_grad(set_to_none=True)
        out = TrainingModule(net)(noisy, t, **dict(kw, use_bank=use_bank))
        (out.square() * weights.view(-1, 1, 1, 1, 1)).mean().backward()
        return {k: p.grad.clone() for k, p in net.reference_unet.named_parameters() if p.grad is not None}

    mixed = ref_grad(torch.tensor([False, True]), torch.tensor([1.0, 1.0]))
    only_kept = ref_grad(True, torch.tensor([0.0, 1.0]))         # same loss on sample 1, both with the bank
    assert mixed.keys() == only_kept.keys() and len(mixed) > 100
    for k in mixed:
        torch.testing.assert_close(mixed[k], only_kept[k], atol=1e-6, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients_into_both_unets():
    from movingbg.train.trainer import TrainingModule

    net = _randomised_tiny()
    noisy, t, kw = _inputs()

    def grads(checkpointing):
        n = copy.deepcopy(net)
        if checkpointing:
            n.denoising_unet.enable_gradient_checkpointing()
            n.reference_unet.enable_gradient_checkpointing()
        TrainingModule(n)(noisy, t, **kw).square().mean().backward()
        return {k: p.grad for k, p in n.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and sum(k.startswith("reference_unet.") for k in ckpt) > 100
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], atol=1e-6, rtol=1e-5)


# ---- training ------------------------------------------------------------------------------------------

def test_high_noise_prob_draws_that_share_of_timesteps_from_the_high_range(ws, tmp_path):
    plain = trainer_for(ws, tmp_path / "plain")
    off = trainer_for(ws, tmp_path / "off", high_noise_prob=0.0, high_noise_min=900)
    half = trainer_for(ws, tmp_path / "half", high_noise_prob=0.5, high_noise_min=900)
    indices = range(400)
    t_plain, t_off, t_half = (tr._draws(indices, 2, (8, 8))[3] for tr in (plain, off, half))
    # off: the very draws of a run without the option (noise included), so old runs resume unchanged
    assert torch.equal(t_plain, t_off)
    assert torch.equal(plain._draws(indices[:3], 2, (8, 8))[2], off._draws(indices[:3], 2, (8, 8))[2])
    assert 0.05 < (t_plain >= 900).float().mean() < 0.15  # uniform: ~10 %
    # half of the samples from 900..999, the rest uniform: ~55 % at or above 900, all in range
    assert 0.45 < (t_half >= 900).float().mean() < 0.65, (t_half >= 900).float().mean()
    assert int(t_half.min()) >= 0 and int(t_half.max()) <= 999 and (t_half < 900).any()
    every = trainer_for(ws, tmp_path / "every", high_noise_prob=1.0, high_noise_min=990)
    assert int(every._draws(range(50), 2, (8, 8))[3].min()) >= 990


def test_overfits_a_fixed_batch(ws, tmp_path):
    from torch.utils.data import default_collate

    trainer = trainer_for(ws, tmp_path / "out", blank_condition_prob=0.0, drop_joint_prob=0.0, max_grad_norm=0.0)
    batch = default_collate([trainer.dataset[0]])
    with torch.no_grad():
        first = trainer.compute_loss(batch).item()
    losses = [trainer.train_step([batch]) for _ in range(10)]
    with torch.no_grad():
        last = trainer.compute_loss(batch).item()
    assert last < 0.5 * first, (first, losses, last)


def test_gradient_accumulation_equals_the_bigger_batch(ws, tmp_path):
    # adam_epsilon = 1: updates are ~linear in the gradient, so float-order noise is not magnified
    opt = dict(lr_warmup_steps=4, drop_joint_prob=0.0, learning_rate=0.1, adam_epsilon=1.0, weight_decay=0.0)
    big = trainer_for(ws, tmp_path / "big", batch_size=2, **opt)
    small = trainer_for(ws, tmp_path / "small", batch_size=1, gradient_accumulation_steps=2, **opt)
    assert small.learning_rate(0) == pytest.approx(0.025) and small.learning_rate(9) == pytest.approx(0.1)
    start = {k: v.detach().clone() for k, v in big.net.state_dict().items()}
    big_it, small_it = iter(big.make_loader()), iter(small.make_loader())
    for _ in range(2):
        a = big.train_step([next(big_it)])
        b = small.train_step([next(small_it), next(small_it)])
        assert b == pytest.approx(a, rel=1e-5)
    p, q = big.net.state_dict(), small.net.state_dict()
    moved = max((p[k] - start[k]).abs().max().item() for k in p)
    differ = max((p[k] - q[k]).abs().max().item() for k in p)
    assert moved > 1e-5 and differ < 1e-3 * moved, (moved, differ)


def test_cached_latents_give_the_same_losses(ws, tmp_path):
    """cache_latents: posterior mean/std stored once per video, sampled with each sample's own noise ->
    the losses of the uncached run; one encoding per video, not per step."""
    from torch.utils.data import default_collate

    plain = trainer_for(ws, tmp_path / "plain", batch_size=2)
    cached = trainer_for(ws, tmp_path / "cached", batch_size=2, cache_latents=True)
    cached.net.load_state_dict(plain.net.state_dict())
    assert cached.latent_cache is not None and plain.latent_cache is None
    for start in (0, 2, 4):
        batch = default_collate([plain.dataset[start], plain.dataset[start + 1]])
        with torch.no_grad():
            a, b = plain.compute_loss(batch).item(), cached.compute_loss(batch).item()
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), start
    assert 1 <= len(cached.latent_cache) <= len(cached.dataset.videos)
    # the posterior is SAMPLED (std > 0), not replaced by its mean
    mean, std = cached.latent_cache.video(0)
    assert std is not None and float(std.min()) > 0
    assert not torch.equal(cached.latent_cache.latents(0, [0, 1], torch.randn(2, *mean.shape[1:])), mean[:2])


def _encoder_calls(vae) -> list:
    calls: list = []
    vae.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_latent_cache_on_disk_is_written_once_and_read_back(ws, tmp_path, caplog):
    """latent_cache_dir: the first trainer encodes every video into one file each before training; a
    second one (a resume, another process) reads them without a single encoder call and gets the same
    latents and losses; a damaged file is encoded again; other VAE weights get another folder."""
    from torch.utils.data import default_collate

    from movingbg.train.latents import vae_fingerprint

    folder = tmp_path / "latents"
    first = trainer_for(ws, tmp_path / "a", batch_size=2, cache_latents=True, latent_cache_dir=str(folder))
    n = len(first.dataset.videos)
    files = sorted(first.latent_cache.folder.glob("*.safetensors"))
    assert [f.stem for f in files] == sorted(v.name for v in first.dataset.videos) and n == 3
    assert first.latent_cache.folder.parent == folder
    memory = trainer_for(ws, tmp_path / "m", batch_size=2, cache_latents=True)  # the in-memory cache
    second = trainer_for(ws, tmp_path / "b", batch_size=2, cache_latents=True, latent_cache_dir=str(folder))
    calls = _encoder_calls(second.vae)
    memory.net.load_state_dict(second.net.state_dict())
    for start in (0, 2):
        batch = default_collate([second.dataset[start], second.dataset[start + 1]])
        with torch.no_grad():
            a, b = memory.compute_loss(batch).item(), second.compute_loss(batch).item()
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), start
    for i in range(n):
        torch.testing.assert_close(second.latent_cache.video(i)[0], memory.latent_cache.video(i)[0])
        torch.testing.assert_close(second.latent_cache.video(i)[1], memory.latent_cache.video(i)[1])
    assert calls == [], "the second trainer encoded although every video was on disk"

    # a truncated file: a warning, that video (and only it) encoded again and rewritten at start-up
    damaged = second.latent_cache.path(1)
    damaged.write_bytes(damaged.read_bytes()[:100])
    before = {f.name: f.stat().st_mtime_ns for f in files}
    with caplog.at_level(logging.WARNING, logger="movingbg.train.latents"):
        third = trainer_for(ws, tmp_path / "c", batch_size=2, cache_latents=True, latent_cache_dir=str(folder))
    assert "cannot read" in caplog.text and damaged.name in caplog.text
    after = {f.name: f.stat().st_mtime_ns for f in files}
    assert [k for k in before if after[k] != before[k]] == [damaged.name]
    calls = _encoder_calls(third.vae)
    for i in range(n):
        torch.testing.assert_close(third.latent_cache.video(i)[0], memory.latent_cache.video(i)[0])
    assert calls == []

    # a video prepared anew (its meta.json changed): that video encoded again, the others read
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ws["data"], data)
    renewed = third.dataset.videos[2].name
    (data / renewed / "meta.json").write_text((data / renewed / "meta.json").read_text() + "\n")
    before = {f.name: f.stat().st_mtime_ns for f in files}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="movingbg.train.latents"):
        trainer_for(ws, tmp_path / "d", batch_size=2, cache_latents=True, latent_cache_dir=str(folder),
                    data_dir=str(data))
    assert "written for an older version" in caplog.text and renewed in caplog.text
    after = {f.name: f.stat().st_mtime_ns for f in files}
    assert [k for k in before if after[k] != before[k]] == [f"{renewed}.safetensors"]

    # other weights, other fingerprint
    fp = vae_fingerprint(third.vae)
    with torch.no_grad():
        next(third.vae.encoder.parameters()).add_(1e-3)
    assert vae_fingerprint(third.vae) != fp


def test_latent_cache_dir_needs_cache_latents(ws, tmp_path):
    with pytest.raises(ValueError, match="latent_cache_dir is set but cache_latents is false"):
        make_config(ws, tmp_path / "out", latent_cache_dir=str(tmp_path / "lat"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="latent_cache_dir: cannot write .*a_file"):
        trainer_for(ws, tmp_path / "out", cache_latents=True, latent_cache_dir=str(blocker))


def test_cache_latents_must_be_a_bool(ws, tmp_path):
    with pytest.raises(ValueError, match="cache_latents must be true or false"):
        make_config(ws, tmp_path / "out", cache_latents="yes")


def test_freeze_patterns(ws, tmp_path):
    from torch.utils.data import default_collate

    trainer = trainer_for(ws, tmp_path / "out", freeze=["reference_unet.*", "fg_encoder.*"])
    frozen = {n: p.detach().clone() for n, p in trainer.net.named_parameters() if n.startswith("reference_unet.")}
    for n, p in trainer.net.named_parameters():
        assert p.requires_grad != n.startswith(("reference_unet.", "fg_encoder.")), n
    trainer.train_step([default_collate([trainer.dataset[0]])])
    for n, p in trainer.net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n])
    with pytest.raises(ValueError, match="freeze: pattern 'nothing.*' matches no parameter"):
        trainer_for(ws, tmp_path / "out2", freeze=["nothing.*"])


def test_tensorboard_missing_is_skipped_with_a_warning(ws, tmp_path, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    trainer = trainer_for(ws, tmp_path / "out", tensorboard=True)
    with caplog.at_level(logging.WARNING):
        assert trainer.writer() is None and trainer.writer() is None
    assert caplog.text.count("tensorboard is not installed") == 1


def test_run_checkpoints_samples_exports_and_the_bundle_generates(ws, tmp_path):
    from movingbg.models.bundle import load_bundle
    from movingbg.pipelines import GenerationOptions, SchedulerOptions, generate
    from movingbg.train.checkpoint import list_checkpoints
    from movingbg.train.export import export_checkpoint
    from movingbg.train.export import main as export_main

    out = tmp_path / "run"
    trainer = trainer_for(ws, out, max_steps=3, checkpoint_every=1, keep_last=2, ema_decay=0.5, sample_every=3,
                          sample_steps=2, tensorboard=True, export_dir=str(tmp_path / "models" / "movingbg"))
    result = trainer.run()
    assert result.steps == 3 and np.isfinite(result.final_loss) and len(result.losses) == 3
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002", "step-00000003"]
    assert (out / "samples" / "step-00000003.mp4").is_file()
    if _has("tensorboard"):
        assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    bundle = result.export_path
    assert bundle == tmp_path / "models" / "movingbg" / "movingbg_trained.safetensors"
    assert bundle.with_suffix(".json").is_file()

    model = load_bundle(bundle).eval()
    assert model.config == TINY
    ema = trainer.ema.shadow["denoising_unet.conv_in.weight"]
    torch.testing.assert_close(model.state_dict()["denoising_unet.conv_in.weight"], ema)

    again = export_checkpoint(out, tmp_path / "again.safetensors", dtype="fp32")
    want, got = _tensors(bundle), _tensors(again)
    assert got.keys() == want.keys() and all(torch.equal(v, want[k]) for k, v in got.items())
    assert export_main([str(out / "checkpoints" / "step-00000003"), str(tmp_path / "raw.safetensors"), "--no-ema"]) == 0
    raw = load_bundle(tmp_path / "raw.safetensors")
    assert raw.denoising_unet.conv_in.weight.dtype == torch.float16

    start = trainer_for(ws, tmp_path / "again", init="bundle", init_path=str(bundle), model=None)
    assert start.model_config == TINY
    retrail = trainer_for(ws, tmp_path / "trail", init="bundle", init_path=str(bundle), model=None, track_trail=3)
    assert retrail.net.config == TINY.replace(track_trail=3) and retrail.dataset.options.track_trail == 3
    assert all(torch.equal(v, want[k]) for k, v in start.net.state_dict().items())
    fresh = trainer_for(ws, tmp_path / "fresh", init="bundle", init_path=str(bundle), model=None,
                        reset_encoders=["bg"]).net.state_dict()
    assert fresh.keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in fresh.items() if not k.startswith("bg_encoder."))
    assert not torch.equal(fresh["bg_encoder.conv_in.weight"], want["bg_encoder.conv_in.weight"])
    assert not fresh["bg_encoder.conv_out.weight"].any() and not fresh["bg_encoder.conv_out.bias"].any()

    g = torch.Generator().manual_seed(0)
    res = generate(model, ref_latent=torch.randn(1, 4, 8, 8, generator=g), clip_embeds=None,
                   pose_maps=torch.rand(6, 3, SIZE, SIZE, generator=g),
                   track_maps=torch.rand(6, 3, SIZE, SIZE, generator=g),
                   num_frames=6, options=GenerationOptions(steps=2, cfg_scale=2.0, clip_length=4, handover="latent",
                                                           scheduler=SchedulerOptions()))
    assert res.latents.shape == (6, 4, 8, 8) and torch.isfinite(res.latents).all()


def test_clip_image_encoder_and_single_file_vae(ws, tmp_path):
    transformers = pytest.importorskip("transformers")
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file
    from torch.utils.data import default_collate

    from movingbg.train.encoders import load_vae

    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(str(tmp_path / "clip"))
    trainer = trainer_for(ws, tmp_path / "out", clip_encoder=str(tmp_path / "clip"))
    batch = default_collate([trainer.dataset[0]])
    emb = trainer.clip(torch.zeros(2, 3, SIZE, SIZE))
    assert emb.shape == (2, 1, 32)
    assert np.isfinite(trainer.train_step([batch]))

    cfg64 = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                          num_attention_heads=2, image_size=32, patch_size=8, projection_dim=64)
    transformers.CLIPVisionModelWithProjection(cfg64).save_pretrained(str(tmp_path / "clip64"))
    with pytest.raises(ValueError, match="clip_encoder: projection size 64 differs"):
        trainer_for(ws, tmp_path / "out2", clip_encoder=str(tmp_path / "clip64"))

    vae = AutoencoderKL(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    loaded = load_vae(tmp_path / "vae.safetensors")
    assert loaded.config.block_out_channels == (32, 32, 32, 32) and loaded.config.layers_per_block == 1
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean)
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "junk.safetensors"))
    with pytest.raises(ValueError, match="vae"):
        load_vae(tmp_path / "junk.safetensors")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
