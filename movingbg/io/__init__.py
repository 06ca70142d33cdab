"""Reading and writing videos and files."""
