"""Image geometry: pad to a square, resize to S, map masks back; visual prompts to queries."""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .types import InputError, VisualPrompt

MEAN_RGB = (124, 116, 104)  # pad colour (ImageNet mean, 0..255)
# Mask logits are clamped to +-LOGIT_CLAMP before they are resized. Decoder logits run from
# about -300 outside an object to +10 inside; resized as they are, the zero crossing moves
# almost half a cell inwards, and the shipped weights' masks lost a quarter of their pixels
# that way (precision 0.99, recall 0.76 on test objects). sigmoid(8) is 0.9997, so no
# confidence that matters is lost.
LOGIT_CLAMP = 8.0
PROMPT_KIND_IDS = {'point': 0, 'box': 1, 'mask': 2}
POINT_HALF_SIZE = 0.01  # a point becomes a box of +-1% of the image side around it
# a point's query attends only within +-8% of the image side around it: its first mask
# (query . mask features) carries no position, so unrestricted it never found its object
POINT_WINDOW = 0.08


PLACEMENTS = ('top-left', 'centre')
# 'area': the image is resized (cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging),
# then pasted into the square; 'bicubic': the image is pasted into a square of its own
# longer side, and that square is resized with PIL's bicubic (as CLIPImageProcessor does)
INTERPOLATIONS = ('area', 'bicubic')


@dataclass(frozen=True)
class InputGeometry:
    """How a model wants its S x S input made: where the image sits, the pad, the resize.

    Read from a model config's optional attributes (core.protocol.ModelConfig); a config
    without them gets these defaults (segcap-tiny's input).
    """

    placement: str = 'top-left'  # one of PLACEMENTS
    pad_rgb: tuple[int, int, int] = MEAN_RGB
    interpolation: str = 'area'  # one of INTERPOLATIONS

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f'letterbox placement {self.placement!r}: use one of {PLACEMENTS}')
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f'resize interpolation {self.interpolation!r}: use one of '
                             f'{INTERPOLATIONS}')
        if len(self.pad_rgb) != 3 or not all(0 <= int(c) <= 255 for c in self.pad_rgb):
            raise ValueError(f'pad colour {self.pad_rgb!r} must be three values in 0..255')

    @classmethod
    def of(cls, config: object) -> 'InputGeometry':
        """The geometry a model config asks for (defaults for the attributes it lacks)."""
        default = cls()
        return cls(placement=getattr(config, 'letterbox_placement', default.placement),
                   pad_rgb=tuple(getattr(config, 'pad_rgb', default.pad_rgb)),
                   interpolation=getattr(config, 'resize_interpolation',
                                         default.interpolation))


@dataclass(frozen=True)
class Letterbox:
    """How an (height, width) image sits in the S x S model input.

    Image pixel (x, y) lands on model-input pixel (left + x * scale, top + y * scale);
    left = top = 0 is the top-left placement.
    """

    height: int
    width: int
    size: int  # S
    scale: float  # S / max(height, width)
    left: float = 0.0  # model-input pixels of padding before the image, x
    top: float = 0.0  # and y

    @property
    def extent(self) -> tuple[float, float]:
        """(height, width) of the image in the padded square, as fractions."""
        return self.height * self.scale / self.size, self.width * self.scale / self.size

    def cell_px(self, hm: int) -> float:
        """Original-image pixels across one cell of an hm x hm mask grid."""
        return self.size / (self.scale * hm)

    def to_unit(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel coordinates -> 0..1 coordinates of the padded square."""
        return (x * self.scale + self.left) / self.size, (y * self.scale + self.top) / self.size


def check_image(image: np.ndarray) -> None:
    """Raise InputError unless image is (H, W, 3) uint8 with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise InputError(f'image must be a numpy array, got {type(image).__name__}')
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f'image must be (H, W, 3) RGB, got shape {image.shape}')
    if image.dtype != np.uint8:
        raise InputError(f'image must be uint8, got {image.dtype}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError('image is empty (zero width or height)')


def letterbox(image: np.ndarray, size: int, geometry: InputGeometry = InputGeometry()
              ) -> tuple[torch.Tensor, Letterbox]:
    """(H, W, 3) uint8 RGB -> (1, 3, S, S) float32 in 0..255 and its Letterbox."""
    check_image(image)
    h, w = image.shape[:2]
    centre = geometry.placement == 'centre'
    if geometry.interpolation == 'bicubic':
        return _expand_and_resize(image, size, geometry.pad_rgb, centre)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    top, left = ((size - nh) // 2, (size - nw) // 2) if centre else (0, 0)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = geometry.pad_rgb
    canvas[top:top + nh, left:left + nw] = resized
    tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    return tensor, Letterbox(h, w, size, scale, float(left), float(top))


def _expand_and_resize(image: np.ndarray, size: int, pad_rgb: tuple[int, int, int],
                       centre: bool) -> tuple[torch.Tensor, Letterbox]:
    """The release's way (xtuner expand2square, CLIPImageProcessor): paste the image into a
    square of its longer side (centred: offset (side - short) // 2), resize it with PIL
    bicubic."""
    from PIL import Image

    h, w = image.shape[:2]
    side = max(h, w)
    top, left = ((side - h) // 2, (side - w) // 2) if centre else (0, 0)
    square = np.empty((side, side, 3), np.uint8)
    square[:] = pad_rgb
    square[top:top + h, left:left + w] = image
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC))
    scale = size / side
    tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1)[None].float()
    return tensor, Letterbox(h, w, size, scale, left * scale, top * scale)


def unletterbox(mask_logits: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """(N, Hm, Wm) logits on the padded square -> (N, H, W) logits on the original image.

    The image covers a fractional number of mask cells (e.g. 9.6 of 16). Cropping to whole
    cells and resizing that to (H, W) would stretch masks by up to half a cell; instead the
    covering cells are resized at the image's own scale and the result cropped to (H, W).
    Logits are clamped to +-LOGIT_CLAMP first, so a mask's edge stays where its cells say.
    """
    hm, wm = mask_logits.shape[-2:]
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, box.height, box.width))
    if box.left or box.top:
        return _sample_pixels(mask_logits, box)
    cover_h = box.height * box.scale / box.size * hm  # mask cells the image covers
    cover_w = box.width * box.scale / box.size * wm
    cells_h = min(hm, max(1, math.ceil(cover_h - 1e-6)))
    cells_w = min(wm, max(1, math.ceil(cover_w - 1e-6)))
    out_h = max(box.height, round(cells_h / cover_h * box.height))
    out_w = max(box.width, round(cells_w / cover_w * box.width))
    cells = mask_logits[None, :, :cells_h, :cells_w].clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
    up = F.interpolate(cells, size=(out_h, out_w),
                       mode='bilinear', align_corners=False)
    return up[0, :, :box.height, :box.width]


def _sample_pixels(mask_logits: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """unletterbox for a padded placement: each original pixel centre is sampled where it
    lies on the grid (bilinear, edge cells repeated) - the same values as resizing the grid
    to the padded square at the image's scale and cropping the padding."""
    hm, wm = mask_logits.shape[-2:]
    ys = ((torch.arange(box.height, dtype=torch.float64) + 0.5) * box.scale + box.top) / box.size
    xs = ((torch.arange(box.width, dtype=torch.float64) + 0.5) * box.scale + box.left) / box.size
    grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing='xy'), -1)
    cells = mask_logits[:, None].float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
    grid = grid.to(cells)[None].expand(cells.shape[0], -1, -1, -1)
    out = F.grid_sample(cells, grid, mode='bilinear', padding_mode='border',
                        align_corners=False)
    return out[:, 0].to(mask_logits.dtype)


@dataclass
class PromptQueries:
    """Decoder inputs for N visual prompts."""

    kinds: torch.Tensor  # (1, N) int64
    boxes: torch.Tensor  # (1, N, 4) cx, cy, w, h in 0..1 of the padded square
    restrict: torch.Tensor  # (1, N, Hm, Wm) bool: where each query may attend


def innermost_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the mask pixel farthest from the background (distance transform)."""
    y, x = inner_cell(mask, precision=5)
    return float(x) + 0.5, float(y) + 0.5


def _box_region(x0: float, y0: float, x1: float, y1: float, hm: int) -> np.ndarray:
    """(hm, hm) bool: grid cells whose centres are in the unit box; the centre cell at least."""
    centres = (np.arange(hm) + 0.5) / hm
    inside_x = (centres >= x0) & (centres <= x1)
    inside_y = (centres >= y0) & (centres <= y1)
    region = inside_y[:, None] & inside_x[None, :]
    cx = min(hm - 1, int((x0 + x1) / 2 * hm))
    cy = min(hm - 1, int((y0 + y1) / 2 * hm))
    region[cy, cx] = True
    return region


def point_window(x: float, y: float, hm: int) -> np.ndarray:
    """(hm, hm) bool: where a point prompt at unit (x, y) may attend."""
    w = POINT_WINDOW
    return _box_region(x - w, y - w, x + w, y + w, hm)


def point_queries(points: Sequence[tuple[float, float]], hm: int) -> PromptQueries:
    """Point-prompt decoder inputs for points (x, y) in 0..1 of the padded square."""
    n, s = len(points), POINT_HALF_SIZE
    kinds = torch.full((1, n), PROMPT_KIND_IDS['point'], dtype=torch.long)
    boxes = torch.tensor([[[x, y, 2 * s, 2 * s] for x, y in points]]).reshape(1, n, 4)
    restrict = torch.from_numpy(np.stack([point_window(x, y, hm) for x, y in points]))[None] \
        if n else torch.zeros((1, 0, hm, hm), dtype=torch.bool)
    return PromptQueries(kinds, boxes.float(), restrict)


def prompt_queries(prompts: Sequence[VisualPrompt], box: Letterbox, mask_size: int
                   ) -> PromptQueries:
    """Turn visual prompts (original pixel coordinates) into decoder query inputs."""
    n, hm = len(prompts), mask_size
    kinds = torch.zeros((1, n), dtype=torch.long)
    boxes = torch.zeros((1, n, 4))
    restrict = torch.ones((1, n, hm, hm), dtype=torch.bool)
    for i, p in enumerate(prompts):
        p.validate(box.height, box.width)
        kinds[0, i] = PROMPT_KIND_IDS[p.kind]
        if p.kind == 'box':  # the part of the box inside the image
            bx0, by0 = max(0.0, p.box[0]), max(0.0, p.box[1])
            bx1, by1 = min(float(box.width), p.box[2]), min(float(box.height), p.box[3])
            x0, y0 = box.to_unit(bx0, by0)
            x1, y1 = box.to_unit(bx1, by1)
            boxes[0, i] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
            restrict[0, i] = torch.from_numpy(_box_region(x0, y0, x1, y1, hm))
            continue
        if p.kind == 'mask':
            mask = np.asarray(p.mask, dtype=bool)
            x, y = box.to_unit(*innermost_point(mask))
            small = _mask_to_grid(mask, box, hm)
            restrict[0, i] = torch.from_numpy(small)
        else:
            x, y = box.to_unit(*p.point)
            restrict[0, i] = torch.from_numpy(point_window(x, y, hm))
        s = POINT_HALF_SIZE
        boxes[0, i] = torch.tensor([x, y, 2 * s, 2 * s])
    return PromptQueries(kinds, boxes, restrict)


def _mask_to_grid(mask: np.ndarray, box: Letterbox, hm: int) -> np.ndarray:
    """Original-size bool mask -> (hm, hm) bool on the padded square: the cells under it.

    Each pixel centre is mapped with the letterbox scale and offset, so any aspect ratio and
    placement is exact.
    """
    ys, xs = np.nonzero(mask)
    cells = box.scale / box.size * hm  # mask cells per original pixel
    y0, x0 = box.top / box.size * hm, box.left / box.size * hm  # padding, in cells
    grid = np.zeros((hm, hm), bool)
    grid[np.minimum(((ys + 0.5) * cells + y0).astype(np.int64), hm - 1),
         np.minimum(((xs + 0.5) * cells + x0).astype(np.int64), hm - 1)] = True
    if not grid.any():
        raise InputError('mask prompt vanishes at the model resolution')
    return grid


def inner_cell(mask: np.ndarray, precision: int = 3) -> tuple[int, int]:
    """(row, col) of the mask cell farthest from the background (distance transform with a
    3x3 or 5x5 mask)."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2,
                                 precision)[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)
