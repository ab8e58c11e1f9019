"""Utilities shared by the library and the command-line tools: atomic file writing, image I/O,
process ranks."""
