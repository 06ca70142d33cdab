"""MovingBG network: equivalence with diffusers at init, conditioning paths, ablations, bundles."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import numpy as np
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from movingbg.models.bundle import (
    WeightLayoutError,
    empty_model,
    load_bundle,
    model_from_state_dict,
    read_bundle_config,
    save_bundle,
)
from movingbg.models.config import MotionModuleConfig, MovingBGConfig
from movingbg.models.convert import build_model_from_diffusers
from movingbg.models.encoders import MotionEncoder
from movingbg.models.generator import MovingBGModel
from movingbg.models.reference import PassThroughAttnProcessor, ReferenceAttnProcessor, ReferenceBank

CFG = MovingBGConfig.tiny()
B, F, H, W = 2, 4, 8, 8  # latent size; pixel maps are 8x larger
ATOL = 1e-5

logging.getLogger("diffusers").setLevel(logging.ERROR)


pytestmark = pytest.mark.usefixtures("single_thread")


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _adapter(config: MovingBGConfig) -> MotionAdapter:
    return MotionAdapter(
        block_out_channels=config.block_out_channels,
        motion_layers_per_block=config.layers_per_block,
        motion_num_attention_heads=config.motion.num_attention_heads,
        motion_norm_num_groups=config.unet["norm_num_groups"],
        motion_max_seq_length=config.motion.max_seq_length,
        use_motion_mid_block=config.motion.use_mid_block,
    )


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**CFG.unet_kwargs()).eval()
    ref = UNet2DConditionModel(**CFG.unet_kwargs()).eval()
    adapter = _adapter(CFG).eval()
    return unet, ref, adapter


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return {
        "noisy": torch.randn(B, 4, F, H, W, generator=g),
        "clip": torch.randn(B, 1, CFG.cross_attention_dim, generator=g),
        "ref": torch.randn(B, 4, H, W, generator=g),
        "cond": torch.randn(B, 4, H, W, generator=g),
        "pose": torch.rand(B, 3, F, 8 * H, 8 * W, generator=g),
        "track": torch.rand(B, 3, F, 8 * H, 8 * W, generator=g),
    }


def _run(model, inp, *, bank=None, **kw):
    args = dict(clip_embeds=inp["clip"], bank=bank, cond_latent=inp["cond"], pose_maps=inp["pose"],
                track_maps=inp["track"])
    args.update(kw)
    with torch.no_grad():
        return model(inp["noisy"], 321, **args)


# ---- config ------------------------------------------------------------------------------------
def test_config_json_round_trip():
    ablated = CFG.replace(use_bg=False, motion=MotionModuleConfig(use_mid_block=False))
    for cfg in (MovingBGConfig.tiny(), MovingBGConfig.sd15(), ablated):
        again = MovingBGConfig.from_json(cfg.to_json())
        assert again == cfg and hash(again) == hash(cfg)
        assert json.loads(again.to_json()) == json.loads(cfg.to_json())
        assert copy.deepcopy(cfg) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(TypeError):
        CFG.unet["sample_size"] = 4  # read-only
    assert CFG.in_channels == 9 and CFG.replace(use_concat=False).in_channels == 4
    with pytest.raises(ValueError, match="unknown"):
        MovingBGConfig.from_dict({**CFG.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="upcast_attention"):
        MovingBGConfig.tiny(unet={**CFG.unet, "upcast_attention": True})


# ---- equivalence with diffusers at init --------------------------------------------------------
def test_initial_model_equals_diffusers_unet_motion_model(parts, inputs):
    unet, ref, adapter = parts
    model = build_model_from_diffusers(_clone(unet), _clone(ref), _clone(adapter), CFG).eval()
    baseline = UNetMotionModel.from_unet2d(unet, adapter).eval()
    with torch.no_grad():
        expected = baseline(inputs["noisy"], 321, encoder_hidden_states=inputs["clip"].repeat_interleave(F, 0)).sample
    plain = _run(model, inputs, cond_latent=None, pose_maps=None, track_maps=None)
    # zero concat channels + zero encoder outputs: feeding them changes nothing
    fed = _run(model, inputs)
    assert plain.shape == (B, 4, F, H, W)
    torch.testing.assert_close(plain, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(fed, expected, atol=ATOL, rtol=0)
    assert torch.count_nonzero(model.denoising_unet.conv_in.weight[:, 4:]) == 0


def test_fresh_model_has_neutral_new_parts():
    model = MovingBGModel(CFG)
    assert model.denoising_unet.conv_in.weight.shape[1] == 9
    assert torch.count_nonzero(model.denoising_unet.conv_in.weight[:, 4:]) == 0
    for enc in (model.fg_encoder, model.bg_encoder):
        assert torch.count_nonzero(enc.conv_out.weight) == 0 and torch.count_nonzero(enc.conv_out.bias) == 0
    assert model.reference_unet.conv_out.__class__.__name__ == "Identity"
    assert not any(k.startswith(("conv_out", "conv_norm_out")) for k in model.reference_unet.state_dict())


def test_clip_none_is_zero_embedding(parts, inputs):
    unet, ref, adapter = parts
    model = build_model_from_diffusers(_clone(unet), _clone(ref), _clone(adapter), CFG).eval()
    zeros = torch.zeros_like(inputs["clip"])
    torch.testing.assert_close(_run(model, inputs, clip_embeds=None), _run(model, inputs, clip_embeds=zeros),
                               atol=0, rtol=0)


# ---- reference attention -----------------------------------------------------------------------
def test_bank_keys_are_the_spatial_self_attention_paths(parts, inputs):
    unet, ref, adapter = parts
    model = build_model_from_diffusers(_clone(unet), _clone(ref), _clone(adapter), CFG).eval()
    den = {n for n, _ in model.denoising_unet.named_modules() if n.endswith(".attn1") and "motion_modules" not in n}
    wr = {n for n, _ in model.reference_unet.named_modules() if n.endswith(".attn1")}
    with torch.no_grad():
        bank = model.encode_reference(inputs["ref"], inputs["clip"])
    assert set(bank.keys()) == den == wr == set(model.reference_paths) and len(den) == 7
    for name, mod in model.denoising_unet.named_modules():
        if name in den:
            assert isinstance(mod.processor, ReferenceAttnProcessor) and mod.processor.path == name
        elif name.endswith(".attn2") and "motion_modules" not in name:
            assert isinstance(mod.processor, PassThroughAttnProcessor)
        elif name.endswith((".attn1", ".attn2")):  # temporal attention untouched
            assert not isinstance(mod.processor, (ReferenceAttnProcessor, PassThroughAttnProcessor))
    # each entry is the norm1 output of the reference block at that path: (B, h*w, C)
    store = {}
    hooks = [model.reference_unet.get_submodule(p.rsplit(".", 1)[0]).norm1.register_forward_hook(
        lambda m, a, o, p=p: store.__setitem__(p, o)) for p in bank.keys()]
    with torch.no_grad():
        model.encode_reference(inputs["ref"], inputs["clip"])
    for h in hooks:
        h.remove()
    for p in bank.keys():
        torch.testing.assert_close(bank.features[p], store[p], atol=0, rtol=0)


def test_reference_pairs_by_path_not_shape(parts, inputs):
    unet, ref, adapter = parts
    model = build_model_from_diffusers(_clone(unet), _clone(ref), _clone(adapter), CFG).eval()
    with torch.no_grad():
        bank = model.encode_reference(inputs["ref"], inputs["clip"])
    a = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    b = "up_blocks.2.attentions.1.transformer_blocks.0.attn1"
    assert bank.features[a].shape == bank.features[b].shape  # same channels and tokens
    swapped = ReferenceBank({**bank.features, a: bank.features[b], b: bank.features[a]})
    out, out_swapped = _run(model, inputs, bank=bank), _run(model, inputs, bank=swapped)
    assert (out - out_swapped).abs().max() > 1e-4
    model.denoising_unet.set_attn_processor(AttnProcessor2_0())  # e.g. another tool resets the processors
    torch.testing.assert_close(_run(model, inputs, bank=bank), out, atol=0, rtol=0)  # re-installed
    with pytest.raises(ValueError, match="mid_block.attentions.0.transformer_blocks.0.attn1"):
        _run(model, inputs, bank={k: v for k, v in bank.features.items() if not k.startswith("mid_block")})


def test_reference_attention_math():
    """One Attention with the processor == softmax(q [k_self; k_ref]^T) [v_self; v_ref] for every frame."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(3)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    attn.set_processor(ReferenceAttnProcessor("x.attn1"))
    frames, n_tok, n_ref = 3, 5, 7
    hidden = torch.randn(2 * frames, n_tok, 16)
    ref = torch.randn(2, n_ref, 16)
    with torch.no_grad():
        got = attn(hidden, reference_bank={"x.attn1": ref})
        ctx = torch.cat([hidden, ref.repeat_interleave(frames, 0)], dim=1)
        q, k, v = attn.to_q(hidden), attn.to_k(ctx), attn.to_v(ctx)

        def split(t):
            return t.view(t.shape[0], t.shape[1], 2, 8).transpose(1, 2)

        w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / 8 ** 0.5, dim=-1)
        want = attn.to_out[0]((w @ split(v)).transpose(1, 2).reshape(2 * frames, n_tok, 16))
        plain = attn(hidden)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-3
    with torch.no_grad():  # the stock processor on the concatenated context agrees
        torch.testing.assert_close(AttnProcessor2_0()(attn, hidden, ctx), got, atol=1e-5, rtol=1e-4)
    # an Attention with unusual options takes the generic path (stock processor on [own ; ref])
    odd = Attention(query_dim=16, heads=2, dim_head=8, residual_connection=True)
    odd.set_processor(ReferenceAttnProcessor("x.attn1"))
    with torch.no_grad():
        torch.testing.assert_close(odd(hidden, reference_bank={"x.attn1": ref}),
                                   AttnProcessor2_0()(odd, hidden, ctx), atol=1e-6, rtol=0)


def test_reference_keep_runs_match_plain_and_reference_attention():
    """Per-item switch at one Attention: items with False == plain self-attention, with True == bank."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(4)
    frames, n_tok, n_ref = 3, 5, 7
    hidden = torch.randn(4 * frames, n_tok, 16)
    for odd in (False, True):                    # fast path, and the stock processor per run
        attn = Attention(query_dim=16, heads=2, dim_head=8, residual_connection=odd)
        attn.set_processor(ReferenceAttnProcessor("x.attn1"))
        for ref in (torch.randn(4, n_ref, 16), torch.randn(1, n_ref, 16)):   # per-item / shared bank
            bank = {"x.attn1": ref}
            with torch.no_grad():
                full, plain = attn(hidden, reference_bank=bank), AttnProcessor2_0()(attn, hidden)
                for keep in ((True, False, False, True), (False, True, True, False), (True,) * 4, (False,) * 4):
                    got = attn(hidden, reference_bank=bank, reference_keep=keep)
                    want = torch.cat([(full if k else plain)[i * frames:(i + 1) * frames]
                                      for i, k in enumerate(keep)])
                    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
            assert (full - plain).abs().max() > 1e-2                          # the bank matters
    with pytest.raises(ValueError, match="multiple"):
        attn(hidden, reference_bank={"x.attn1": torch.randn(1, n_ref, 16)}, reference_keep=(True, False) * 2 + (True,))
    with pytest.raises(ValueError, match="batch 2"):
        attn(hidden, reference_bank={"x.attn1": torch.randn(2, n_ref, 16)}, reference_keep=(True, False) * 2)


def test_reference_keep_per_sample_equals_separate_calls(parts, inputs):
    """``reference_keep=[True, False]`` == sample 0 with the bank, sample 1 with ``bank=None`` (CFG batched)."""
    unet, ref, adapter = parts
    model = build_model_from_diffusers(_clone(unet), _clone(ref), _clone(adapter), CFG).eval()
    with torch.no_grad():
        model.denoising_unet.conv_in.weight[:, 4:].normal_(0, 0.3)
        bank = model.encode_reference(inputs["ref"], inputs["clip"])
        bank0 = model.encode_reference(inputs["ref"][:1], inputs["clip"][:1])
    one = lambda i: {k: v[i:i + 1] for k, v in inputs.items()}  # noqa: E731
    part = lambda i: ReferenceBank({k: v[i:i + 1] for k, v in bank.features.items()})  # noqa: E731
    with_bank, without = _run(model, one(0), bank=part(0)), _run(model, one(1), bank=None)
    for keep in (torch.tensor([True, False]), [True, False]):
        got = _run(model, inputs, bank=bank, reference_keep=keep)
        torch.testing.assert_close(got[:1], with_bank, atol=ATOL, rtol=0)
        torch.testing.assert_close(got[1:], without, atol=ATOL, rtol=0)
    assert (_run(model, one(1), bank=part(1)) - without).abs().max() > 1e-3   # sample 1 would differ with it
    # a batch-1 bank shared by both samples; all-True / all-False are the plain calls
    shared = _run(model, inputs, bank=bank0, reference_keep=[False, True])
    torch.testing.assert_close(shared[:1], _run(model, one(0), bank=None), atol=ATOL, rtol=0)
    torch.testing.assert_close(shared[1:], _run(model, one(1), bank=bank0), atol=ATOL, rtol=0)
    torch.testing.assert_close(_run(model, inputs, bank=bank, reference_keep=[True, True]),
                               _run(model, inputs, bank=bank), atol=0, rtol=0)
    torch.testing.assert_close(_run(model, inputs, bank=bank, reference_keep=[False, False]),
                               _run(model, inputs, bank=None), atol=0, rtol=0)
    for bad in ([True], torch.tensor([1, 0]), [1, 0]):
        with pytest.raises(ValueError, match="reference_keep"):
            _run(model, inputs, bank=bank, reference_keep=bad)
    with pytest.raises(ValueError, match="without a bank"):
        _run(model, inputs, bank=None, reference_keep=[True, False])


def test_bank_per_sample_and_broadcast(parts, inputs):
    unet, ref, adapter = parts
    model = build_model_from_diffusers(_clone(unet), _clone(ref), _clone(adapter), CFG).eval()
    with torch.no_grad():
        bank = model.encode_reference(inputs["ref"], inputs["clip"])
        bank0 = model.encode_reference(inputs["ref"][:1], inputs["clip"][:1])
    both = _run(model, inputs, bank=bank)
    one = {k: v[:1] for k, v in inputs.items()}
    first = _run(model, one, bank=bank0)
    torch.testing.assert_close(both[:1], first, atol=ATOL, rtol=0)
    broadcast = _run(model, inputs, bank=bank0)  # batch-1 bank used for both samples
    repeated = ReferenceBank({k: v.expand(B, -1, -1) for k, v in bank0.features.items()})
    torch.testing.assert_close(broadcast, _run(model, inputs, bank=repeated), atol=ATOL, rtol=0)


# ---- training changes the output; ablations ------------------------------------------------------
@pytest.fixture(scope="module")
def trained(inputs):
    torch.manual_seed(5)
    model = MovingBGModel(CFG).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = torch.randn_like(inputs["noisy"])
    for _ in range(3):
        bank = model.encode_reference(inputs["ref"], inputs["clip"])
        out = model(inputs["noisy"], 321, clip_embeds=inputs["clip"], bank=bank, cond_latent=inputs["cond"],
                    pose_maps=inputs["pose"], track_maps=inputs["track"])
        loss = torch.nn.functional.mse_loss(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        bank = model.encode_reference(inputs["ref"], inputs["clip"])
    return model, bank


def _without(model: MovingBGModel, **flags) -> MovingBGModel:
    """The same weights in a model built with some parts absent (the ablation architecture)."""
    cfg = model.config.replace(**flags)
    drop = [p for p, f in (("fg_encoder.", "use_fg"), ("bg_encoder.", "use_bg"), ("reference_unet.", "use_reference"))
            if f in flags and not flags[f]]
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(tuple(drop))}
    if flags.get("use_concat") is False:
        state["denoising_unet.conv_in.weight"] = state["denoising_unet.conv_in.weight"][:, :4].clone()
    return model_from_state_dict(cfg, state).eval()


def test_training_moves_the_new_parts(trained):
    model, _ = trained
    assert torch.count_nonzero(model.denoising_unet.conv_in.weight[:, 4:]) > 0
    assert torch.count_nonzero(model.fg_encoder.conv_out.weight) > 0
    assert torch.count_nonzero(model.bg_encoder.conv_out.weight) > 0


@pytest.mark.parametrize("change", ["pose", "track", "cond", "ref", "fg_scale", "bg_scale"])
def test_each_condition_changes_the_output(trained, inputs, change):
    model, bank = trained
    base = _run(model, inputs, bank=bank)
    if change in ("pose", "track", "cond"):
        other = dict(inputs, **{change: torch.flip(inputs[change], dims=[-1])})
        out = _run(model, other, bank=bank)
    elif change == "ref":
        with torch.no_grad():
            bank2 = model.encode_reference(-inputs["ref"], inputs["clip"])
        out = _run(model, inputs, bank=bank2)
    else:
        out = _run(model, inputs, bank=bank, **{change: 2.0})
    assert (out - base).abs().max() > 1e-5


@pytest.mark.parametrize("part", ["fg", "bg", "reference", "concat"])
def test_switching_off_equals_ablation_model(trained, inputs, part):
    model, bank = trained
    flag = {"fg": "use_fg", "bg": "use_bg", "reference": "use_reference", "concat": "use_concat"}[part]
    off = {"fg": dict(pose_maps=None), "bg": dict(track_maps=None), "reference": dict(bank=None),
           "concat": dict(cond_latent=None)}[part]
    ablation = _without(model, **{flag: False})
    got = _run(model, inputs, **{"bank": bank, **off})
    want = _run(ablation, inputs, **{"bank": None if part == "reference" else bank, **off})
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert (got - _run(model, inputs, bank=bank)).abs().max() > 1e-5  # the part did matter
    if part in ("fg", "bg"):
        zero_scale = _run(model, inputs, bank=bank, **{f"{part}_scale": 0.0})
        torch.testing.assert_close(zero_scale, got, atol=ATOL, rtol=0)
    key = {"fg": "pose_maps", "bg": "track_maps", "reference": "bank", "concat": "cond_latent"}[part]
    with pytest.raises(ValueError, match=flag):
        _run(ablation, inputs, **{"bank": None, key: bank if part == "reference" else inputs[
            {"fg": "pose", "bg": "track", "concat": "cond"}[part]]})


def test_input_validation(trained, inputs):
    model, bank = trained
    with pytest.raises(ValueError, match="pose_maps"):
        _run(model, inputs, bank=bank, pose_maps=inputs["pose"][..., :32, :32])
    with pytest.raises(ValueError, match="cond_latent"):
        _run(model, inputs, bank=bank, cond_latent=inputs["cond"][:, :3])
    with pytest.raises(ValueError, match="clip_embeds"):
        _run(model, inputs, bank=bank, clip_embeds=torch.zeros(B, 1, 7))
    with pytest.raises(ValueError, match="frames"):
        with torch.no_grad():
            model(torch.zeros(1, 4, 33, 2, 2), 1)


# ---- bundles -----------------------------------------------------------------------------------
def test_bundle_round_trip(trained, inputs, tmp_path):
    model, bank = trained
    path = save_bundle(model, tmp_path / "movingbg_tiny.safetensors")
    assert path.stat().st_mode & 0o777 == 0o644  # safetensors alone writes 0600
    sidecar = tmp_path / "movingbg_tiny.json"
    assert sidecar.is_file() and MovingBGConfig.from_json(sidecar.read_text()) == model.config
    with safe_open(str(path), framework="pt") as f:
        assert MovingBGConfig.from_json(f.metadata()["movingbg_config"]) == model.config
    sidecar.unlink()  # the metadata alone is enough
    loaded = load_bundle(path)
    assert read_bundle_config(path) == model.config
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    with torch.no_grad():
        bank2 = loaded.encode_reference(inputs["ref"], inputs["clip"])
    torch.testing.assert_close(_run(loaded, inputs, bank=bank2), _run(model, inputs, bank=bank), atol=0, rtol=0)


def test_bundle_of_ablation_and_dtype(tmp_path):
    cfg = CFG.replace(use_bg=False, use_reference=False, motion=MotionModuleConfig(use_mid_block=False))
    model = MovingBGModel(cfg)
    path = save_bundle(model, tmp_path / "abl.safetensors")
    loaded = load_bundle(path, dtype=torch.float16)
    assert loaded.config == cfg and loaded.bg_encoder is None and loaded.reference_unet is None
    assert loaded.dtype == torch.float16
    assert type(loaded.denoising_unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"  # no motion mid block


def test_bundle_strict_errors_name_keys(tmp_path):
    model = MovingBGModel(CFG.replace(use_reference=False))
    path = save_bundle(model, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    gone = "denoising_unet.up_blocks.1.motion_modules.0.proj_out.weight"
    bad = {k: v for k, v in state.items() if k != gone}
    bad["fg_encoder.extra.weight"] = torch.zeros(1)
    bad["bg_encoder.blocks.3.weight"] = torch.zeros(3, 3, 3, 3)
    save_file(bad, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(WeightLayoutError) as err:
        load_bundle(tmp_path / "bad.safetensors")
    msg = str(err.value)
    assert gone in msg and "fg_encoder.extra.weight" in msg and "bg_encoder.blocks.3.weight" in msg
    assert err.value.missing == [gone] and err.value.unexpected == ["fg_encoder.extra.weight"]
    assert err.value.mismatched[0][0] == "bg_encoder.blocks.3.weight"


def test_motion_encoder_layout():
    enc = MotionEncoder(3, (16, 32, 96, 256), 320)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "conv_in.weight": (16, 3, 3, 3), "blocks.0.weight": (16, 16, 3, 3), "blocks.1.weight": (32, 16, 3, 3),
        "blocks.2.weight": (32, 32, 3, 3), "blocks.3.weight": (96, 32, 3, 3), "blocks.4.weight": (96, 96, 3, 3),
        "blocks.5.weight": (256, 96, 3, 3), "conv_out.weight": (320, 256, 3, 3)}
    assert [b.stride[0] for b in enc.blocks] == [1, 2, 1, 2, 1, 2]
    with torch.no_grad():
        assert enc(torch.rand(2, 3, 64, 48)).shape == (2, 320, 8, 6)


@pytest.mark.parametrize("channels", [(8, 16, 32, 64), (16, 32, 96, 256)])
def test_a_fresh_motion_encoder_hears_sparse_maps_through_all_its_layers(channels):
    """What reaches the zero-initialised output layer must depend on the maps, or no gradient can teach the
    encoder to read them: on sparse track maps (40 small discs), the part of the last inner activations that
    changes when the maps are zeroed keeps at least a tenth of its size in the first layer (torch's default
    conv init kept ~1e-3 of it: the miniature model's track encoder never learnt)."""
    from movingbg.preprocess.track_render import render_tracks
    from movingbg.types import Tracks

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.normal(0, 1.0, (8, 40, 2)), axis=0) + rng.uniform(4, 60, (1, 40, 2))
    maps = render_tracks(Tracks(pts.astype(np.float32), np.ones((8, 40), bool), 64, 64))
    x = torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 255.0
    enc = MotionEncoder(3, channels, 32)
    with torch.no_grad():
        first = torch.nn.functional.silu(enc.conv_in(x)) - torch.nn.functional.silu(enc.conv_in(0 * x))
        h, h0 = x, 0 * x
        for conv in (enc.conv_in, *enc.blocks):
            h, h0 = torch.nn.functional.silu(conv(h)), torch.nn.functional.silu(conv(h0))
        assert (h - h0).abs().mean() > 0.1 * first.abs().mean()
        assert not enc(x).any()  # and the output layer still starts at zero


def test_full_size_model_on_meta():
    model = empty_model(MovingBGConfig.sd15())
    counts = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}
    assert counts["reference_unet"] == 859_520_964 - (320 * 2 + 4 * 320 * 9 + 4)  # minus output head
    motion = sum(p.numel() for n, p in model.denoising_unet.named_parameters() if ".motion_modules." in n)
    assert counts["denoising_unet"] == 859_520_964 + 320 * 5 * 9 + motion
    assert len(model.reference_paths) == 16
