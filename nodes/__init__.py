"""ComfyUI glue: one module per stage, each exporting NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS."""

from . import bundle, generation, matte, paths, pose, save, tracks, video

paths.register_model_folders()
paths.register_shipped_models()

_MODULES = (video, pose, matte, tracks, save, bundle, generation)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _m in _MODULES:
    NODE_CLASS_MAPPINGS.update(_m.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_m.NODE_DISPLAY_NAME_MAPPINGS)
