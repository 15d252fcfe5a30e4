"""The Claude Desktop bundle: its manifest, its icon, and `build.py`, which packs them with the project."""
