"""Image and file I/O: robust image loading and atomic writes."""
from facesieve.io.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from facesieve.io.images import ImageError, ImageInput, ImageTypeError, describe_error, load_image, to_rgb_uint8

__all__ = [
    "ImageError",
    "ImageInput",
    "ImageTypeError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "describe_error",
    "load_image",
    "to_rgb_uint8",
]
