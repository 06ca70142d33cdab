"""Networks (no ComfyUI imports)."""
