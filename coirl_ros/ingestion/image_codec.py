"""sensor_msgs/Image pixel layouts <-> RGB numpy arrays, without importing the message types."""

from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, conversion to RGB or None)
_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


def image_to_rgb(height: int, width: int, encoding: str, step: int, data: bytes | bytearray) -> np.ndarray:
    """An Image message's fields as an [H, W, 3] uint8 RGB array (a copy)."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} not supported; expected one of {sorted(_ENCODINGS)}")
    channels, conversion = _ENCODINGS[encoding]
    row = width * channels
    if step < row or len(data) < step * height:
        raise ValueError(f"{encoding} image {width}x{height}: step {step}, {len(data)} bytes is too short")
    rows = np.frombuffer(bytes(data), np.uint8)[: step * height].reshape(height, step)
    pixels = rows[:, :row].reshape(height, width, channels)
    if conversion is None:
        return pixels.copy()
    return cv2.cvtColor(pixels if channels > 1 else pixels[:, :, 0], conversion)


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to (height, width): area averaging when shrinking (no aliasing), linear when growing."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
