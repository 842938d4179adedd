"""Area (box-average) resampling from integral images, as PyTorch's
``interpolate(mode="area")`` computes it: whole pyramid levels (``resize_area``), batches of
crops (``crop_resize_area``), and the banded stand-in for big images that reads only the
image rows a band needs (``BandedImages``, ``area_rows``: same results, bounded memory)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np

from facesieve.nets.mtcnn import IMAGE_MEAN, IMAGE_SCALE


class IntegralImages:
    """Summed-area tables of a batch of RGB uint8 images in one flat (rows, 4) uint32 table.

    Image i's table is ``sat(i)``, (H + 1, W + 1, 4): entry [y, x, c] = sum of channel c
    over pixels [0, y) x [0, x) (c = 0, 1, 2: R, G, B; channel 3 is padding). Entries wrap
    modulo 2**32, yet the difference of four entries is exact for any rectangle whose true
    sum is < 2**32 (every resampling bin here), even on huge images.

    Four channels make an entry 16 bytes: ``packed`` views the table as one complex128 per
    entry, so that gathers copy single 16-byte items (numpy's fast path, ~2x faster than
    gathering 12-byte rows).
    """

    def __init__(self, images: Sequence[np.ndarray], map_fn: Callable[..., list[Any]] | None = None) -> None:
        """map_fn: optional parallel ``map(fn, items) -> list`` (the tables are independent)."""
        self.shapes = [im.shape[:2] for im in images]
        sizes = np.array([(h + 1) * (w + 1) for h, w in self.shapes], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.table = np.empty((int(sizes.sum()), 4), np.uint32)
        self.packed = self.table.view(np.complex128).reshape(-1)
        self.strides = np.array([w + 1 for _, w in self.shapes], np.int64)

        def fill(i: int) -> None:
            rgba = cv2.cvtColor(np.ascontiguousarray(images[i]), cv2.COLOR_RGB2RGBA)
            cv2.integral(rgba, sum=self.sat(i).view(np.int32), sdepth=cv2.CV_32S)

        (map_fn or (lambda f, xs: [f(x) for x in xs]))(fill, range(len(images)))

    @classmethod
    def of_table(cls, sat: np.ndarray) -> "IntegralImages":
        """One image given by its (H + 1, W + 1, 4) uint32 table (e.g. ``band_table``)."""
        self = cls.__new__(cls)
        self.shapes = [(sat.shape[0] - 1, sat.shape[1] - 1)]
        self.offsets = np.zeros(1, np.int64)
        self.table = np.ascontiguousarray(sat).reshape(-1, 4)
        self.packed = self.table.view(np.complex128).reshape(-1)
        self.strides = np.array([sat.shape[1]], np.int64)
        return self

    def sat(self, i: int) -> np.ndarray:
        h, w = self.shapes[i]
        o = int(self.offsets[i])
        return self.table[o:o + (h + 1) * (w + 1)].reshape(h + 1, w + 1, 4)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Entries at flat row indices ``index`` (any shape) -> index.shape + (4,) uint32."""
        return take_entries(self.packed, index)


def take_entries(packed: np.ndarray, index: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.take`` on a complex128 view of 4-channel uint32 entries (``IntegralImages.packed``
    or a row block of it), returned as uint32 with the 4 channels last: result shape
    ``np.take(packed, index, axis).shape + (4,)``."""
    out = np.take(packed, index, axis=axis)
    return out.view(np.uint32).reshape(*out.shape, 4)


def area_bins(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins of PyTorch's area resampling (adaptive average pooling) of ``length`` pixels
    starting at ``start`` onto ``size`` outputs: bin i covers [lo, hi) with
    lo = start + floor(i * length / size), hi = start + ceil((i + 1) * length / size).

    start, length: (N,) ints -> lo, hi: (N, size) int64.
    """
    i = np.arange(size, dtype=np.int64)[None, :]
    start = np.asarray(start, dtype=np.int64)[:, None]
    length = np.asarray(length, dtype=np.int64)[:, None]
    return start + (i * length) // size, start + ((i + 1) * length + size - 1) // size


def normalize(pixels: np.ndarray) -> np.ndarray:
    """RGB 0..255 float32 -> network input ``(pixel - 127.5) * (1 / 128)``, in place."""
    pixels -= np.float32(IMAGE_MEAN)
    pixels *= np.float32(IMAGE_SCALE)
    return pixels


def _bin_means(sums: np.ndarray, bin_h: np.ndarray, bin_w: np.ndarray, network_input: bool) -> np.ndarray:
    """(..., h, w, 4) uint32 bin sums -> (..., h, w, 3) float32 means: sum / bin height / bin
    width, in that order and in float32, as PyTorch's adaptive average pooling divides;
    then ``normalize``d if ``network_input``. bin_h: (..., h) and bin_w: (..., w) pixel
    counts. The result is a view of a (..., h, w, 4) array: every pass runs on contiguous
    4-channel data (several times faster than on 3-channel views)."""
    out = sums.astype(np.float32)
    out /= bin_h.astype(np.float32)[..., :, None, None]
    out /= bin_w.astype(np.float32)[..., None, :, None]
    if network_input:
        normalize(out)
    return out[..., :3]


def resize_area(sat: np.ndarray, height: int, width: int, network_input: bool = False) -> np.ndarray:
    """Whole image (given by its (H + 1, W + 1, 4) summed-area table) -> (height, width, 3)
    float32 0..255, equal to ``torch.nn.functional.interpolate(img, (height, width),
    mode="area")`` (bin sum / bin height / bin width in float32); ``normalize``d with
    ``network_input``."""
    h_in, w_in = sat.shape[0] - 1, sat.shape[1] - 1
    ylo, yhi = area_bins(np.zeros(1), np.array([h_in]), height)
    xlo, xhi = area_bins(np.zeros(1), np.array([w_in]), width)
    rows = np.take(sat, yhi[0], axis=0)  # (height, W + 1, 4), contiguous row copies
    rows -= np.take(sat, ylo[0], axis=0)
    packed = rows.view(np.complex128)[..., 0]  # (height, W + 1), one 16-byte item per entry
    s = take_entries(packed, xhi[0], axis=1)
    s -= take_entries(packed, xlo[0], axis=1)
    return _bin_means(s, yhi[0] - ylo[0], xhi[0] - xlo[0], network_input)


def crop_resize_area(ii: IntegralImages, image: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                     x0: np.ndarray, x1: np.ndarray, size: int, network_input: bool = False) -> np.ndarray:
    """Crops rows [y0, y1) x cols [x0, x1) (0-based, inside image ``image[k]``, non-empty),
    each area-resampled to (size, size) like ``resize_area`` -> (N, size, size, 3) float32
    0..255 (``normalize``d with ``network_input``). All crops of all images in four
    vectorised gathers."""
    ylo, yhi = area_bins(y0, y1 - y0, size)
    xlo, xhi = area_bins(x0, x1 - x0, size)
    stride = ii.strides[image][:, None]
    base = ii.offsets[image][:, None]
    row_hi = (base + yhi * stride)[:, :, None]
    row_lo = (base + ylo * stride)[:, :, None]
    xh, xl = xhi[:, None, :], xlo[:, None, :]
    s = ii.gather(row_hi + xh)
    s -= ii.gather(row_lo + xh)
    s -= ii.gather(row_hi + xl)
    s += ii.gather(row_lo + xl)
    return _bin_means(s, yhi - ylo, xhi - xlo, network_input)


def band_table(image: np.ndarray, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
    """Summed-area table ((y1 - y0 + 1, x1 - x0 + 1, 4) uint32, as ``IntegralImages.sat``) of
    rows [y0, y1) x cols [x0, x1) of an RGB uint8 image: differences of its entries equal the
    whole image's table's for rectangles inside the region."""
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    out = np.empty((region.shape[0] + 1, region.shape[1] + 1, 4), np.uint32)
    cv2.integral(cv2.cvtColor(region, cv2.COLOR_RGB2RGBA), sum=out.view(np.int32), sdepth=cv2.CV_32S)
    return out


class BandedImages:
    """What the cascade reads from ``IntegralImages``, for images too large for a summed-area
    table of the whole image (16 bytes per pixel: 1.7 GB at 108 MP): crops are resampled from
    tables of just the rows and columns they cover, up to ``max_pixels`` pixels of image per
    table (a crop larger than that is summed separably, bins of rows then of columns). The
    same integer bin sums, so the same crops as ``crop_resize_area``; memory O(max_pixels)."""

    def __init__(self, images: Sequence[np.ndarray], max_pixels: int) -> None:
        self.images = images
        self.shapes = [im.shape[:2] for im in images]
        self.max_pixels = int(max_pixels)

    def crops(self, image: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray,
              size: int, network_input: bool = False) -> np.ndarray:
        """As ``crop_resize_area(ii, image, y0, y1, x0, x1, size, network_input)``."""
        n = len(y0)
        out = np.empty((n, size, size, 3), np.float32)
        order = np.lexsort((y0, image))
        k = 0
        while k < n:
            i = int(image[order[k]])
            lo, hi, clo, chi = int(y0[order[k]]), int(y1[order[k]]), int(x0[order[k]]), int(x1[order[k]])
            if (hi - lo) * (chi - clo) > self.max_pixels:  # one huge crop
                ylo, yhi = area_bins(np.array([lo]), np.array([hi - lo]), size)
                out[order[k]] = area_rows(self.images[i], ylo[0], yhi[0], clo, chi, size, network_input)
                k += 1
                continue
            end = k + 1
            while end < n and int(image[order[end]]) == i:
                j = order[end]
                nlo, nhi = lo, max(hi, int(y1[j]))
                nclo, nchi = min(clo, int(x0[j])), max(chi, int(x1[j]))
                if (nhi - nlo) * (nchi - nclo) > self.max_pixels:
                    break
                hi, clo, chi = nhi, nclo, nchi
                end += 1
            group = order[k:end]
            sat = band_table(self.images[i], lo, hi, clo, chi)
            ii = IntegralImages.of_table(sat)
            out[group] = crop_resize_area(ii, np.zeros(len(group), np.int64), y0[group] - lo, y1[group] - lo,
                                          x0[group] - clo, x1[group] - clo, size, network_input)
            k = end
        return out


def area_rows(image: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, x0: int, x1: int, width: int,
              network_input: bool = False) -> np.ndarray:
    """Area-resampled rows without a summed-area table: output row i averages image rows
    [ylo[i], yhi[i]) of columns [x0, x1), resampled to ``width`` columns (``area_bins``).
    Sums rows then columns in uint32 (exact integers, as the table's differences), then the
    same float32 division: equal to the matching rows of ``resize_area`` /
    ``crop_resize_area``. Memory: O(len(ylo) * (x1 - x0)). Returns (len(ylo), width, 3)."""
    xlo, xhi = area_bins(np.array([0]), np.array([x1 - x0]), width)
    region = image[:, x0:x1]
    cum = np.zeros((len(ylo), x1 - x0 + 1, 4), np.uint32)
    for k, (a, b) in enumerate(zip(ylo.tolist(), yhi.tolist())):
        np.cumsum(region[a:b].sum(axis=0, dtype=np.uint32), axis=0, dtype=np.uint32, out=cum[k, 1:, :3])
    sums = np.take(cum, xhi[0], axis=1)
    sums -= np.take(cum, xlo[0], axis=1)
    return _bin_means(sums, np.asarray(yhi) - np.asarray(ylo), xhi[0] - xlo[0], network_input)
