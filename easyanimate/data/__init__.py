"""Data: video I/O, datasets and samplers."""
