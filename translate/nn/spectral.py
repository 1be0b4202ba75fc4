"""Spectral normalisation (Miyato et al. 2018): every convolution, linear layer and embedding of a
network divides its weight by the weight's largest singular value, so no layer can stretch its
input by more than 1 and the network is 1-Lipschitz up to its activations. For a discriminator
this bounds how sharp its verdict can become, which keeps its gradients informative; BigGAN also
puts it in the generator.

The largest singular value is estimated by power iteration, one step per forward pass in training
mode, with torch's parametrisation (``torch.nn.utils.parametrizations.spectral_norm``): the stored
weight is ``parametrizations.weight.original`` and the iteration's vectors are the buffers
``parametrizations.weight.0._u`` / ``._v``, so they travel in the state dict and a resumed run
continues the iteration exactly. :func:`fold_spectral_norm` replaces the parametrisation by the
plain normalised weight (what an exported or evaluated generator should hold).
"""
from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
          nn.Embedding)


def _is_spectral(m: nn.Module) -> bool:
    return parametrize.is_parametrized(m, "weight") and any(
        type(p).__name__ == "_SpectralNorm" for p in m.parametrizations["weight"])


def spectral_norm(net: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise (in place) every convolution, linear layer and embedding of ``net``
    that is not already. Returns ``net``."""
    for m in list(net.modules()):
        if isinstance(m, LAYERS) and getattr(m, "weight", None) is not None and not _is_spectral(m):
            _spectral_norm(m, n_power_iterations=n_power_iterations)
    return net


def has_spectral_norm(net: nn.Module) -> bool:
    return any(_is_spectral(m) for m in net.modules())


def fold_spectral_norm(net: nn.Module) -> nn.Module:
    """Replace each spectrally normalised weight by its present value (the stored weight divided by
    its estimated largest singular value, without another power iteration): a plain layer that
    computes what the normalised one does in eval mode. In place; returns ``net``."""
    for m in list(net.modules()):
        if _is_spectral(m):
            was_training = m.training
            m.eval()  # no power-iteration step while reading the weight
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            m.train(was_training)
    return net
