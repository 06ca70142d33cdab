"""The README's main job: run MovingBG's shipped workflow in a real ComfyUI on a generated demo clip.

    python -m movingbg.demo                 # start a headless ComfyUI, run the workflow, save outputs
    python -m movingbg.demo --inputs-only DIR   # only write the demo clip + pose JSON into DIR

Nothing is downloaded: the clip is synthetic (movingbg.synth) and ships its ground-truth pose.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from .io.video import write_video
from .preprocess.pose_format import FramePose, PersonPose, to_pose_keypoint
from .synth.scene import make_clip

logger = logging.getLogger(__name__)

DEMO_VIDEO = "movingbg_demo_driving.mp4"
DEMO_POSE = "movingbg_demo_pose.json"
DEMO_REFERENCE = "movingbg_demo_reference.png"
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows" / "api"


def write_demo_inputs(folder: Path, *, num_frames: int = 32, width: int = 256, height: int = 192,
                      seed: int = 0, fps: float = 12.0) -> tuple[Path, Path]:
    """Write the demo driving clip (mp4), its pose keypoints (POSE_KEYPOINT JSON) and a reference image
    (the clip's first frame, PNG) into ``folder``; returns the video and pose paths."""
    clip = make_clip(seed=seed, num_frames=num_frames, width=width, height=height, pan=(1.2, 0.4), zoom=0.004)
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
             num_frames: int = 32, width: int = 256, height: int = 192, steps: int = 8,
             workdir: Path | None = None) -> list[Path]:
    """Start ComfyUI headless, run the shipped demo workflows on generated inputs, download the outputs.

    Always runs ``movingbg_extract_motion_demo``; with ``bundle`` (a MovingBG bundle) and ``vae`` (its VAE)
    also ``movingbg_generate_demo``.
    """
    from .api import output_files
    from .host import ComfyServer

    workdir = Path(workdir or tempfile.mkdtemp(prefix="movingbg-demo-"))
    runs = [("movingbg_extract_motion_demo", {})]
    if bundle and vae:
        runs.append(("movingbg_generate_demo", {"12": {"steps": steps}}))
    files = []
    with ComfyServer(workdir, comfyui) as server:
        write_demo_inputs(server.input_dir, num_frames=num_frames, width=width, height=height)
        if bundle and vae:
            _link(bundle, server.models_dir / "movingbg" / "movingbg_demo.safetensors")
            _link(vae, server.models_dir / "vae" / "movingbg_demo_vae.safetensors")
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
    ap.add_argument("--bundle", type=Path, help="a MovingBG bundle (.safetensors): also run generation")
    ap.add_argument("--vae", type=Path, help="the VAE for --bundle (SD1.5 VAE for full-size bundles)")
    ap.add_argument("--frames", type=int, default=32, help="demo clip length")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--steps", type=int, default=8, help="sampling steps per clip (generation)")
    ap.add_argument("--inputs-only", type=Path, default=None, metavar="DIR", help="only write the demo inputs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.inputs_only:
        for p in write_demo_inputs(args.inputs_only):
            logger.info("wrote %s", p)
        return 0
    if bool(args.bundle) != bool(args.vae):
        ap.error("--bundle and --vae go together")
    files = run_demo(args.out, args.comfyui, bundle=args.bundle, vae=args.vae, num_frames=args.frames,
                     width=args.width, height=args.height, steps=args.steps)
    for f in files:
        logger.info("saved %s", f)
    if not args.bundle:
        logger.info("Motion extraction done. No MovingBG bundle was given, so nothing was generated: no trained "
                    "MovingBG weights exist yet. Build a starting bundle from public weights "
                    "(python -m movingbg.models.build --moore DIR --out movingbg.safetensors, see README) or train "
                    "one, then run: python -m movingbg.demo --bundle movingbg.safetensors --vae sd15_vae.safetensors")
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
