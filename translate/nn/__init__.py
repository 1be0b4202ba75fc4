"""Networks: layers, generators and discriminators. Imports nothing else of ``translate``."""
from .discriminators import NLayerDiscriminator, PixelDiscriminator
from .generators import ResnetGenerator, UnetGenerator, unet_depth_for
from .winograd import WinogradConv2d, set_winograd, winograd_conv3x3
from .layers import NoiseDropout, count_parameters, get_norm_layer, init_weights, seeded_noise, set_noise_mode

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
    "seeded_noise",
    "set_noise_mode",
    "WinogradConv2d",
    "set_winograd",
    "winograd_conv3x3",
]
