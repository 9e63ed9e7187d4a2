"""Image loading and preprocessing for the image backbones.

An image reference is a local path, a ``file://`` URI, or the pixels themselves as a numpy array
or torch tensor. Remote images are never fetched: training stays on local files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DataError
from .spec import Preprocessor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocessor", "load_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet (RGB, values in [0, 1]), which the pretrained weights expect."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet (RGB, values in [0, 1])."""

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHANNELS = (1, 2, 3, 4)  # gray, gray+alpha, RGB, RGBA


def load_image(ref: Any) -> torch.Tensor:
    """An image as a float32 tensor of shape ``(3, H, W)`` with values in ``[0, 1]``.

    *ref* is a local path (``str`` or path-like), a ``file://`` URI, or a numpy array or torch
    tensor: ``HxW`` (grayscale), ``HxWxC`` or ``CxHxW`` with 1 to 4 channels, ``uint8`` values
    in 0..255 or floats in 0..1. Gray images are repeated into three channels and alpha is
    dropped. When both layouts fit (a 3x3x3 array), numpy arrays are read as ``HxWxC`` and
    tensors as ``CxHxW``.
    """
    if isinstance(ref, (str, os.PathLike)):
        return _load_file(_local_path(ref))
    if isinstance(ref, np.ndarray):
        try:
            pixels = torch.from_numpy(np.ascontiguousarray(ref))
        except TypeError as exc:
            raise DataError(
                f"an image array of dtype {ref.dtype} cannot be read; give uint8 (0..255) or "
                "float (0..1) pixels."
            ) from exc
        return _from_pixels(pixels, channels_last=True)
    if isinstance(ref, torch.Tensor):
        return _from_pixels(ref.detach().cpu(), channels_last=False)
    raise DataError(
        f"cannot use a {type(ref).__name__} as an image; give a local file path, a file:// URI, "
        "or the pixels as a numpy array or torch tensor."
    )


def _local_path(ref: str | os.PathLike[str]) -> Path:
    text = os.fspath(ref)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if _URI.match(text):
        parsed = urlparse(text)
        if parsed.scheme.lower() != "file":
            raise DataError(
                f"{text} is a remote image; remote images are not fetched. Download it and "
                "give the local file path (or a file:// URI)."
            )
        if parsed.netloc not in ("", "localhost"):
            raise DataError(
                f"{text} names a file on host '{parsed.netloc}'; give a file on this machine "
                "(file:///absolute/path)."
            )
        return Path(url2pathname(unquote(parsed.path)))
    return Path(text).expanduser()


def _load_file(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise DataError(
            f"image file not found: {path} (relative paths start from {Path.cwd()}); give the "
            "path of an image file on this machine."
        )
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an image file; give the path of one image.")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot read {path} as an image ({type(exc).__name__}: {exc}); give a PNG, JPEG or "
            "another format Pillow reads, or remove the file from the data."
        ) from exc
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8))
    return pixels.permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()


def _channels_first(pixels: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    if pixels.ndim == 2:
        return pixels.unsqueeze(0)
    if pixels.ndim == 3:
        first, last = pixels.shape[0] in _CHANNELS, pixels.shape[-1] in _CHANNELS
        if last and (channels_last or not first):
            return pixels.permute(2, 0, 1)
        if first:
            return pixels
    raise DataError(
        "an image array must be HxW, HxWxC or CxHxW with 1 to 4 channels; got shape "
        f"{tuple(pixels.shape)}."
    )


def _from_pixels(pixels: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    shape = tuple(pixels.shape)
    pixels = _channels_first(pixels, channels_last=channels_last)
    if pixels.shape[1] == 0 or pixels.shape[2] == 0:
        raise DataError(f"an image array of shape {shape} is empty (no pixels).")
    if pixels.dtype == torch.bool:
        pixels = pixels.to(torch.float32)
    elif not pixels.is_floating_point():
        if int(pixels.min()) < 0 or int(pixels.max()) > 255:
            raise DataError(
                f"an integer image array must hold values in 0..255; this {shape} "
                f"{str(pixels.dtype).replace('torch.', '')} array holds "
                f"{int(pixels.min())}..{int(pixels.max())}."
            )
        pixels = pixels.to(torch.float32) / 255.0
    else:
        pixels = pixels.to(torch.float32)
        if not torch.isfinite(pixels).all():
            raise DataError(f"an image array of shape {shape} holds NaN or infinite values.")
        if float(pixels.min()) < -1e-3 or float(pixels.max()) > 1.0 + 1e-3:
            raise DataError(
                f"a float image array must hold values in 0..1; this one of shape {shape} holds "
                f"{float(pixels.min()):.3g}..{float(pixels.max()):.3g}. Divide 0..255 pixels by "
                "255 (or give uint8), and give raw pixels, not already normalised ones."
            )
        pixels = pixels.clamp(0.0, 1.0)
    channels = pixels.shape[0]
    if channels in (1, 2):  # gray, or gray with alpha
        pixels = pixels[:1].expand(3, -1, -1)
    return pixels[:3].contiguous()


class ImagePreprocessor(Preprocessor):
    """Loads a batch of image references, resizes each to ``height x width`` (bilinear, with
    antialiasing) and normalises the channels with *mean* and *std*; returns a float32 tensor
    ``(B, 3, height, width)``.

    A 4-D tensor is taken as a batch of pixel images (``BxCxHxW`` or ``BxHxWxC``, values as for
    :func:`load_image`).
    """

    modality = "image"

    def __init__(
        self,
        height: int = 224,
        width: int = 224,
        normalization: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.height = int(height)
        self.width = int(width)
        self.normalization = bool(normalization)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, values: Any) -> torch.Tensor:
        images = [self._resized(load_image(value)) for value in values]
        if not images:
            return torch.zeros(0, 3, self.height, self.width)
        batch = torch.stack(images)
        if self.normalization:
            mean = torch.tensor(self.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.std).view(1, 3, 1, 1)
            batch = (batch - mean) / std
        return batch

    def _resized(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[1:]) == (self.height, self.width):
            return image
        return F.interpolate(
            image.unsqueeze(0),
            size=(self.height, self.width),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).squeeze(0)

    def __repr__(self) -> str:
        return (
            f"ImagePreprocessor(height={self.height}, width={self.width}, "
            f"normalization={self.normalization})"
        )
