"""Long-video generation: clip planning, samplers, progressive generation (no ComfyUI imports)."""

from .planner import (MAX_CLIP_LENGTH, ClipPlan, average_windows, plan_progressive, plan_sliding_window,
                      window_counts)
from .progressive import GenerationOptions, GenerationResult, clip_seed, generate, sliding_window_generate
from .sampling import SchedulerOptions, make_scheduler

__all__ = [
    "MAX_CLIP_LENGTH",
    "ClipPlan",
    "plan_progressive",
    "plan_sliding_window",
    "window_counts",
    "average_windows",
    "SchedulerOptions",
    "make_scheduler",
    "GenerationOptions",
    "GenerationResult",
    "generate",
    "sliding_window_generate",
    "clip_seed",
]
