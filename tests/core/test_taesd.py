"""The miniature model's VAE: TAESD layout conversion, strict loading, box initialisation, training."""

import numpy as np
import pytest
import torch

from movingbg.models.vae import (build_taesd, from_comfy_taesd, is_taesd_state, load_taesd, save_taesd,
                                 to_comfy_taesd)
from movingbg.synth.scene import make_clip
from movingbg.train.vae import VAETrainOptions, box_init_taesd, latent_std, reconstruction_psnr, train_taesd


@pytest.fixture(scope="module")
def frames():
    return np.concatenate([make_clip(seed=s, num_frames=4, width=64, height=64).frames for s in range(3)])


def test_comfy_layout_round_trip_and_decoder_offset():
    torch.manual_seed(0)
    state = build_taesd().state_dict()
    comfy = to_comfy_taesd(state)
    # ComfyUI's TAESD decoder starts with a parameter-free clamp: diffusers decoder.layers.0 is its index 1
    assert torch.equal(comfy["taesd_decoder.1.weight"], state["decoder.layers.0.weight"])
    assert torch.equal(comfy["taesd_encoder.0.weight"], state["encoder.layers.0.weight"])
    assert float(comfy["vae_scale"]) == 1.0 and float(comfy["vae_shift"]) == 0.0
    back = from_comfy_taesd(comfy)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    assert is_taesd_state(comfy) and is_taesd_state(state)


def test_foreign_scale_and_unknown_keys_are_refused():
    state = to_comfy_taesd(build_taesd().state_dict())
    with pytest.raises(ValueError, match="vae_scale"):
        from_comfy_taesd({**state, "vae_scale": torch.tensor(2.0)})
    with pytest.raises(ValueError, match="unexpected key 'taesd_extra.w'"):
        from_comfy_taesd({**state, "taesd_extra.w": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if k != "taesd_decoder.1.weight"}
    with pytest.raises(ValueError, match="decoder.layers.0.weight"):
        load_taesd(missing, "vae")


def test_saved_file_loads_through_the_training_loader(tmp_path):
    from movingbg.train.encoders import decode_latents, encode_latents, load_vae

    torch.manual_seed(0)
    vae = box_init_taesd(build_taesd()).eval()
    path = save_taesd(vae, tmp_path / "v.safetensors", dtype=torch.float32)
    assert path.stat().st_mode & 0o777 == 0o644
    loaded = load_vae(path)
    assert type(loaded).__name__ == "AutoencoderTiny" and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = encode_latents(loaded, x, 0.5)
    assert z.shape == (2, 4, 4, 4)
    assert torch.allclose(z, vae.encode(x).latents * 0.5, atol=1e-6)
    y = decode_latents(loaded, z, 0.5)
    assert y.shape == (2, 3, 32, 32) and 0 <= float(y.min()) and float(y.max()) <= 1


def test_box_init_is_already_an_autoencoder_and_training_improves_it(frames):
    torch.manual_seed(0)
    random_vae = build_taesd().eval()
    boxed = box_init_taesd(build_taesd()).eval()
    boxed_db = reconstruction_psnr(boxed, frames)
    assert boxed_db > reconstruction_psnr(random_vae, frames) + 5.0  # random: ~5-8 dB, box: ~16 dB
    assert boxed_db > 14.0
    # latent channels 0..2 are the 8x8 block means of the image, scaled by the gain
    x = torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = boxed.encode(x).latents
    means = torch.nn.functional.avg_pool2d((x + 1) / 2, 8)
    assert torch.allclose(z[:, :3], 2.0 * (means - 0.5), atol=1e-5)
    assert float(z[:, 3].detach().abs().max()) == 0.0
    res = train_taesd(frames, VAETrainOptions(steps=20, batch=4, crop=32, learning_rate=1e-3, seed=0))
    assert res.psnr > boxed_db + 0.2  # measured: 16.5 -> 17.1 dB
    assert res.latent_std == pytest.approx(latent_std(res.vae, frames))


def test_bad_training_input_is_named():
    with pytest.raises(ValueError, match="frames must be"):
        train_taesd(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="crop 32 is larger"):
        train_taesd(np.zeros((2, 16, 16, 3), np.uint8), VAETrainOptions(crop=32))
    with pytest.raises(ValueError, match="multiple of 8"):
        VAETrainOptions(crop=12)


def test_vae_training_command_writes_a_comfy_loadable_file(tmp_path, capsys):
    from movingbg.io.video import write_video
    from movingbg.train.encoders import load_vae
    from movingbg.train.vae import main

    write_video(tmp_path / "v" / "a.mp4", make_clip(seed=1, num_frames=3, width=32, height=32).frames, 8.0)
    out = tmp_path / "vae.safetensors"
    assert main([str(tmp_path / "v"), "--out", str(out), "--steps", "2", "--batch", "1", "--crop", "16"]) == 0
    assert "vae_scale_factor" in capsys.readouterr().out
    assert type(load_vae(out)).__name__ == "AutoencoderTiny"
    assert main([str(tmp_path / "empty"), "--out", str(out)]) == 2
