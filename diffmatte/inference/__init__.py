"""Inference: options, the inference form of a trained model, and the Predictor."""

from diffmatte.inference.options import InferenceOptions
from diffmatte.inference.predictor import Predictor, ProgressFn
