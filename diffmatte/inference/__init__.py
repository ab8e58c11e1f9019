"""Inference: options, the inference form of a trained model, and the Predictor."""

from diffmatte.inference.model import InferenceModel, build_inference_model
from diffmatte.inference.options import InferenceOptions
from diffmatte.inference.predictor import Predictor, ProgressFn
