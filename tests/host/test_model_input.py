"""MovingBG Load Model with a stock MODEL connected: CheckpointLoaderSimple -> LoraLoader -> MovingBG Load Model.

The checkpoint is a tiny U-Net that stock ComfyUI still detects as SD1.5 (320 channels, 768-d context, conv
projections; one level with one res block, the least its detection accepts). Its LDM names come from ComfyUI's
own diffusers -> LDM table (``comfy.utils.unet_to_diffusers``), and the expected LoRA-patched weights are
computed here from the files, so neither side borrows MovingBG's converter.
"""

import json
from pathlib import Path

import pytest
import torch

from movingbg.demo import write_demo_inputs

WF = Path(__file__).resolve().parents[2] / "workflows" / "api"

UNET = {  # diffusers UNet2DConditionModel kwargs; ComfyUI: model_channels 320, channel_mult [1], num_res_blocks [1]
    "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D"],
    "block_out_channels": [320], "layers_per_block": 1, "attention_head_dim": 8, "cross_attention_dim": 768,
    "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu", "downsample_padding": 1, "mid_block_scale_factor": 1,
    "use_linear_projection": False,
}
COMFY_UNET = {"num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
              "transformer_depth_middle": 1}
CKPT, LORA = "movingbg_test_sd15ish.safetensors", "movingbg_test_lora.safetensors"
BUNDLE = "movingbg_test_320.safetensors"
STRENGTH = 0.8
LORA_LAYERS = {  # LDM key -> (rank, alpha): conv_in, a linear, a 1x1 conv, the mid block, an output 3x3 conv, conv_out
    "input_blocks.0.0.weight": (4, 2.0),
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 4.0),
    "input_blocks.1.1.proj_in.weight": (2, 1.0),
    "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight": (4, 2.0),
    "output_blocks.1.0.in_layers.2.weight": (4, 2.0),
    "out.2.weight": (2, 2.0),
}


@pytest.fixture(scope="module")
def sd15ish(host):
    """Checkpoint + LoRA in the host's model folders, a matching 320-channel MovingBG bundle, and the truth."""
    import comfy.utils
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from movingbg.models.bundle import save_bundle
    from movingbg.models.config import MotionModuleConfig, MovingBGConfig
    from movingbg.models.generator import MovingBGModel

    root = Path(host.folder_paths.models_dir)
    g = torch.Generator().manual_seed(3)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UNet2DConditionModel(**UNET).state_dict().items()}
    diffusers_sd = {k: (1.0 + 0.1 * torch.randn(s, generator=g)) if ".norm" in k and k.endswith("weight")
                    else 0.05 * torch.randn(s, generator=g) for k, s in shapes.items()}
    to_ldm = comfy.utils.unet_to_diffusers(COMFY_UNET)
    assert set(to_ldm) >= set(diffusers_sd), sorted(set(diffusers_sd) - set(to_ldm))
    ldm = {to_ldm[k]: v for k, v in diffusers_sd.items()}
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file({f"model.diffusion_model.{k}": v for k, v in ldm.items()}, str(root / "checkpoints" / CKPT))

    lora, delta = {}, {}
    for key, (rank, alpha) in LORA_LAYERS.items():
        shape = ldm[key].shape
        down = 0.3 * torch.randn(rank, *shape[1:], generator=g)
        up = 0.3 * torch.randn(shape[0], rank, *([1] * (len(shape) - 2)), generator=g)
        name = "lora_unet_" + key[: -len(".weight")].replace(".", "_")
        lora.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                     f"{name}.alpha": torch.tensor(alpha)})
        delta[key] = STRENGTH * alpha / rank * (up.flatten(1) @ down.flatten(1)).reshape(shape)
    (root / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(root / "loras" / LORA))
    host.folder_paths.add_model_folder_path("checkpoints", str(root / "checkpoints"))
    host.folder_paths.add_model_folder_path("loras", str(root / "loras"))

    config = MovingBGConfig(unet=UNET, motion=MotionModuleConfig(num_attention_heads=8, max_seq_length=32),
                            encoder_channels=(8, 16, 16, 32))
    torch.manual_seed(4)
    save_bundle(MovingBGModel(config), root / "movingbg" / BUNDLE)
    expected = {k: ldm[to_ldm[k]] + delta.get(to_ldm[k], 0.0) for k in diffusers_sd}
    to_diffusers = {to_ldm[k]: k for k in diffusers_sd}
    return {"ldm": ldm, "to_ldm": to_ldm, "expected": expected, "patched": {to_diffusers[k] for k in LORA_LAYERS}}


def _graph(bundle=BUNDLE, apply_to="denoising + reference"):
    """The generation demo with its loader fed by CheckpointLoaderSimple -> LoraLoader."""
    prompt = json.loads((WF / "movingbg_generate_demo.json").read_text())
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}
    prompt["21"] = {"class_type": "LoraLoader", "inputs": {"model": ["20", 0], "clip": ["20", 1], "lora_name": LORA,
                                                           "strength_model": STRENGTH, "strength_clip": 1.0}}
    prompt["9"]["inputs"].update({"bundle": bundle, "dtype": "fp32", "model": ["21", 0], "apply_to": apply_to})
    prompt["12"]["inputs"].update({"steps": 2, "clip_length": 4, "seed": 3})
    return prompt


def _bundle_state(host):
    from movingbg.models.bundle import load_bundle

    return load_bundle(host.folder_paths.get_full_path("movingbg", BUNDLE)).state_dict()


def _check_model_untouched(host, sd15ish):
    base, lora_model = host.node_output("20", 0), host.node_output("21", 0)
    assert lora_model.model is base.model  # LoraLoader clones the patcher, not the module
    assert not base.patches and not lora_model.backup
    assert sorted(lora_model.patches) == sorted(f"diffusion_model.{k}" for k in LORA_LAYERS)
    assert all(len(p) == 1 for p in lora_model.patches.values())
    weights = base.model.diffusion_model.state_dict()
    assert set(weights) == set(sd15ish["ldm"])
    for key, value in sd15ish["ldm"].items():  # the module still holds the checkpoint's (unpatched) weights
        assert torch.equal(weights[key], value), key


def test_model_input_takes_lora_patched_spatial_weights_and_generates(host, generation_weights, sd15ish):
    import comfy.model_management as mm

    write_demo_inputs(host.input_dir, num_frames=6, width=64, height=64)
    r = host.run(_graph())
    assert r.ok, r.error
    assert host.node_output("20", 0).model.model_config.__class__.__name__ == "SD15"  # stock detection
    patcher = host.node_output("9", 0)
    assert any(getattr(m, "model", None) is patcher for m in mm.current_loaded_models)  # model management
    state = patcher.model.module.state_dict()
    bundle = _bundle_state(host)
    expected = sd15ish["expected"]
    for key in sd15ish["patched"]:  # the LoRA changes these noticeably, so an unapplied LoRA fails below
        assert (expected[key] - sd15ish["ldm"][sd15ish["to_ldm"][key]]).abs().max() > 1e-2
    for key, value in state.items():
        part, _, sub = key.partition(".")
        if part == "denoising_unet" and ".motion_modules." not in sub:
            if sub == "conv_in.weight":  # the first 4 channels from the MODEL, the condition channels stay
                torch.testing.assert_close(value[:, :4], expected[sub], atol=1e-6, rtol=1e-6)
                assert torch.equal(value[:, 4:], bundle[key][:, 4:])
            else:
                torch.testing.assert_close(value, expected[sub], atol=1e-6, rtol=1e-6, msg=key)
        elif part == "reference_unet":
            torch.testing.assert_close(value, expected[sub], atol=1e-6, rtol=1e-6, msg=key)
        else:  # motion modules, pose / track encoders
            assert torch.equal(value, bundle[key]), key
    _check_model_untouched(host, sd15ish)
    latent = host.node_output("12", 0)["samples"]
    assert tuple(latent.shape) == (6, 4, 8, 8) and torch.isfinite(latent).all()


def test_model_input_mismatch_is_named_and_reference_only(host, generation_weights, sd15ish):
    write_demo_inputs(host.input_dir, num_frames=6, width=64, height=64)
    # the tiny demo bundle (32 channels) does not match this 320-channel MODEL
    r = host.run(_graph(bundle=generation_weights[0].name))
    assert not r.ok
    msg = r.error["exception_message"]
    assert "'model'" in msg and generation_weights[0].name in msg, msg
    assert "input_blocks.0.0.weight: got [320, 4, 3, 3], expected [32, 4, 3, 3]" in msg, msg
    assert "missing: input_blocks.2.0.op.bias" in msg and "unexpected: output_blocks.0.1.norm.bias" in msg, msg
    assert len(msg) < 3000, msg  # the first offending keys, not all of them
    _check_model_untouched(host, sd15ish)
    # apply_to "reference only", on the MODEL the graph's LoraLoader made, while ComfyUI holds it loaded with the
    # LoRA merged into the module's weights (as after a KSampler run): the original weights come from its backup
    import comfy.model_management as mm

    lora_model = host.node_output("21", 0)
    mm.load_models_gpu([lora_model])
    merged = lora_model.model.diffusion_model.state_dict()["input_blocks.0.0.weight"]
    assert not torch.equal(merged, sd15ish["ldm"]["input_blocks.0.0.weight"])
    node = host.nodes.NODE_CLASS_MAPPINGS["MovingBGLoadModel"]()
    (patcher,) = node.load(BUNDLE, "fp32", model=lora_model, apply_to="reference only")
    state, bundle, expected = patcher.model.module.state_dict(), _bundle_state(host), sd15ish["expected"]
    for key, value in state.items():
        part, _, sub = key.partition(".")
        if part == "reference_unet":
            torch.testing.assert_close(value, expected[sub], atol=1e-6, rtol=1e-6, msg=key)
        else:
            assert torch.equal(value, bundle[key]), key
    mm.unload_all_models()  # ComfyUI puts the original weights back
    _check_model_untouched(host, sd15ish)
