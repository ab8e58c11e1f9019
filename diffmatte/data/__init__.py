"""Matting data: Composition-1k-style folder reading, DIM-style training composition."""
