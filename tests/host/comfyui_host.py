"""The test host: see movingbg.host (run ``python -m tests.host.comfyui_host`` to install the pinned one)."""

from movingbg.host import PACK_DIR, ensure_comfyui, find_comfyui, install_pinned, link_pack  # noqa: F401

if __name__ == "__main__":
    print(ensure_comfyui())
