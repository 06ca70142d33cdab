"""Files shipped with MovingBG: the miniature model trained in the synthetic world and its demo inputs.

* ``models/movingbg/movingbg_mini.safetensors`` (+ ``.json``): a tiny MovingBG bundle trained by
  ``python -m movingbg.repro`` (the shipped recipe in the README: 800 videos, 20,000 steps; 64 x 64 frames,
  8-frame clips); listed by **MovingBG Load Model**.
* ``models/vae/movingbg_mini_vae.safetensors``: its TAESD-shaped VAE, listed by the stock **Load VAE**
  node (the pack registers both folders with ComfyUI, after the user's own folders).
* ``demo/``: a driving clip of the world's test split (never trained on), its ground-truth pose
  (OpenPose JSON) and the reference image (the clip's first frame) -- copy them into ComfyUI's
  ``input/`` to run ``workflows/movingbg_generate_demo.json`` by hand (``python -m movingbg.demo``
  does it for you). They are exactly what :func:`movingbg.demo.write_demo_inputs` writes.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS", "MODEL_DIRS", "MINI_BUNDLE", "MINI_VAE", "DEMO_DIR", "DEMO_VIDEO", "DEMO_POSE",
           "DEMO_REFERENCE", "DEMO_SEED", "DEMO_FRAMES", "DEMO_SIZE"]

ASSETS = Path(__file__).resolve().parent
MODEL_DIRS = {"movingbg": ASSETS / "models" / "movingbg", "vae": ASSETS / "models" / "vae"}
"""ComfyUI folder name -> shipped folder (registered by the pack's nodes/paths.py)."""
MINI_BUNDLE = MODEL_DIRS["movingbg"] / "movingbg_mini.safetensors"
MINI_VAE = MODEL_DIRS["vae"] / "movingbg_mini_vae.safetensors"
DEMO_DIR = ASSETS / "demo"
DEMO_VIDEO = DEMO_DIR / "movingbg_demo_driving.mp4"
DEMO_POSE = DEMO_DIR / "movingbg_demo_pose.json"
DEMO_REFERENCE = DEMO_DIR / "movingbg_demo_reference.png"
DEMO_SEED = 100_101
"""World seed of the demo clip (test split: not trained on)."""
DEMO_FRAMES = 48
DEMO_SIZE = 64
