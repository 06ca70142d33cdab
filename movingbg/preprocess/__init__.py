"""Motion extraction: pose (foreground), human matte, background point tracks."""
