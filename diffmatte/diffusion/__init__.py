"""Continuous-time Gaussian diffusion: noise schedules, noising and DDIM/DDPM samplers."""

from diffmatte.diffusion.gaussian import GaussianDiffusion
from diffmatte.diffusion.samplers import Sampler, SamplerOutput
from diffmatte.diffusion.schedules import SCHEDULES, get_schedule

__all__ = ["GaussianDiffusion", "Sampler", "SamplerOutput", "SCHEDULES", "get_schedule"]
