"""Weight conversion from the published layouts (LDM SD1.5, AnimateDiff, Moore-AnimateAnyone).

The published layouts are rebuilt here at tiny size from their key patterns with a mapping written
independently of ``movingbg.models.convert`` (diffusers -> published), plus hard-coded known pairs
and diffusers' own single-file converter as a third opinion.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from safetensors.torch import save_file

from movingbg.models.bundle import WeightLayoutError
from movingbg.models.config import MotionModuleConfig, MovingBGConfig
from movingbg.models.convert import (
    animatediff_to_diffusers_key,
    build_bundle_from_ldm,
    build_bundle_from_moore,
    convert_animatediff_motion,
    convert_ldm_unet,
    ldm_unet_names,
    load_spatial_unet,
    load_state_dict_file,
)
from movingbg.models.generator import MovingBGModel

CFG = MovingBGConfig.tiny()
SD15 = MovingBGConfig.sd15()
P = "model.diffusion_model."
logging.getLogger("diffusers").setLevel(logging.ERROR)


pytestmark = pytest.mark.usefixtures("single_thread")

# ---- independent diffusers -> published-layout mappings (test-side) ---------------------------
_RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
        "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def to_ldm_key(key: str, layers: int, up_types) -> str:
    """diffusers UNet2DConditionModel key -> LDM key (no prefix), by index arithmetic."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    head, _, leaf = key.rpartition(".")
    if head in fixed:
        return f"{fixed[head]}.{leaf}"
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
    if m:
        lvl, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{(lvl + 1) * (layers + 1)}.0.op.{rest.split('.', 1)[1]}"
        idx = 1 + lvl * (layers + 1) + j
        return _sub(idx, kind, rest, "input_blocks")
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        lvl, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            sub = 2 if "CrossAttn" in up_types[lvl] else 1
            return f"output_blocks.{lvl * (layers + 1) + layers}.{sub}.{rest}"
        return _sub(lvl * (layers + 1) + j, kind, rest, "output_blocks")
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        pos = {"resnets": {0: 0, 1: 2}, "attentions": {0: 1}}[m[1]][int(m[2])]
        rest = m[3] if m[1] == "attentions" else _res(m[3])
        return f"middle_block.{pos}.{rest}"
    raise AssertionError(key)


def _res(rest: str) -> str:
    layer, _, leaf = rest.partition(".")
    return f"{_RES[layer]}.{leaf}"


def _sub(idx: int, kind: str, rest: str, group: str) -> str:
    return f"{group}.{idx}.0.{_res(rest)}" if kind == "resnets" else f"{group}.{idx}.1.{rest}"


def unet_to_ldm(state: dict, config: MovingBGConfig) -> dict:
    return {P + to_ldm_key(k, config.layers_per_block, config.unet["up_block_types"]): v for k, v in state.items()}


def to_animatediff_key(key: str) -> list[str]:
    """diffusers motion key -> AnimateDiff key(s)."""
    head, rest = re.match(r"(.*\.motion_modules\.\d+\.)(.*)", key).groups()
    rest = (rest.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
            .replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.").replace(".norm3.", ".ff_norm."))
    if rest.endswith("pos_embed.pe"):
        base = rest[: -len("pos_embed.pe")]
        return [f"{head}temporal_transformer.{base}attention_blocks.{i}.pos_encoder.pe" for i in (0, 1)]
    return [f"{head}temporal_transformer.{rest}"]


def adapter_to_animatediff(state: dict) -> dict:
    return {ad: v.clone() for k, v in state.items() for ad in to_animatediff_key(k)}


LDM_PAIRS = {  # SD1.5, published checkpoint name -> diffusers name
    "input_blocks.0.0.weight": "conv_in.weight",
    "time_embed.2.bias": "time_embedding.linear_2.bias",
    "input_blocks.1.0.in_layers.0.weight": "down_blocks.0.resnets.0.norm1.weight",
    "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight":
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "input_blocks.2.1.proj_in.weight": "down_blocks.0.attentions.1.proj_in.weight",
    "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
    "input_blocks.4.0.skip_connection.weight": "down_blocks.1.resnets.0.conv_shortcut.weight",
    "input_blocks.11.0.out_layers.3.bias": "down_blocks.3.resnets.1.conv2.bias",
    "middle_block.1.transformer_blocks.0.attn2.to_k.weight":
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "middle_block.2.emb_layers.1.weight": "mid_block.resnets.1.time_emb_proj.weight",
    "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
    "output_blocks.5.2.conv.bias": "up_blocks.1.upsamplers.0.conv.bias",
    "output_blocks.8.1.transformer_blocks.0.ff.net.0.proj.weight":
        "up_blocks.2.attentions.2.transformer_blocks.0.ff.net.0.proj.weight",
    "output_blocks.11.1.proj_out.weight": "up_blocks.3.attentions.2.proj_out.weight",
    "out.0.weight": "conv_norm_out.weight",
    "out.2.weight": "conv_out.weight",
}
AD_PAIRS = {
    "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight":
        "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight",
    "down_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0.bias":
        "down_blocks.1.motion_modules.1.transformer_blocks.0.attn2.to_out.0.bias",
    "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.norms.1.weight":
        "up_blocks.3.motion_modules.2.transformer_blocks.0.norm2.weight",
    "up_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.ff_norm.bias":
        "up_blocks.0.motion_modules.0.transformer_blocks.0.norm3.bias",
    "mid_block.motion_modules.0.temporal_transformer.proj_out.weight": "mid_block.motion_modules.0.proj_out.weight",
    "down_blocks.2.motion_modules.0.temporal_transformer.norm.bias": "down_blocks.2.motion_modules.0.norm.bias",
    "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe":
        "down_blocks.0.motion_modules.0.transformer_blocks.0.pos_embed.pe",
    "up_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight":
        "up_blocks.1.motion_modules.0.transformer_blocks.0.ff.net.0.proj.weight",
}


def _adapter(config: MovingBGConfig, mid: bool = True) -> MotionAdapter:
    return MotionAdapter(block_out_channels=config.block_out_channels, motion_layers_per_block=config.layers_per_block,
                         motion_num_attention_heads=8, motion_norm_num_groups=config.unet["norm_num_groups"],
                         use_motion_mid_block=mid)


def _meta(fn):
    with torch.device("meta"):
        return fn()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**CFG.unet_kwargs()).eval()
    ref = UNet2DConditionModel(**CFG.unet_kwargs()).eval()
    adapter = _adapter(CFG).eval()
    return unet, ref, adapter


def _sample(config: MovingBGConfig = CFG, frames: int = 3):
    g = torch.Generator().manual_seed(2)
    return torch.randn(1, 4, frames, 8, 8, generator=g), torch.randn(1, 1, config.cross_attention_dim, generator=g)


# ---- LDM ---------------------------------------------------------------------------------------
def test_ldm_known_pairs_and_counts_sd15():
    state = _meta(lambda: UNet2DConditionModel(**SD15.unet_kwargs())).state_dict()
    ldm = unet_to_ldm(state, SD15)
    assert len(ldm) == 686
    for ldm_key, diff_key in LDM_PAIRS.items():  # the test-side inverse agrees with the known names
        assert P + ldm_key in ldm and ldm[P + ldm_key] is state[diff_key]
    ldm["first_stage_model.decoder.conv_in.weight"] = torch.empty(1, device="meta")  # ignored
    ldm["cond_stage_model.transformer.x"] = torch.empty(1, device="meta")
    out = convert_ldm_unet(ldm, SD15)
    assert set(out) == set(state)
    for ldm_key, diff_key in LDM_PAIRS.items():
        assert out[diff_key] is ldm[P + ldm_key]


@pytest.mark.parametrize("config", [CFG, SD15], ids=["tiny", "sd15"])
def test_ldm_agrees_with_diffusers_single_file_converter(config):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = _meta(lambda: UNet2DConditionModel(**config.unet_kwargs()))
    ldm = unet_to_ldm(unet.state_dict(), config)
    theirs = convert_ldm_unet_checkpoint(dict(ldm), config.unet_kwargs())
    ours = convert_ldm_unet(ldm, config)
    assert set(ours) == set(theirs) and all(ours[k] is theirs[k] for k in ours)


def test_ldm_round_trip_outputs_equal(tiny):
    unet, _, _ = tiny
    ldm = unet_to_ldm({k: v.clone() for k, v in unet.state_dict().items()}, CFG)
    back = UNet2DConditionModel(**CFG.unet_kwargs()).eval()
    back.load_state_dict(convert_ldm_unet(ldm, CFG), strict=True)
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 1, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x, 7, ctx).sample, unet(x, 7, ctx).sample, atol=0, rtol=0)


def test_ldm_errors_name_the_key(tiny):
    unet, _, _ = tiny
    ldm = unet_to_ldm(unet.state_dict(), CFG)
    missing = P + "input_blocks.1.1.proj_in.weight"
    broken = {k: v for k, v in ldm.items() if k != missing}
    broken[P + "output_blocks.1.0.in_layers.2.weight"] = torch.zeros(1, 2, 3, 3)
    broken[P + "input_blocks.99.0.op.weight"] = torch.zeros(1)
    with pytest.raises(WeightLayoutError) as err:
        convert_ldm_unet(broken, CFG)
    msg = str(err.value)
    assert missing in msg and P + "input_blocks.99.0.op.weight" in msg
    assert P + "output_blocks.1.0.in_layers.2.weight" in msg and "[1, 2, 3, 3]" in msg
    assert err.value.missing == [missing]
    with pytest.raises(ValueError, match="not an LDM"):
        convert_ldm_unet({"foo.weight": torch.zeros(1)}, CFG)


def test_build_from_ldm(tiny):
    unet, _, adapter = tiny
    ckpt = unet_to_ldm({k: v.clone() for k, v in unet.state_dict().items()}, CFG)
    ckpt["first_stage_model.encoder.conv_in.weight"] = torch.zeros(3)
    motion = {k: v.half() for k, v in adapter_to_animatediff(adapter.state_dict()).items()}  # fp16 file
    model = build_bundle_from_ldm(ckpt, motion, CFG).eval()
    assert {t.dtype for t in model.state_dict().values()} == {torch.float32}
    rounded = _adapter(CFG).eval()  # what the fp16 file holds
    rounded.load_state_dict({k: v.half().float() for k, v in adapter.state_dict().items()})
    den, ref = model.denoising_unet.state_dict(), model.reference_unet.state_dict()
    for k, v in unet.state_dict().items():
        if k == "conv_in.weight":
            assert torch.equal(den[k][:, :4], v) and torch.count_nonzero(den[k][:, 4:]) == 0
        else:
            assert torch.equal(den[k], v)
        if not k.startswith(("conv_out", "conv_norm_out")):
            assert torch.equal(ref[k], v)
    assert den["conv_in.weight"].data_ptr() != ref["conv_in.weight"].data_ptr()
    with torch.no_grad():  # no shared storage between the two U-Nets
        model.reference_unet.conv_in.weight.add_(1.0)
    assert torch.equal(model.denoising_unet.conv_in.weight[:, :4], unet.conv_in.weight)
    assert torch.count_nonzero(model.bg_encoder.conv_out.weight) == 0
    x, clip = _sample()
    base = UNetMotionModel.from_unet2d(unet, rounded).eval()
    with torch.no_grad():
        want = base(x, 10, encoder_hidden_states=clip.repeat_interleave(3, 0)).sample
        got = model(x, 10, clip_embeds=clip)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---- a base U-Net from outside the bundle (e.g. a ComfyUI MODEL with LoRAs) --------------------
def test_ldm_unet_names_maps_and_checks_shapes_only(tiny):
    unet, _, _ = tiny
    state = unet.state_dict()
    ldm = unet_to_ldm(state, CFG)
    shapes = {k[len(P):]: tuple(v.shape) for k, v in ldm.items()}
    names = ldm_unet_names(shapes, CFG)
    assert set(names) == set(shapes) and set(names.values()) == set(state)
    assert all(ldm[P + k] is state[d] for k, d in names.items())  # the same pairs as the test-side map
    full = {k[len(P):]: tuple(v.shape) for k, v in unet_to_ldm(_meta(lambda: UNet2DConditionModel(
        **SD15.unet_kwargs())).state_dict(), SD15).items()}
    assert all(names_sd[k] == d for names_sd in [ldm_unet_names(full, SD15)] for k, d in LDM_PAIRS.items())
    bad = dict(shapes)
    del bad["input_blocks.1.1.proj_in.weight"]
    bad["input_blocks.0.0.weight"] = (64, 4, 3, 3)
    bad["label_emb.0.0.weight"] = (1280, 2816)
    with pytest.raises(WeightLayoutError) as err:
        ldm_unet_names(bad, CFG, "the MODEL")
    msg = str(err.value)
    assert msg.startswith("the MODEL") and "input_blocks.1.1.proj_in.weight" in msg and "label_emb.0.0.weight" in msg
    assert "input_blocks.0.0.weight: got [64, 4, 3, 3], expected [32, 4, 3, 3]" in msg


def _bundle_model(seed: int = 1) -> MovingBGModel:
    torch.manual_seed(seed)
    return MovingBGModel(CFG).eval()


@pytest.mark.parametrize("denoising,reference", [(True, True), (True, False), (False, True)])
def test_load_spatial_unet_replaces_only_the_spatial_part(tiny, denoising, reference):
    unet, _, _ = tiny
    model = _bundle_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = {k: v + 1.0 for k, v in unet.state_dict().items()}  # differs from every bundle tensor
    written = load_spatial_unet(model, iter(source.items()), denoising=denoising, reference=reference)
    after = model.state_dict()
    head = sum(1 for k in source if k.startswith(("conv_norm_out", "conv_out")))
    assert written == denoising * len(source) + reference * (len(source) - head)
    for key, value in after.items():
        part, _, sub = key.partition(".")
        replaced = ((part == "denoising_unet" and denoising and ".motion_modules." not in sub)
                    or (part == "reference_unet" and reference))
        if not replaced:
            assert torch.equal(value, before[key]), key
        elif sub == "conv_in.weight" and part == "denoising_unet":
            assert torch.equal(value[:, :4], source[sub]) and torch.equal(value[:, 4:], before[key][:, 4:])
        else:
            assert torch.equal(value, source[sub]), key


def test_load_spatial_unet_is_strict():
    model = _bundle_model()
    source = {k: v.clone() for k, v in model.reference_unet.state_dict().items()}  # no output head
    source["conv_in.weight"] = torch.zeros(32, 9, 3, 3)
    source["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightLayoutError) as err:
        load_spatial_unet(model, source, what="base U-Net from X")
    assert err.value.what == "base U-Net from X" and err.value.unexpected == ["extra.weight"]
    assert sorted(err.value.missing) == ["conv_norm_out.bias", "conv_norm_out.weight", "conv_out.bias",
                                         "conv_out.weight"]
    assert err.value.mismatched == [("conv_in.weight", (32, 9, 3, 3), (32, 4, 3, 3))]
    with pytest.raises(ValueError, match="no reference U-Net"):
        load_spatial_unet(MovingBGModel(CFG.replace(use_reference=False)), {}, reference=True)


# ---- AnimateDiff -------------------------------------------------------------------------------
def test_animatediff_known_pairs_and_counts_sd15():
    v2 = _meta(lambda: MotionAdapter())
    v3 = _meta(lambda: MotionAdapter(use_motion_mid_block=False))
    ad2 = {a: v for k, v in v2.state_dict().items() for a in to_animatediff_key(k)}
    ad3 = {a: v for k, v in v3.state_dict().items() for a in to_animatediff_key(k)}
    assert len(ad2) == 588 and len(ad3) == 560
    assert all(tuple(ad2[k].shape)[:2] == (1, 32) for k in ad2 if k.endswith("pos_encoder.pe"))
    for ad_key, diff_key in AD_PAIRS.items():
        assert ad_key in ad2 and animatediff_to_diffusers_key(ad_key) == diff_key
    out = convert_animatediff_motion(ad2, SD15)
    assert set(out) == set(v2.state_dict())
    out3 = convert_animatediff_motion(ad3, SD15.replace(motion=MotionModuleConfig(use_mid_block=False)))
    assert set(out3) == set(v3.state_dict())


def test_animatediff_round_trip(tiny):
    _, _, adapter = tiny
    ad = adapter_to_animatediff(adapter.state_dict())
    out = convert_animatediff_motion(ad, CFG)
    fresh = _adapter(CFG)
    fresh.load_state_dict(out, strict=True)
    got = fresh.state_dict()
    assert all(torch.equal(got[k], v) for k, v in adapter.state_dict().items())


def test_animatediff_v3_and_errors():
    cfg3 = CFG.replace(motion=MotionModuleConfig(use_mid_block=False))
    ad3 = adapter_to_animatediff(_adapter(CFG, mid=False).state_dict())
    assert not any(k.startswith("mid_block") for k in ad3)
    assert set(convert_animatediff_motion(ad3, cfg3)) == set(_adapter(CFG, mid=False).state_dict())
    with pytest.raises(WeightLayoutError, match="use_mid_block=False") as err:
        convert_animatediff_motion(ad3, CFG)
    assert "mid_block.motion_modules.0.temporal_transformer.proj_in.weight" in str(err.value)

    ad2 = adapter_to_animatediff(_adapter(CFG).state_dict())
    pe = "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    short = dict(ad2, **{pe: ad2[pe][:, :24]})
    with pytest.raises(WeightLayoutError) as err:
        convert_animatediff_motion(short, CFG)
    assert pe in str(err.value) and err.value.mismatched[0][0] == pe
    learned = dict(ad2, **{pe: ad2[pe] + 0.5})
    with pytest.raises(ValueError, match="position encoding"):
        convert_animatediff_motion(learned, CFG)
    gone = "down_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.2.weight"
    with pytest.raises(WeightLayoutError, match=re.escape(gone)):
        convert_animatediff_motion({k: v for k, v in ad2.items() if k != gone}, CFG)


# ---- Moore-AnimateAnyone -----------------------------------------------------------------------
def moore_pose_guider(out_channels: int, seed: int = 4) -> dict:
    """pose_guider.pth layout: conv_in [16,3], blocks.0 [16,16], blocks.1 [32,16] s2, ..., conv_out [C,256]."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv_in": (16, 3), "blocks.0": (16, 16), "blocks.1": (32, 16), "blocks.2": (32, 32),
              "blocks.3": (96, 32), "blocks.4": (96, 96), "blocks.5": (256, 96), "conv_out": (out_channels, 256)}
    sd = {}
    for name, (o, i) in shapes.items():
        sd[f"{name}.weight"] = torch.randn(o, i, 3, 3, generator=g) * 0.05
        sd[f"{name}.bias"] = torch.randn(o, generator=g) * 0.05
    return sd


def _moore_files(tiny):
    unet, ref, adapter = tiny
    den = {k: v.clone() for k, v in unet.state_dict().items()}
    refsd = {k: v.clone() for k, v in ref.state_dict().items() if not k.startswith(("conv_norm_out", "conv_out"))}
    return den, refsd, moore_pose_guider(CFG.encoder_out_channels), adapter_to_animatediff(adapter.state_dict())


def test_moore_layout_counts_sd15():
    unet = _meta(lambda: UNet2DConditionModel(**SD15.unet_kwargs())).state_dict()
    ref = {k: v for k, v in unet.items() if not k.startswith(("conv_norm_out", "conv_out"))}
    motion = {a: v for k, v in _meta(lambda: MotionAdapter()).state_dict().items() for a in to_animatediff_key(k)}
    pose = {k: torch.empty(v.shape, device="meta") for k, v in moore_pose_guider(320).items()}
    assert (len(unet), len(ref), len(motion), len(pose)) == (686, 682, 588, 16)
    model = build_bundle_from_moore(unet, ref, pose, motion, SD15)
    assert model.fg_encoder.conv_out.weight.shape == (320, 256, 3, 3)
    assert model.denoising_unet.conv_in.weight.shape == (320, 9, 3, 3)


def test_build_from_moore(tiny):
    unet, ref, adapter = tiny
    den, refsd, pose, motion = _moore_files(tiny)
    model = build_bundle_from_moore(den, refsd, pose, motion, CFG).eval()
    fg, got_ref = model.fg_encoder.state_dict(), model.reference_unet.state_dict()
    assert all(torch.equal(fg[k], v) for k, v in pose.items()) and set(fg) == set(pose)
    assert all(torch.equal(got_ref[k], v) for k, v in refsd.items()) and set(got_ref) == set(refsd)
    x, clip = _sample()
    base = UNetMotionModel.from_unet2d(unet, adapter).eval()
    maps = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        want = base(x, 10, encoder_hidden_states=clip.repeat_interleave(3, 0)).sample
        torch.testing.assert_close(model(x, 10, clip_embeds=clip, track_maps=maps), want, atol=1e-5, rtol=0)
        posed = model(x, 10, clip_embeds=clip, pose_maps=maps)  # trained pose guider: not neutral
    assert (posed - want).abs().max() > 1e-4
    # a reference file that still has its output head is accepted (the head is dropped explicitly)
    head = {k: v for k, v in ref.state_dict().items() if k.startswith(("conv_norm_out", "conv_out"))}
    with_head = dict(refsd, **head)
    build_bundle_from_moore(den, with_head, pose, motion, CFG)


def test_moore_errors_name_the_key(tiny):
    den, refsd, pose, motion = _moore_files(tiny)
    gone = "mid_block.attentions.0.proj_in.weight"
    with pytest.raises(WeightLayoutError, match=re.escape(gone)):
        build_bundle_from_moore({k: v for k, v in den.items() if k != gone}, refsd, pose, motion, CFG)
    with pytest.raises(WeightLayoutError, match=re.escape(gone)):
        build_bundle_from_moore(den, {k: v for k, v in refsd.items() if k != gone}, pose, motion, CFG)
    bad_pose = dict(pose, **{"blocks.3.weight": torch.zeros(64, 32, 3, 3)})
    with pytest.raises(WeightLayoutError) as err:
        build_bundle_from_moore(den, refsd, bad_pose, motion, CFG)
    assert err.value.mismatched == [("blocks.3.weight", (64, 32, 3, 3), (96, 32, 3, 3))]
    extra = dict(den, **{"down_blocks.0.motion_modules.0.norm.weight": torch.zeros(32)})
    with pytest.raises(WeightLayoutError, match="motion_modules"):
        build_bundle_from_moore(extra, refsd, pose, motion, CFG)


def test_load_state_dict_file(tmp_path, tiny):
    _, _, _, motion = _moore_files(tiny)
    torch.save({"state_dict": motion, "global_step": 3}, tmp_path / "mm.ckpt")
    torch.save({f"module.{k}": v for k, v in motion.items()}, tmp_path / "mm.pth")
    save_file({k: v.contiguous() for k, v in motion.items()}, str(tmp_path / "mm.safetensors"))
    for name in ("mm.ckpt", "mm.pth", "mm.safetensors"):
        loaded = load_state_dict_file(tmp_path / name)
        assert set(loaded) == set(motion) and all(torch.equal(loaded[k], motion[k]) for k in motion)
