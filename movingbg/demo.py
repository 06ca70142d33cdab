"""The README's main job: run MovingBG's shipped workflows in a real ComfyUI on the demo clip.

    python -m movingbg.demo                 # headless ComfyUI: motion extraction + generation, outputs saved
    python -m movingbg.demo --inputs-only DIR   # only write the demo clip, pose JSON and reference into DIR

Nothing is downloaded: the driving clip comes from the synthetic world's test split (with its
ground-truth pose) and generation uses the miniature model shipped in ``movingbg/assets`` (trained by
``python -m movingbg.repro``). ``--bundle`` / ``--vae`` run your own model instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from .assets import DEMO_FRAMES, DEMO_SEED, DEMO_SIZE, MINI_BUNDLE, MINI_VAE
from .io.video import write_video
from .preprocess.pose_format import FramePose, PersonPose, to_pose_keypoint
from .repro.world import camera_of
from .synth.scene import make_clip

logger = logging.getLogger(__name__)

DEMO_VIDEO = "movingbg_demo_driving.mp4"
DEMO_POSE = "movingbg_demo_pose.json"
DEMO_REFERENCE = "movingbg_demo_reference.png"
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows" / "api"


def write_demo_inputs(folder: Path, *, num_frames: int = DEMO_FRAMES, width: int = DEMO_SIZE,
                      height: int = DEMO_SIZE, seed: int = DEMO_SEED, fps: float = 12.0) -> tuple[Path, Path]:
    """Write the demo driving clip (mp4), its pose keypoints (POSE_KEYPOINT JSON) and a reference image
    (the clip's first frame, PNG) into ``folder``; returns the video and pose paths.

    The defaults give the files shipped in ``movingbg/assets/demo`` (a clip of the synthetic world's
    test split at the miniature model's 64 x 64)."""
    clip = make_clip(seed=seed, num_frames=num_frames, width=width, height=height,
                     **camera_of(seed, min(width, height)))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video = write_video(folder / DEMO_VIDEO, clip.frames, fps, crf=10)
    poses = [FramePose(width, height, (PersonPose(kp),)) for kp in clip.keypoints]
    from PIL import Image

    Image.fromarray(clip.frames[0]).save(folder / DEMO_REFERENCE)
    pose_path = folder / DEMO_POSE
    tmp = pose_path.with_suffix(".json.part")
    tmp.write_text(json.dumps(to_pose_keypoint(poses)))
    tmp.replace(pose_path)
    return video, pose_path


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    dest.symlink_to(Path(src).resolve())


def run_demo(out_dir: Path, comfyui: Path | None = None, *, bundle: Path | None = None, vae: Path | None = None,
             num_frames: int = DEMO_FRAMES, width: int = DEMO_SIZE, height: int = DEMO_SIZE,
             steps: int | None = None, generate: bool = True, workdir: Path | None = None) -> list[Path]:
    """Start ComfyUI headless, run the shipped demo workflows on the demo inputs, download the outputs.

    Runs ``movingbg_extract_motion_demo`` and (``generate``) ``movingbg_generate_demo``: with the shipped
    miniature model, or with ``bundle`` (a MovingBG bundle) and ``vae`` (its VAE) when given.
    """
    from .api import output_files
    from .host import ComfyServer

    workdir = Path(workdir or tempfile.mkdtemp(prefix="movingbg-demo-"))
    runs = [("movingbg_extract_motion_demo", {})]
    if generate:
        if not (bundle and vae) and not (MINI_BUNDLE.is_file() and MINI_VAE.is_file()):
            raise FileNotFoundError(f"the shipped miniature model is missing ({MINI_BUNDLE}, {MINI_VAE}); "
                                    "restore it from git or pass --bundle and --vae")
        sampler = {"steps": steps} if steps else {}
        if bundle and vae:
            runs.append(("movingbg_generate_demo", {"9": {"bundle": "movingbg_user.safetensors"},
                                                    "8": {"vae_name": "movingbg_user_vae.safetensors"},
                                                    "12": sampler}))
        else:
            runs.append(("movingbg_generate_demo", {"12": sampler}))
    files = []
    with ComfyServer(workdir, comfyui) as server:
        write_demo_inputs(server.input_dir, num_frames=num_frames, width=width, height=height)
        if bundle and vae:
            _link(bundle, server.models_dir / "movingbg" / "movingbg_user.safetensors")
            _link(vae, server.models_dir / "vae" / "movingbg_user_vae.safetensors")
        for workflow, overrides in runs:
            prompt = json.loads((WORKFLOWS / f"{workflow}.json").read_text())
            for node_id, inputs in overrides.items():
                prompt[node_id]["inputs"].update(inputs)
            logger.info("ComfyUI %s at %s: running %s", server.root, server.url, workflow)
            entry = server.client.wait(server.client.queue(prompt), timeout=3600)
            files += [server.client.download(info, out_dir) for info in output_files(entry)]
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movingbg.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("movingbg_demo_output"), help="where the outputs are saved")
    ap.add_argument("--comfyui", type=Path, default=None,
                    help="ComfyUI folder (default: $COMFYUI_PATH, the ComfyUI around this pack, or a pinned one)")
    ap.add_argument("--bundle", type=Path, help="generate with this MovingBG bundle (.safetensors) instead of the "
                                                 "shipped miniature model")
    ap.add_argument("--vae", type=Path, help="the VAE for --bundle (SD1.5 VAE for full-size bundles)")
    ap.add_argument("--no-generate", action="store_true", help="only run the motion-extraction workflow")
    ap.add_argument("--frames", type=int, default=DEMO_FRAMES, help="demo clip length")
    ap.add_argument("--width", type=int, default=DEMO_SIZE, help="demo clip width (the miniature model: 64)")
    ap.add_argument("--height", type=int, default=DEMO_SIZE)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps per clip (default: the workflow's)")
    ap.add_argument("--inputs-only", type=Path, default=None, metavar="DIR", help="only write the demo inputs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.inputs_only:
        for p in write_demo_inputs(args.inputs_only):
            logger.info("wrote %s", p)
        return 0
    if bool(args.bundle) != bool(args.vae):
        ap.error("--bundle and --vae go together")
    try:
        files = run_demo(args.out, args.comfyui, bundle=args.bundle, vae=args.vae, num_frames=args.frames,
                         width=args.width, height=args.height, steps=args.steps, generate=not args.no_generate)
    except FileNotFoundError as exc:
        logger.error("error: %s", exc)
        return 2
    for f in files:
        logger.info("saved %s", f)
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
