"""Utilities shared by the library and the command-line tools: image I/O, process ranks."""
