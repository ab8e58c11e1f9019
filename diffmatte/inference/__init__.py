"""Inference: options, the inference form of a trained model, the Predictor and folder runs."""

from diffmatte.inference.folder import FolderPlan, FolderSummary, plan_folder, run_folder
from diffmatte.inference.model import InferenceModel, build_inference_model
from diffmatte.inference.options import InferenceOptions
from diffmatte.inference.predictor import Predictor, ProgressFn
