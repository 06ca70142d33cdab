"""Generation: load a MovingBG bundle, encode reference and motion, progressive clip-by-clip sampling."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..movingbg.models.bundle import WeightLayoutError, load_bundle, read_bundle_config
from ..movingbg.models.convert import ldm_unet_names, load_spatial_unet
from ..movingbg.pipelines import GenerationOptions, generate
from ..movingbg.pipelines.planner import plan_progressive
from ..movingbg.pipelines.sampling import SchedulerOptions
from ..movingbg.preprocess.retarget import pose_distance
from ..movingbg.types import MotionInput, ReferenceInput
from ._models import PatchedWeights, hosted_module, hosted_patcher, load_to_device, torch_patcher
from ._types import CATEGORY, MODEL, MOTION, POSE_KEYPOINT, REFERENCE
from ._util import image_to_frames, interrupt_check
from .pose import parse_pose

logger = logging.getLogger(__name__)

SAMPLERS = ("ddim", "euler", "dpmpp_2m")
APPLY_TO = {"denoising + reference": (True, True), "denoising only": (True, False), "reference only": (False, True)}
DTYPES = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _bundles() -> list[str]:
    return sorted(f for f in folder_paths.get_filename_list("movingbg") if f.endswith(".safetensors"))


def _pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    if DTYPES.get(choice) is not None:
        return DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


def _mismatch_message(err: WeightLayoutError, bundle: str, first: int = 8) -> str:
    """Short form of a WeightLayoutError for the UI: counts and the first offending keys of each kind."""
    def head(items):
        return ", ".join(items[:first]) + (", ..." if len(items) > first else "")

    parts = [f"'model' does not have the architecture of the base U-Net of bundle {bundle} (the connected MODEL's "
             "diffusion_model.* weights must match it key for key); connect the SD1.5 checkpoint the bundle was "
             "built from, or a fine-tune / LoRA of it."]
    if err.mismatched:
        shown = [f"{k}: got {list(g)}, expected {list(e)}" for k, g, e in err.mismatched]
        parts.append(f"{len(shown)} mis-shaped: {head(shown)}")
    if err.missing:
        parts.append(f"{len(err.missing)} missing: {head(err.missing)}")
    if err.unexpected:
        parts.append(f"{len(err.unexpected)} unexpected: {head(err.unexpected)}")
    return "\n".join(parts)


class _SpatialSource:
    """The connected MODEL as a source of spatial U-Net weights, checked against a bundle's config.

    Checks everything that needs no weights first (targets, architecture), so a wrong MODEL fails before the
    bundle is read; :meth:`apply` then streams the LoRA-patched weights into the loaded bundle one at a time.
    """

    WHAT = "'model' (the connected MODEL's diffusion_model.* weights)"

    def __init__(self, model, apply_to: str, config, bundle: str) -> None:
        self.denoising, self.reference = APPLY_TO[apply_to]
        self.apply_to, self.bundle = apply_to, bundle
        if self.reference and not config.use_reference:
            if not self.denoising:
                raise ValueError(f"'apply_to' is {apply_to!r} but bundle {bundle} has no reference U-Net")
            logger.info("MovingBG: bundle %s has no reference U-Net; 'model' goes into the denoising U-Net only",
                        bundle)
            self.reference = False
        if not (hasattr(model, "model_state_dict") and isinstance(getattr(model, "patches", None), dict)
                and hasattr(getattr(model, "model", None), "diffusion_model")):
            raise ValueError(f"'model' must be a MODEL from a checkpoint loader (a ModelPatcher around a diffusion "
                             f"model), got {type(model).__name__}")
        self.weights = PatchedWeights(model, "diffusion_model.")
        try:
            self.names = ldm_unet_names(self.weights.shapes(), config, self.WHAT)
        except WeightLayoutError as err:
            raise ValueError(_mismatch_message(err, bundle)) from None

    def apply(self, module) -> None:
        check = interrupt_check()

        def renamed():
            for i, (key, value) in enumerate(self.weights):
                if i % 64 == 0:
                    check()
                yield self.names[key], value

        written = load_spatial_unet(module, renamed(), denoising=self.denoising, reference=self.reference,
                                    what=self.WHAT)
        logger.info("MovingBG: %d spatial U-Net tensors of bundle %s taken from 'model' (%s; %d of its weights "
                    "patched by LoRAs etc.)", written, self.bundle, self.apply_to, self.weights.num_patched())


class MovingBGLoadModel:
    DESCRIPTION = ("Load a MovingBG bundle (one safetensors file with its config) from models/movingbg: the "
                   "denoising U-Net with motion modules, the reference U-Net, and the pose/track encoders. With a "
                   "MODEL connected (stock Load Checkpoint, LoRA loaders...), the spatial U-Net weights come from it "
                   "instead, LoRAs applied: into the denoising U-Net (all but its motion modules and extra input "
                   "channels) and/or the reference U-Net, per 'apply_to'; the MODEL itself is left unchanged. It is "
                   "moved to the GPU by ComfyUI's model management only while sampling.")
    CATEGORY = f"{CATEGORY}/generate"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("movingbg_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "bundle": (_bundles(), {"tooltip": "MovingBG bundle in models/movingbg (build one with MovingBG Build "
                                               "Bundle or python -m movingbg.models.build)."}),
            "dtype": (list(DTYPES), {"default": "auto", "tooltip": "auto: fp16/bf16 on GPUs that support it, "
                                                                    "fp32 on CPU."}),
        }, "optional": {
            "model": ("MODEL", {"tooltip": "Optional SD1.5 MODEL (Load Checkpoint, possibly through LoRA loaders) "
                                           "whose U-Net, LoRAs applied, replaces the bundle's spatial U-Net weights. "
                                           "It must have the bundle's base U-Net architecture. Not modified."}),
            "apply_to": (list(APPLY_TO), {"default": "denoising + reference",
                                          "tooltip": "Which U-Nets take the spatial weights of 'model' (ignored "
                                                     "without 'model'). Motion modules, the pose/track encoders and "
                                                     "the condition channels of conv_in always stay the bundle's."}),
        }}

    def load(self, bundle, dtype, model=None, apply_to="denoising + reference"):
        if apply_to not in APPLY_TO:  # March-2024 ComfyUI does not validate optional combos
            raise ValueError(f"'apply_to' must be one of {list(APPLY_TO)}, got {apply_to!r}")
        path = folder_paths.get_full_path("movingbg", bundle)
        if path is None or not os.path.isfile(path):
            raise ValueError(f"'bundle': {bundle} not found in {folder_paths.get_folder_paths('movingbg')}")
        device = mm.get_torch_device()
        torch_dtype = _pick_dtype(dtype, device)
        if model is None:
            patcher = torch_patcher(("movingbg", path, os.path.getmtime(path), str(torch_dtype)),
                                    lambda: load_bundle(path, dtype=torch_dtype))
            return (patcher,)
        source = _SpatialSource(model, apply_to, read_bundle_config(path), bundle)
        # a fresh copy every time (never the cached bundle): ComfyUI re-runs this node only when an input changed
        module = load_bundle(path, dtype=torch_dtype)
        source.apply(module)
        return (hosted_patcher(module),)


class MovingBGEncodeReference:
    DESCRIPTION = ("Encode the reference image once per video: its VAE latent (for the reference U-Net's global "
                   "features and the first clip's condition) and, when connected, the CLIP image embedding from "
                   "the stock CLIP Vision Encode node (for cross-attention).")
    CATEGORY = f"{CATEGORY}/generate"
    RETURN_TYPES = (REFERENCE,)
    RETURN_NAMES = ("reference",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VAE", {"tooltip": "The VAE the bundle was trained with (stock Load VAE / checkpoint "
                                       "loader): SD1.5's, or movingbg_mini_vae for the shipped miniature model."}),
            "image": ("IMAGE", {"tooltip": "Reference image of the person (first image used); same size as the "
                                           "driving frames, multiple of 8."}),
        }, "optional": {
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "Stock CLIP Vision Encode of the reference "
                                                                      "(ViT-L/14 image_embeds)."}),
        }}

    def encode(self, vae, image, clip_vision_output=None):
        frames = image_to_frames(image, "image")
        h, w = frames.shape[1:3]
        if h % 8 or w % 8:
            raise ValueError(f"'image' is {w}x{h}; width and height must be multiples of 8")
        latent = vae.encode(image[:1, :, :, :3]).float().cpu()
        embeds = None
        if clip_vision_output is not None:
            embeds = getattr(clip_vision_output, "image_embeds", None)
            if embeds is None:
                raise ValueError("'clip_vision_output' has no image_embeds (use a CLIP ViT-L/14 vision model)")
            embeds = embeds[:1].float().cpu().reshape(1, 1, -1)
        return (ReferenceInput(latent, embeds, frames[0]),)


class MovingBGEncodeMotion:
    DESCRIPTION = ("Bundle the driving motion: pose renders (foreground) and track maps (background, M = (1 - alpha) "
                   "* T). Either may be left out (the paper's ablations). Optional keypoints decide whether the first "
                   "driving pose matches the reference (first_condition 'auto' of the sampler).")
    CATEGORY = f"{CATEGORY}/generate"
    RETURN_TYPES = (MOTION,)
    RETURN_NAMES = ("motion",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {
            "pose_images": ("IMAGE", {"tooltip": "Pose renders (MovingBG Extract/Render Pose)."}),
            "track_images": ("IMAGE", {"tooltip": "Track maps (MovingBG Render Tracks)."}),
            "driving_pose": (POSE_KEYPOINT, {"tooltip": "Keypoints of the driving video (for the pose check)."}),
            "reference_pose": (POSE_KEYPOINT, {"tooltip": "Keypoints of the reference image (for the pose check)."}),
        }}

    def encode(self, pose_images=None, track_images=None, driving_pose=None, reference_pose=None):
        pose = image_to_frames(pose_images, "pose_images") if pose_images is not None else None
        tracks = image_to_frames(track_images, "track_images") if track_images is not None else None
        if pose is None and tracks is None:
            raise ValueError("connect 'pose_images', 'track_images' or both")
        if pose is not None and tracks is not None and pose.shape != tracks.shape:
            raise ValueError(f"'pose_images' is {pose.shape[0]} frames of {pose.shape[2]}x{pose.shape[1]} but "
                             f"'track_images' is {tracks.shape[0]} frames of {tracks.shape[2]}x{tracks.shape[1]}; "
                             "extract both from the same driving frames")
        mismatch = None
        if driving_pose is not None and reference_pose is not None:
            drv, ref = parse_pose(driving_pose, "driving_pose"), parse_pose(reference_pose, "reference_pose")
            if drv and ref:
                mismatch = pose_distance(drv[0], ref[0])
        return (MotionInput(pose, tracks, mismatch),)


def _vae_fns(vae, scale: float):
    """Model-space encode/decode callables around ComfyUI's VAE (``(N, 3, H, W)`` 0..1 <-> latents)."""
    def encode(images: torch.Tensor) -> torch.Tensor:
        return vae.encode(images.permute(0, 2, 3, 1).float().cpu()).float() * scale

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode(latents.float().cpu() / scale).float().permute(0, 3, 1, 2)

    return encode, decode


def _maps(array):
    """uint8 ``(T, H, W, 3)`` -> float ``(T, 3, H, W)`` 0..1 on the CPU (each clip's slice goes to the device)."""
    if array is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div_(255.0)


class MovingBGSampler:
    DESCRIPTION = ("Generate the video clip by clip (<= 32 frames each): every clip starts on the previous clip's last "
                   "frame through condition concatenation, and the reference's global features are injected into "
                   "every clip, so long videos neither seam nor drift. Output: LATENT with every driving frame, for "
                   "the stock VAE Decode.")
    CATEGORY = f"{CATEGORY}/generate"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "movingbg_model": (MODEL, {"tooltip": "MovingBG Load Model."}),
            "reference": (REFERENCE, {"tooltip": "MovingBG Encode Reference."}),
            "motion": (MOTION, {"tooltip": "MovingBG Encode Motion (same frame size as the reference)."}),
            "vae": ("VAE", {"tooltip": "The VAE used for the reference (hands the last frame to the next clip)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Same seed, same video."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Sampling steps per clip."}),
            "cfg": ("FLOAT", {"default": 3.5, "min": 1.0, "max": 30.0, "step": 0.1,
                              "tooltip": "Classifier-free guidance scale (1 = off, halves the work)."}),
            "clip_length": ("INT", {"default": 24, "min": 2, "max": 32,
                                    "tooltip": "Frames per clip (the motion modules see at most 32)."}),
            "sampler": (list(SAMPLERS), {"default": "ddim", "tooltip": "Diffusion sampler."}),
            "handover": (["decode_encode", "latent"], {"default": "decode_encode",
                                                        "tooltip": "How the last frame conditions the next clip: "
                                                                   "as an image (paper) or reusing its latent."}),
            "first_condition": (["reference", "blank", "auto"], {"default": "auto",
                                 "tooltip": "Condition of the first clip: the reference image, a blank image, or "
                                            "auto (blank when the first driving pose does not match the "
                                            "reference; needs keypoints on Encode Motion)."}),
            "fg_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                      "tooltip": "Weight of the pose (foreground) guidance."}),
            "bg_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                      "tooltip": "Weight of the track (background/camera) guidance."}),
            "cfg_mode": (["batched", "sequential"], {"default": "sequential",
                                                     "tooltip": "sequential: about half the peak memory (default). "
                                                                "batched: the same result in one U-Net call of "
                                                                "batch 2 (~1.7x peak memory), a little faster "
                                                                "when memory allows."}),
        }}

    def sample(self, movingbg_model, reference, motion, vae, seed, steps, cfg, clip_length, sampler, handover,
               first_condition, fg_strength, bg_strength, cfg_mode):
        config = hosted_module(movingbg_model).config
        w, h = motion.size
        if (w, h) != reference.size:
            raise ValueError(f"'motion' frames are {w}x{h} but 'reference' is {reference.size[0]}x{reference.size[1]};"
                             " resize the driving video or the reference so they match")
        if w % 8 or h % 8:
            raise ValueError(f"'motion' frames are {w}x{h}; width and height must be multiples of 8")
        if first_condition == "auto" and motion.pose_mismatch is None:
            logger.warning("MovingBG: first_condition 'auto' without keypoints on Encode Motion: using the reference")
            first_condition = "reference"
        scale = float(config.vae_scale_factor)
        options = GenerationOptions(
            steps=steps, cfg_scale=cfg, seed=seed, clip_length=clip_length, denoise=1.0,
            scheduler=SchedulerOptions(name=sampler, prediction_type=config.prediction_type,
                                       rescale_betas_zero_snr=config.prediction_type == "v_prediction",
                                       timestep_spacing="trailing", beta_schedule=config.beta_schedule),
            fg_scale=fg_strength, bg_scale=bg_strength, cfg_mode=cfg_mode, handover=handover,
            first_condition=first_condition)
        encode, decode = _vae_fns(vae, scale)
        model, device = load_to_device(movingbg_model)
        bar = comfy.utils.ProgressBar(len(plan_progressive(motion.num_frames, clip_length)) * steps)

        def on_step(clip, step, total):
            bar.update(1)

        def on_clip(plan, latents):
            mm.load_models_gpu([movingbg_model])  # the VAE may have pushed us off the GPU

        with torch.inference_mode():
            result = generate(model, ref_latent=reference.latent * scale, clip_embeds=reference.clip_embeds,
                              pose_maps=_maps(motion.pose_maps), track_maps=_maps(motion.track_maps),
                              num_frames=motion.num_frames, options=options, encode=encode, decode=decode,
                              on_step=on_step, check_interrupt=interrupt_check(), device=device,
                              dtype=model.dtype, pose_mismatch=motion.pose_mismatch, on_clip=on_clip)
        return ({"samples": (result.latents / scale).to(mm.intermediate_device())},)


NODE_CLASS_MAPPINGS = {
    "MovingBGLoadModel": MovingBGLoadModel,
    "MovingBGEncodeReference": MovingBGEncodeReference,
    "MovingBGEncodeMotion": MovingBGEncodeMotion,
    "MovingBGSampler": MovingBGSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MovingBGLoadModel": "MovingBG Load Model",
    "MovingBGEncodeReference": "MovingBG Encode Reference",
    "MovingBGEncodeMotion": "MovingBG Encode Motion",
    "MovingBGSampler": "MovingBG Progressive Sampler",
}
