"""Networks: layers, generators and discriminators. Imports nothing else of ``translate``."""
from .discriminators import NLayerDiscriminator, PixelDiscriminator
from .generators import ResnetGenerator, UnetGenerator, unet_depth_for
from .layers import NoiseDropout, count_parameters, get_norm_layer, init_weights, set_noise_mode

__all__ = [
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetGenerator",
    "UnetGenerator",
    "unet_depth_for",
    "NoiseDropout",
    "count_parameters",
    "get_norm_layer",
    "init_weights",
    "set_noise_mode",
]
