"""Noise-prediction networks."""

from gendiff.models.unet import PRESETS, UNet, UNetConfig, build_model, timestep_embedding

__all__ = ["PRESETS", "UNet", "UNetConfig", "build_model", "timestep_embedding"]
