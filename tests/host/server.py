"""The real ComfyUI server for HTTP-level tests (see movingbg.host.ComfyServer)."""

from movingbg.host import ComfyServer  # noqa: F401
