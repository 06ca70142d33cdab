"""The miniature model's VAE file is a VAE for the stock ComfyUI nodes: Load VAE lists and loads it
(as TAESD), and VAE Encode / VAE Decode compute what the diffusers model computes."""

import numpy as np
import torch
from PIL import Image

from movingbg.models.vae import build_taesd, save_taesd
from movingbg.synth.scene import make_clip
from movingbg.train.vae import box_init_taesd

NAME = "movingbg_test_taesd.safetensors"


def test_stock_vae_nodes_load_and_run_our_taesd_file(host, tmp_path):
    torch.manual_seed(1)
    vae = box_init_taesd(build_taesd())
    with torch.no_grad():  # make every weight matter, not just the box-initialised path
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    vae.eval()
    folder = tmp_path / "vae"
    save_taesd(vae, folder / NAME, dtype=torch.float32)
    host.folder_paths.add_model_folder_path("vae", str(folder))
    assert NAME in host.folder_paths.get_filename_list("vae")

    frame = make_clip(seed=3, num_frames=1, width=64, height=48).frames[0]
    Image.fromarray(frame).save(host.input_dir / "movingbg_taesd_test.png")
    prompt = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": NAME}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "movingbg_taesd_test.png"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    r = host.run(prompt)
    assert r.ok, r.error
    latent = host.node_output("3")["samples"].float()
    decoded = host.node_output("4").float()

    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latents
        y = ((vae.decode(latent).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    assert latent.shape == (1, 4, 6, 8)
    assert torch.allclose(latent, z, atol=1e-4), float((latent - z).abs().max())
    assert decoded.shape == (1, 48, 64, 3)
    assert torch.allclose(decoded, y, atol=1e-4), float((decoded - y).abs().max())
    # and it is an autoencoder, not just the same function: the round trip resembles the input
    err = np.abs(decoded[0].numpy() - frame / 255.0).mean()
    assert err < 0.2, err
