"""Deployment without PyTorch: ONNX export (:mod:`diffmatte.deploy.export`, needs torch) and
the numpy + onnxruntime runtime (:mod:`diffmatte.deploy.runtime`, no torch).

Importing this package imports nothing heavy; import the submodule you need.
"""
