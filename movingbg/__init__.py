"""MovingBG core library: human video generation with disentangled foreground/background motion.

Never imports ComfyUI (``comfy``, ``folder_paths``, ``nodes``); the ``nodes/`` package is the glue.
"""

__version__ = "0.1.0"
