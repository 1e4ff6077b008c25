"""The manifest (one row per image) and group-wise train/val/test splits."""
