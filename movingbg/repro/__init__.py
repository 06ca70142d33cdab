"""Miniature reproduction of the paper's results on a CPU (issue 6): ``python -m movingbg.repro``.

A synthetic world (:mod:`.world`), a TAESD-shaped VAE trained on it, the full MovingBG model and its
ablations trained with ``movingbg.train``, scored with ``movingbg.eval`` (:mod:`.experiment`).
"""

from .experiment import VARIANTS, ReproOptions, format_results, run
from .world import TEST_SEED0, camera_of, world_clip, write_videos

__all__ = ["VARIANTS", "ReproOptions", "run", "format_results", "TEST_SEED0", "camera_of", "world_clip",
           "write_videos"]
