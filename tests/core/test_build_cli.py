"""python -m movingbg.models.build: Moore-AnimateAnyone files -> bundle (tiny size), strict errors."""

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from movingbg.models.build import main
from movingbg.models.bundle import load_bundle
from movingbg.models.config import MovingBGConfig
from movingbg.models.convert import diffusers_to_animatediff_key


def _moore_folder(tmp_path, cfg):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg.unet_kwargs())
    ref = {k: v for k, v in UNet2DConditionModel(**cfg.unet_kwargs()).state_dict().items()
           if not k.startswith(("conv_norm_out", "conv_out"))}
    adapter = MotionAdapter(block_out_channels=cfg.block_out_channels, motion_layers_per_block=cfg.layers_per_block,
                            motion_num_attention_heads=cfg.motion.num_attention_heads,
                            motion_max_seq_length=cfg.motion.max_seq_length, motion_norm_num_groups=8)
    motion = {a: v for k, v in adapter.state_dict().items() for a in diffusers_to_animatediff_key(k)}
    shapes = {"conv_in": (16, 3), "blocks.0": (16, 16), "blocks.1": (32, 16), "blocks.2": (32, 32),
              "blocks.3": (96, 32), "blocks.4": (96, 96), "blocks.5": (256, 96),
              "conv_out": (cfg.encoder_out_channels, 256)}
    guider = {f"{n}.{p}": torch.randn((o, i, 3, 3) if p == "weight" else (o,)) * 0.05
              for n, (o, i) in shapes.items() for p in ("weight", "bias")}
    folder = tmp_path / "moore"
    folder.mkdir()
    for name, sd in (("denoising_unet.pth", unet.state_dict()), ("reference_unet.pth", ref),
                     ("pose_guider.pth", guider), ("motion_module.pth", motion)):
        torch.save(sd, folder / name)
    return folder, guider


def test_build_bundle_from_moore_files(tmp_path):
    cfg = MovingBGConfig.tiny()
    folder, guider = _moore_folder(tmp_path, cfg)
    (tmp_path / "tiny.json").write_text(cfg.to_json())
    out = tmp_path / "models" / "movingbg" / "from_moore.safetensors"
    assert main(["--moore", str(folder), "--config", str(tmp_path / "tiny.json"), "--dtype", "fp32",
                 "--out", str(out)]) == 0
    model = load_bundle(out)
    assert torch.equal(model.fg_encoder.conv_out.weight, guider["conv_out.weight"])
    assert model.bg_encoder.conv_out.weight.abs().max() == 0  # background encoder starts neutral
    assert not list(out.parent.glob("*.part"))


def test_missing_files_and_keys_are_named(tmp_path, caplog):
    cfg = MovingBGConfig.tiny()
    (tmp_path / "tiny.json").write_text(cfg.to_json())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--moore", str(empty), "--config", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "denoising_unet.pth" in caplog.text and "motion_module.pth" in caplog.text
    folder, _ = _moore_folder(tmp_path, cfg)
    sd = torch.load(folder / "motion_module.pth", weights_only=True)
    gone = next(k for k in sd if "to_q" in k)
    del sd[gone]
    torch.save(sd, folder / "motion_module.pth")
    caplog.clear()
    assert main(["--moore", str(folder), "--config", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "y.safetensors")]) == 1
    assert gone in caplog.text
    with pytest.raises(SystemExit):
        main(["--ldm", "x.safetensors", "--out", "y.safetensors"])
