"""Procedural street scenes with exact labels, in the Cityscapes layout: our stand-in for Cityscapes.

Real datasets cannot be downloaded here, so tests and demos train and evaluate on frames drawn by a
pinhole camera over a simple world: a (possibly curving) road with lane markings, kerbs and tiled
sidewalks, grass strips, walls and fences, building facades with windows, trees, poles with signs and
traffic lights, parked and moving cars, pedestrians, sky with clouds, and sometimes the ego vehicle's
bonnet (labelled as ignore). Sizes follow perspective, each class has its own colour and texture,
and global lighting, cast shadows, blur and sensor noise vary per frame. A frame depends only on
(seed, index), so a dataset is reproducible and frames do not change when `n` does.

Files are named as Cityscapes names them (`synth_000000_<index>_leftImg8bit.png`, city "synth"), and
labels are written as Cityscapes *label ids* (`*_gtFine_labelIds.png`), as train ids
(`*_gtFine_labelTrainIds.png`) and as `*_gtFine_instanceIds.png` (no instances are drawn apart, so
every pixel holds its label id, what Cityscapes writes for crowd regions), so the Cityscapes reader,
the official cityscapesScripts evaluation and tools that train on train ids read a synthetic tree
unchanged.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, overload

import numpy as np

from ..atomic import disk_full, no_room
from ..classes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID
from ..errors import ConfigError

__all__ = ["SYNTH_CLASSES", "SYNTH_CITY", "DEFAULT_FRAME_SIZE", "label_id", "generate_frame", "frame_paths",
           "sibling_label_path", "write_dataset", "SynthSummary"]

#: Label id for each class name, derived from the Cityscapes table (never re-typed).
_LABEL_ID: dict[str, int] = {CITYSCAPES_CLASSES[t]: lid for lid, t in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items()}
#: Cityscapes label id of "ego vehicle" (not a train class: maps to ignore).
_EGO_VEHICLE_ID = 1

#: The train classes the generator draws.
SYNTH_CLASSES: tuple[str, ...] = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                                  "traffic sign", "vegetation", "terrain", "sky", "person", "car")

#: Default frame size (width, height): the paper's model input size, so no resize is needed to train.
DEFAULT_FRAME_SIZE: tuple[int, int] = (1024, 512)

_NEAR = 2.0     # metres; nearer geometry is below the bottom of the frame for every camera drawn
_FAR = 400.0    # metres; the ground ends here (a few pixels under the horizon)


def label_id(name: str) -> int:
    """Cityscapes label id of a train-class name ('road' -> 7)."""
    return _LABEL_ID[name]


# -- drawing ---------------------------------------------------------------------------------------------
class _Canvas:
    """A BGR image and a label-id map drawn together, plus the pinhole camera that projects the world."""

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        import cv2

        self.cv2 = cv2
        self.rng = rng
        self.w, self.h = width, height
        self.image = np.zeros((height, width, 3), np.uint8)
        self.label = np.full((height, width), label_id("sky"), np.uint8)
        self.shade = np.ones((height, width), np.float32)  # cast shadows, applied to the ground only
        self.f = width * rng.uniform(0.75, 1.1)
        self.cam_h = rng.uniform(1.2, 1.7)
        self.cx = width / 2 + rng.uniform(-0.08, 0.08) * width
        self.horizon = height * rng.uniform(0.36, 0.5)
        self.curve = rng.uniform(-1.0, 1.0) * 1.2e-3 if rng.random() < 0.6 else 0.0
        self.offset = rng.uniform(-1.5, 1.5)  # camera's lateral position on the road

    # world (X right, Y up, Z forward; metres) -> pixels. The road's centre line is X = lateral(Z).
    @overload
    def lateral(self, z: float) -> float: ...

    @overload
    def lateral(self, z: np.ndarray) -> np.ndarray: ...

    def lateral(self, z: np.ndarray | float) -> np.ndarray | float:
        return self.curve * np.asarray(z) ** 2 - self.offset

    def project(self, x: Any, y: Any, z: Any) -> np.ndarray:
        """World points (broadcast arrays of X, Y, Z) -> ... x 2 int32 pixel coordinates."""
        z = np.asarray(z, np.float64)
        u = self.cx + self.f * np.asarray(x, np.float64) / z
        v = self.horizon + self.f * (self.cam_h - np.asarray(y, np.float64)) / z
        u, v = np.broadcast_arrays(u, v)
        out = np.empty(u.shape + (2,), np.int32)
        np.rint(u, out=out[..., 0], casting="unsafe")
        np.rint(v, out=out[..., 1], casting="unsafe")
        return out

    @overload
    def scale(self, z: float) -> float: ...

    @overload
    def scale(self, z: np.ndarray) -> np.ndarray: ...

    def scale(self, z: np.ndarray | float) -> np.ndarray | float:
        """Pixels per metre at distance z."""
        return self.f / z

    def fill(self, pts: np.ndarray, colour: Any, name: str | None) -> None:
        """Fill a polygon in the image (anti-aliased) and, with a class name, in the label map."""
        pts = np.asarray(pts, np.int32).reshape(-1, 1, 2)
        self.cv2.fillPoly(self.image, [pts], _bgr(colour), lineType=self.cv2.LINE_AA)
        if name is not None:
            self.cv2.fillPoly(self.label, [pts], label_id(name) if name != "ego" else _EGO_VEHICLE_ID)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float], colour: Any, name: str | None) -> None:
        c = (int(round(centre[0])), int(round(centre[1])))
        a = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
        self.cv2.ellipse(self.image, c, a, 0, 0, 360, _bgr(colour), -1, lineType=self.cv2.LINE_AA)
        if name is not None:
            self.cv2.ellipse(self.label, c, a, 0, 0, 360, label_id(name), -1)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Any, name: str | None) -> None:
        self.fill(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), colour, name)

    def ground_strip(self, a: float, b: float, colour: Any, name: str, z0: float = _NEAR, z1: float = _FAR) -> None:
        """The ground between lateral offsets a < b from the road's centre line, from z0 to z1."""
        z = np.geomspace(z0, z1, 48)
        lat = self.lateral(z)
        near_to_far = self.project(lat + a, 0.0, z)
        far_to_near = self.project(lat + b, 0.0, z)[::-1]
        self.fill(np.concatenate([near_to_far, far_to_near]), colour, name)

    def vertical_quad(self, x0: float, z0: float, x1: float, z1: float, y0: float, y1: float, colour: Any,
                      name: str | None) -> np.ndarray:
        """A vertical rectangle in the world from (x0, z0) to (x1, z1), heights y0..y1; returns its corners."""
        pts = self.project([x0, x1, x1, x0], [y0, y0, y1, y1], [z0, z1, z1, z0])
        self.fill(pts, colour, name)
        return pts


def _bgr(colour: Any) -> tuple[int, int, int]:
    b, g, r = float(colour[0]), float(colour[1]), float(colour[2])
    return int(min(255.0, max(0.0, b))), int(min(255.0, max(0.0, g))), int(min(255.0, max(0.0, r)))


def _jitter(rng: np.random.Generator, colour: tuple[float, float, float], amount: float) -> np.ndarray:
    """A colour varied by +-amount per channel and a shared brightness factor."""
    return np.asarray(colour, np.float64) * rng.uniform(0.85, 1.15) + rng.uniform(-amount, amount, 3)


# Base colours, BGR. Each class keeps a recognisable hue; instances vary around it.
_ROAD = (88, 84, 82)
_SIDEWALK = (150, 150, 170)
_KERB = (175, 175, 180)
_TERRAIN = (70, 170, 150)
_VEGETATION = (40, 110, 45)
_TRUNK = (35, 55, 80)
_WALL = (150, 160, 165)
_FENCE = (60, 90, 120)
_POLE = (120, 120, 118)
_FACADES = ((70, 80, 150), (120, 150, 180), (95, 95, 100), (150, 170, 190), (60, 70, 110), (165, 160, 150))
_CAR_PAINT = ((40, 40, 190), (190, 190, 195), (25, 25, 28), (160, 80, 30), (230, 230, 230), (40, 120, 40),
              (30, 170, 220), (120, 40, 90))
_CLOTHES = ((40, 40, 40), (140, 60, 30), (30, 30, 150), (170, 170, 170), (40, 100, 170), (90, 40, 120),
            (20, 140, 200))
_SKIN = ((120, 160, 210), (90, 130, 180), (60, 85, 120), (140, 180, 225))
_SIGNS = ("stop", "prohibit", "mandatory", "warning", "info")


def _draw_sky(c: _Canvas) -> None:
    rng = c.rng
    top = _jitter(rng, (200, 140, 90), 20)          # BGR: blue sky
    bottom = _jitter(rng, (235, 210, 190), 15)      # paler towards the horizon
    if rng.random() < 0.3:                           # overcast
        grey = rng.uniform(170, 230)
        top, bottom = np.full(3, grey - 20), np.full(3, grey)
    t = (np.arange(c.h, dtype=np.float64) / max(c.horizon, 1.0)).clip(0, 1)[:, None]
    column = (top[None] * (1 - t) + bottom[None] * t).astype(np.uint8)
    c.image[:] = c.cv2.resize(column[:, None, :], (c.w, c.h), interpolation=c.cv2.INTER_NEAREST)
    for _ in range(rng.integers(0, 6)):              # clouds: soft white ellipses
        cx, cy = rng.uniform(0, c.w), rng.uniform(0, c.horizon * 0.8)
        a = rng.uniform(0.05, 0.2) * c.w
        c.ellipse((cx, cy), (a, a * rng.uniform(0.15, 0.35)), _jitter(rng, (235, 235, 235), 10), None)


def _draw_ground(c: _Canvas, layout: dict[str, float]) -> None:
    rng = c.rng
    rw, sw = layout["road"], layout["sidewalk"]
    half = rw / 2
    for side in (-1, 1):                             # terrain out to the far field, then the grass strips
        a, b = sorted((side * (half + sw), side * 60.0))
        c.ground_strip(a, b, _jitter(rng, _TERRAIN, 15), "terrain")
    c.ground_strip(-half, half, _jitter(rng, _ROAD, 8), "road")
    line = _jitter(rng, (225, 225, 225), 10)
    for x in (-half + 0.3, half - 0.45):              # solid edge lines
        c.ground_strip(x, x + 0.15, line, "road")
    z = 3.0 + rng.uniform(0, 9)
    while z < 120:                                    # dashed centre line: 3 m dashes every 9 m
        c.ground_strip(-0.07, 0.07, line, "road", z, z + 3.0)
        z += 9.0
    for side in (-1, 1):
        a, b = sorted((side * half, side * (half + sw)))
        colour = _jitter(rng, _SIDEWALK, 12)
        c.ground_strip(a, b, colour, "sidewalk")
        kerb = (a, a + 0.2) if side > 0 else (b - 0.2, b)
        c.ground_strip(*kerb, _jitter(rng, _KERB, 8), "sidewalk")
        joint = np.asarray(colour) * 0.75             # paving joints every metre and along the strip
        zj = np.arange(_NEAR, 60.0, 1.0)[:, None]
        across = c.project(c.lateral(zj) + np.array([[a, b]]), 0.0, zj)
        zz = np.geomspace(_NEAR, 60.0, 24)[None, :]
        along = c.project(c.lateral(zz) + np.arange(a + 0.2, b, 1.0)[:, None], 0.0, zz)
        c.cv2.polylines(c.image, list(across) + list(along), False, _bgr(joint), 1, c.cv2.LINE_AA)


def _draw_shadows(c: _Canvas) -> None:
    """Bands across the street (buildings' cast shadows); `_finish` darkens the ground under them."""
    rng = c.rng
    for _ in range(rng.integers(0, 4)):
        z0 = rng.uniform(4, 40)
        z1 = z0 + rng.uniform(2, 15)
        side = rng.choice([-1, 1])
        x_in = rng.uniform(-4, 4)
        z = np.geomspace(z0, z1, 12)
        lat = c.lateral(z)
        pts = np.concatenate([c.project(lat + x_in, 0.0, z), c.project(lat + side * 40.0, 0.0, z)[::-1]])
        c.cv2.fillPoly(c.shade, [pts.reshape(-1, 1, 2)], float(rng.uniform(0.45, 0.7)))


def _draw_facade(c: _Canvas, x: float, z0: float, z1: float, height: float, side: int) -> None:
    rng = c.rng
    base = _jitter(rng, _FACADES[rng.integers(len(_FACADES))], 12) * (0.8 if side > 0 else 1.0)
    c.vertical_quad(x + c.lateral(z0), z0, x + c.lateral(z1), z1, 0.0, height, base, "building")
    window = _jitter(rng, (70, 55, 45), 20) * rng.uniform(0.6, 1.3)
    frame = np.asarray(base) * 1.15
    shop = rng.random() < 0.5
    floor_h, bay = rng.uniform(2.8, 3.6), rng.uniform(2.2, 3.5)
    win_w, win_h = bay * rng.uniform(0.35, 0.6), floor_h * rng.uniform(0.35, 0.55)
    if shop:                                          # ground-floor shop windows: one dark band
        c.vertical_quad(x + c.lateral(z0), z0 + 0.5, x + c.lateral(z1), z1 - 0.5, 0.3, 2.6, window * 0.8, None)
    zw = np.arange(z0 + (bay - win_w) / 2, z1 - win_w, bay)
    zw = zw[c.scale(zw) * win_w >= 2.5]               # too far to see: leave the facade plain
    yw = np.arange(floor_h * (1.3 if shop else 0.35), height - win_h - 0.3, floor_h)
    if zw.size and yw.size:
        zz, yy = np.meshgrid(zw, yw)
        zz, yy = zz.ravel(), yy.ravel()
        keep = rng.random(zz.size) >= 0.08
        zz, yy = zz[keep], yy[keep]
        shades = rng.uniform(0.8, 1.25, zz.size)
        for grow, colours in ((0.12, None), (0.0, shades)):  # a lighter frame, then the pane
            za, zb = zz - grow, zz + win_w + grow
            xa, xb = x + c.lateral(za), x + c.lateral(zb)
            corners = c.project(np.stack([xa, xb, xb, xa], 1), np.stack([yy - grow, yy - grow, yy + win_h + grow,
                                                                          yy + win_h + grow], 1), np.stack([za, zb, zb, za], 1))
            for k, pts in enumerate(corners):
                c.fill(pts, frame if colours is None else window * colours[k], None)
    cornice = np.asarray(base) * 0.7
    c.vertical_quad(x + c.lateral(z0), z0, x + c.lateral(z1), z1, height - 0.4, height, cornice, "building")


def _draw_buildings(c: _Canvas, layout: dict[str, float]) -> list[tuple[float, int, float]]:
    """Facades on both sides, far to near; return (z, side, lateral) of the gaps, where trees go."""
    rng = c.rng
    gaps = []
    for side in (-1, 1):
        x = side * layout["setback"]
        z = _NEAR
        segments = []
        while z < 160:
            length = rng.uniform(8, 30)
            if rng.random() < 0.15:
                gaps.append((z + length / 2, side, x))
            else:
                segments.append((z, z + length, rng.uniform(6, 28)))
            z += length
        for z0, z1, height in reversed(segments):
            _draw_facade(c, x, z0, z1, height, side)
    return gaps


def _draw_boundary(c: _Canvas, layout: dict[str, float]) -> None:
    """Low walls or fences along the back of the grass strip, on some streets."""
    rng = c.rng
    for side in (-1, 1):
        kind = rng.choice(["none", "wall", "fence"], p=[0.5, 0.25, 0.25])
        if kind == "none":
            continue
        x = side * (layout["setback"] - 0.3)
        z0 = rng.uniform(_NEAR, 20)
        z1 = z0 + rng.uniform(10, 50)
        height = rng.uniform(0.8, 1.6)
        if kind == "wall":
            colour = _jitter(rng, _WALL, 15)
            c.vertical_quad(x + c.lateral(z0), z0, x + c.lateral(z1), z1, 0.0, height, colour, "wall")
            for y in np.arange(0.25, height, 0.25):       # block courses
                p = c.project([x + c.lateral(z0), x + c.lateral(z1)], y, [z0, z1])
                c.cv2.line(c.image, tuple(map(int, p[0])), tuple(map(int, p[1])), _bgr(colour * 0.8), 1, c.cv2.LINE_AA)
        else:
            colour = _jitter(rng, _FENCE, 20)
            c.vertical_quad(x + c.lateral(z0), z0, x + c.lateral(z1), z1, 0.0, height, colour * 0.6, "fence")
            for zs in np.arange(z0, z1, 0.25):            # slats
                if c.scale(zs) * 0.12 < 1:
                    break
                c.vertical_quad(x + c.lateral(zs), zs, x + c.lateral(zs + 0.12), zs + 0.12, 0.0, height, colour, "fence")


def _draw_tree(c: _Canvas, x: float, z: float) -> None:
    rng = c.rng
    s = c.scale(z)
    base = c.project(x + c.lateral(z), 0.0, z)
    trunk_h, trunk_w = rng.uniform(2.0, 4.0), rng.uniform(0.2, 0.4)
    c.rect(base[0] - trunk_w * s / 2, base[1] - trunk_h * s, base[0] + trunk_w * s / 2, base[1],
           _jitter(rng, _TRUNK, 10), "vegetation")
    radius = rng.uniform(1.5, 3.5)
    crown_y = base[1] - (trunk_h + radius * 0.7) * s
    green = _jitter(rng, _VEGETATION, 15)
    for _ in range(rng.integers(4, 9)):
        dx, dy = rng.normal(0, radius * 0.45, 2)
        r = radius * rng.uniform(0.5, 0.9)
        c.ellipse((base[0] + dx * s, crown_y + dy * s), (r * s, r * s * rng.uniform(0.8, 1.1)),
                  green * rng.uniform(0.75, 1.2), "vegetation")


def _draw_hedge(c: _Canvas, x: float, z0: float, z1: float) -> None:
    rng = c.rng
    h = rng.uniform(0.6, 1.5)
    c.vertical_quad(x + c.lateral(z0), z0, x + c.lateral(z1), z1, 0.0, h, _jitter(rng, _VEGETATION, 15), "vegetation")


def _draw_pole(c: _Canvas, x: float, z: float) -> None:
    rng = c.rng
    s = c.scale(z)
    base = c.project(x + c.lateral(z), 0.0, z)
    height, width = rng.uniform(4, 8), rng.uniform(0.12, 0.2)
    colour = _jitter(rng, _POLE, 15)
    half = max(width * s / 2, 0.6)
    c.rect(base[0] - half, base[1] - height * s, base[0] + half, base[1], colour, "pole")
    kind = rng.choice(["plain", "sign", "light", "lamp"], p=[0.15, 0.45, 0.25, 0.15])
    if kind == "sign":
        _draw_sign(c, base[0], base[1] - rng.uniform(2.2, 3.0) * s, s)
    elif kind == "light":
        _draw_traffic_light(c, base[0], base[1] - rng.uniform(2.8, 3.8) * s, s)
    elif kind == "lamp":
        arm = -np.sign(x) * rng.uniform(1.0, 2.0) * s
        top = base[1] - height * s
        c.rect(min(base[0], base[0] + arm), top, max(base[0], base[0] + arm), top + max(0.12 * s, 1), colour, "pole")
        c.rect(base[0] + arm - 0.35 * s, top, base[0] + arm + 0.35 * s, top + 0.2 * s, colour * 0.8, "pole")


def _draw_sign(c: _Canvas, u: float, v: float, s: float) -> None:
    rng = c.rng
    r = rng.uniform(0.3, 0.45) * s
    kind = _SIGNS[rng.integers(len(_SIGNS))]
    if kind == "stop":
        ang = np.linspace(0, 2 * np.pi, 9)[:-1] + np.pi / 8
        c.fill(np.stack([u + r * np.cos(ang), v + r * np.sin(ang)], 1), (30, 30, 200), "traffic sign")
        c.rect(u - r * 0.6, v - r * 0.12, u + r * 0.6, v + r * 0.12, (240, 240, 240), None)
    elif kind == "prohibit":
        c.ellipse((u, v), (r, r), (30, 30, 210), "traffic sign")
        c.ellipse((u, v), (r * 0.75, r * 0.75), (240, 240, 240), None)
    elif kind == "mandatory":
        c.ellipse((u, v), (r, r), (170, 80, 20), "traffic sign")
        c.fill(np.array([[u - r * 0.4, v + r * 0.3], [u + r * 0.4, v + r * 0.3], [u, v - r * 0.5]]), (240, 240, 240), None)
    elif kind == "warning":
        tri = np.array([[u - r, v + r * 0.8], [u + r, v + r * 0.8], [u, v - r]])
        c.fill(tri, (30, 30, 200), "traffic sign")
        c.fill(np.array([u, v]) + (tri - [u, v]) * 0.65, (240, 240, 240), None)
    else:
        c.rect(u - r * 1.4, v - r * 0.7, u + r * 1.4, v + r * 0.7, (30, 200, 230), "traffic sign")
        c.rect(u - r * 1.2, v - r * 0.5, u + r * 1.2, v + r * 0.5, (170, 80, 20), None)


def _draw_traffic_light(c: _Canvas, u: float, v: float, s: float) -> None:
    rng = c.rng
    w, h = 0.35 * s, 0.95 * s
    c.rect(u - w / 2, v - h / 2, u + w / 2, v + h / 2, _jitter(rng, (30, 30, 30), 8), "traffic light")
    lit = rng.integers(3)
    for i, colour in enumerate(((40, 40, 230), (40, 200, 240), (90, 220, 60))):
        bright = np.asarray(colour) * (1.0 if i == lit else 0.25)
        c.ellipse((u, v - h / 3 + i * h / 3), (w * 0.3, w * 0.3), bright, None)


def _draw_car(c: _Canvas, x: float, z: float) -> None:
    """A box-shaped car whose rear faces the camera; the side facing the road centre shows too."""
    rng = c.rng
    w, length = rng.uniform(1.7, 2.0), rng.uniform(3.8, 4.8)
    body_h, cabin_h = rng.uniform(0.6, 0.9), rng.uniform(0.55, 0.75)
    paint = _jitter(rng, _CAR_PAINT[rng.integers(len(_CAR_PAINT))], 15)
    glass = _jitter(rng, (60, 45, 40), 10)
    xl, xr = x + c.lateral(z) - w / 2, x + c.lateral(z) + w / 2
    zf, y0 = z + length, 0.25
    visible_side = xl if xl > 0 else (xr if xr < 0 else None)
    if visible_side is not None:
        xs = visible_side + c.lateral(zf) - c.lateral(z)
        c.vertical_quad(visible_side, z, xs, zf, y0, y0 + body_h, paint * 0.8, "car")
        c.vertical_quad(visible_side + 0.15 * np.sign(-visible_side), z + 0.8, xs + 0.15 * np.sign(-visible_side),
                        zf - 1.2, y0 + body_h, y0 + body_h + cabin_h, glass, "car")
        for zw in (z + 0.8, zf - 0.8):
            centre = c.project(visible_side + c.lateral(zw) - c.lateral(z), 0.33, zw)
            r = 0.33 * c.scale(zw)
            c.ellipse(tuple(centre), (r * 0.45, r), (25, 25, 25), "car")
    s = c.scale(z)
    rear = c.vertical_quad(xl, z, xr, z, y0, y0 + body_h, paint, "car")
    inset = 0.15
    c.vertical_quad(xl + inset, z + 0.5, xr - inset, z + 0.5, y0 + body_h, y0 + body_h + cabin_h, paint * 0.9, "car")
    c.vertical_quad(xl + 2 * inset, z + 0.45, xr - 2 * inset, z + 0.45, y0 + body_h + 0.08, y0 + body_h + cabin_h - 0.08,
                    glass, "car")
    (u0, _), (u1, vb) = rear[0], rear[1]
    for ux in (u0 + 0.25 * s, u1 - 0.25 * s):         # wheels below the rear bumper
        c.rect(ux - 0.14 * s, vb, ux + 0.14 * s, vb + y0 * s, (20, 20, 20), "car")
    vt = vb - body_h * s * 0.8
    for ux in (u0 + 0.05 * s, u1 - 0.3 * s):          # tail lights
        c.rect(ux, vt, ux + 0.25 * s, vt + 0.12 * s, (30, 30, 200), "car")


def _draw_person(c: _Canvas, x: float, z: float) -> None:
    rng = c.rng
    s = c.scale(z)
    u, v = c.project(x + c.lateral(z), 0.0, z)
    height = rng.uniform(1.55, 1.95)
    top = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 15)
    legs = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 15) * 0.7
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10)
    stride = rng.uniform(-0.2, 0.2) * s
    leg_top, hip_w = v - 0.47 * height * s, 0.13 * s
    for sign in (-1, 1):
        foot = u + sign * (stride / 2 + hip_w * 0.4)
        c.fill(np.array([[u + sign * hip_w - 0.07 * s, leg_top], [u + sign * hip_w + 0.07 * s, leg_top],
                         [foot + 0.06 * s, v], [foot - 0.06 * s, v]]), legs, "person")
    shoulder = v - 0.82 * height * s
    c.fill(np.array([[u - 0.22 * s, shoulder], [u + 0.22 * s, shoulder], [u + 0.17 * s, leg_top + 0.05 * s],
                     [u - 0.17 * s, leg_top + 0.05 * s]]), top, "person")
    for sign in (-1, 1):
        c.fill(np.array([[u + sign * 0.2 * s, shoulder], [u + sign * 0.28 * s, shoulder + 0.03 * s],
                         [u + sign * 0.26 * s + stride * 0.3, leg_top + 0.05 * s],
                         [u + sign * 0.19 * s + stride * 0.3, leg_top + 0.05 * s]]), top * 0.9, "person")
    head_r = 0.11 * s
    c.ellipse((u, shoulder - head_r * 1.1), (head_r * 0.85, head_r), skin, "person")
    c.ellipse((u, shoulder - head_r * 1.6), (head_r * 0.85, head_r * 0.5), _jitter(rng, (20, 30, 50), 15), "person")


def _draw_ego(c: _Canvas) -> None:
    """The bonnet of the recording car at the bottom of the frame, labelled ego vehicle (ignored)."""
    rng = c.rng
    top = c.h * rng.uniform(0.88, 0.95)
    colour = _jitter(rng, _CAR_PAINT[rng.integers(len(_CAR_PAINT))], 10) * 0.6
    pts = np.array([[-10, c.h], [-10, top + 0.04 * c.h], [c.w * 0.2, top], [c.w * 0.8, top],
                    [c.w + 10, top + 0.04 * c.h], [c.w + 10, c.h]])
    c.fill(pts, colour, "ego")


def _place_objects(c: _Canvas, layout: dict[str, float], gaps: list[tuple[float, int, float]]) -> None:
    """Trees, hedges, poles, cars and people, drawn far to near so nearer ones cover farther ones."""
    rng = c.rng
    half, sw = layout["road"] / 2, layout["sidewalk"]
    items: list[tuple[float, Any, tuple]] = []
    for z, side, x in gaps:
        items.append((z, _draw_tree, (x - side * 1.0, z)))
    for side in (-1, 1):
        if layout["terrain"] > 1.5 or rng.random() < 0.5:
            for z in np.arange(rng.uniform(4, 12), 90, rng.uniform(8, 20)):
                if rng.random() < 0.75:
                    items.append((z, _draw_tree, (side * (half + sw + min(layout["terrain"], 3.0) / 2), z)))
        if rng.random() < 0.3:
            z0 = rng.uniform(_NEAR, 30)
            items.append((z0 + 30, _draw_hedge, (side * (layout["setback"] - 0.5), z0, z0 + rng.uniform(5, 30))))
        for z in np.arange(rng.uniform(5, 15), 110, rng.uniform(12, 30)):
            items.append((z, _draw_pole, (side * (half + 0.45), z)))
        for _ in range(rng.poisson(4)):
            z = rng.uniform(4, 60)
            items.append((z, _draw_person, (side * (half + rng.uniform(0.6, sw - 0.3)), z)))
        for z in np.arange(rng.uniform(5, 20), 80, rng.uniform(6, 14)):   # parked cars at the kerb
            if rng.random() < 0.55:
                items.append((z, _draw_car, (side * (half - 1.2), z)))
    for lane in (-1, 1):                              # traffic in both lanes
        for _ in range(rng.poisson(2.0)):
            z = rng.uniform(6, 80)
            items.append((z, _draw_car, (lane * half / 2 * rng.uniform(0.5, 0.8), z)))
    if rng.random() < 0.3:                            # a pedestrian crossing the road
        z = rng.uniform(6, 30)
        items.append((z, _draw_person, (rng.uniform(-half, half), z)))
    for _, draw, args in sorted(items, key=lambda item: -item[0]):
        draw(c, *args)


# -- per-class texture, lighting and sensor ------------------------------------------------------------
#: (fine grain, mid mottling, coarse variation) amplitude per class; a class's texture is part of its look.
_TEXTURE: dict[str, tuple[float, float, float]] = {
    "road": (0.10, 0.05, 0.06), "sidewalk": (0.05, 0.03, 0.05), "building": (0.04, 0.04, 0.08),
    "wall": (0.03, 0.02, 0.04), "fence": (0.05, 0.03, 0.03), "pole": (0.02, 0.0, 0.0),
    "traffic light": (0.02, 0.0, 0.0), "traffic sign": (0.02, 0.0, 0.0), "vegetation": (0.12, 0.35, 0.10),
    "terrain": (0.10, 0.12, 0.10), "sky": (0.0, 0.0, 0.03), "person": (0.03, 0.03, 0.0), "car": (0.02, 0.0, 0.02),
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    import cv2

    small = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _finish(c: _Canvas) -> np.ndarray:
    """Class textures, lighting (exposure, colour cast, vignette), blur and sensor noise."""
    import cv2

    rng, h, w = c.rng, c.h, c.w
    amp = np.zeros((3, 256), np.float32)
    for name, a in _TEXTURE.items():
        amp[:, label_id(name)] = a
    cv2.setRNGSeed(int(rng.integers(1 << 31)))        # cv2.randn is ~4x faster than numpy's normal here
    fine = cv2.randn(np.empty((h, w), np.float32), np.zeros(1), np.ones(1))
    mod = np.ones((h, w), np.float32)
    for lut, noise in zip(amp, (fine, _smooth_noise(rng, h, w, 4), _smooth_noise(rng, h, w, 48))):
        mod += cv2.LUT(c.label, lut) * noise
    y, x = np.ogrid[0:h, 0:w]
    vignette = 1.0 - rng.uniform(0.0, 0.35) * (((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2) / 2
    mod *= vignette.astype(np.float32)
    ground = np.zeros(256, np.uint8)
    ground[[label_id("road"), label_id("sidewalk"), label_id("terrain")]] = 1
    np.copyto(mod, mod * c.shade, where=cv2.LUT(c.label, ground).astype(bool))
    gain = rng.uniform(0.6, 1.3) * rng.uniform(0.9, 1.1, 3)   # exposure and colour cast
    gain_lut = np.clip(np.arange(256, dtype=np.float64)[:, None] * gain[None], 0, 255).astype(np.uint8)
    image = cv2.multiply(cv2.LUT(c.image, gain_lut.reshape(1, 256, 3)), cv2.cvtColor(mod, cv2.COLOR_GRAY2BGR),
                         dtype=cv2.CV_32F)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    sensor = cv2.randn(np.empty((h, w), np.float32), np.zeros(1), np.array([rng.uniform(1.0, 5.0)]))
    image = cv2.add(image, cv2.cvtColor(sensor, cv2.COLOR_GRAY2BGR))
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_frame(seed: int, index: int = 0, *, size: tuple[int, int] = DEFAULT_FRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (BGR uint8 H x W x 3 image, uint8 H x W Cityscapes label ids), fixed by (seed, index)."""
    width, height = size
    if width < 16 or height < 16:
        raise ConfigError(f"frame size {width}x{height} is too small to draw a street; use at least 16x16")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    c = _Canvas(rng, width, height)
    road = rng.uniform(6.0, 12.0)
    sidewalk = rng.uniform(2.0, 4.5)
    terrain = rng.uniform(0.0, 4.0) if rng.random() < 0.6 else 0.0
    layout = {"road": road, "sidewalk": sidewalk, "terrain": terrain,
              "setback": road / 2 + sidewalk + terrain + 0.3}
    _draw_sky(c)
    _draw_ground(c, layout)
    gaps = _draw_buildings(c, layout)
    _draw_boundary(c, layout)
    _draw_shadows(c)
    _place_objects(c, layout, gaps)
    if rng.random() < 0.3:
        _draw_ego(c)
    return _finish(c), c.label


# -- writing a dataset -----------------------------------------------------------------------------------
#: The city every synthetic frame is filed under (sequence 0, frame number = index).
SYNTH_CITY = "synth"


def frame_paths(root: str | os.PathLike, split: str, index: int) -> tuple[Path, Path]:
    """(image, label-id) paths of frame `index` in the Cityscapes layout under `root`."""
    from .cityscapes import IMAGE_SUFFIX, LABEL_IDS_SUFFIX, frame_id

    root = Path(root)
    stem = frame_id(SYNTH_CITY, 0, index)
    return (root / "leftImg8bit" / split / SYNTH_CITY / f"{stem}{IMAGE_SUFFIX}",
            root / "gtFine" / split / SYNTH_CITY / f"{stem}{LABEL_IDS_SUFFIX}")


def sibling_label_path(label_ids_path: Path, suffix: str) -> Path:
    """Another gtFine file of the same frame (e.g. `cityscapes.TRAIN_IDS_SUFFIX`) next to its `*_gtFine_labelIds.png`."""
    from .cityscapes import LABEL_IDS_SUFFIX

    return label_ids_path.with_name(label_ids_path.name[: -len(LABEL_IDS_SUFFIX)] + suffix)


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    """What `write_dataset` wrote."""

    root: Path
    train: int
    val: int
    size: tuple[int, int]
    seed: int


def write_dataset(root: str | os.PathLike, *, n: int = 200, seed: int = 0, size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                  val_fraction: float = 0.2, progress: bool = True) -> SynthSummary:
    """Write `n` frames under `root` in the Cityscapes layout: the first ones train, the last `val_fraction` val."""
    import cv2

    from .cityscapes import INSTANCE_IDS_SUFFIX, TRAIN_IDS_SUFFIX, label_id_encoding

    to_train_ids = label_id_encoding().lut
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"the val fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    n_train = n - n_val
    frames = range(n)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc="synth", unit="frame")
    for i in frames:
        image, label = generate_frame(seed, i, size=size)
        image_path, label_path = frame_paths(root, "train" if i < n_train else "val", i)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        if not (cv2.imwrite(str(image_path), image, png) and cv2.imwrite(str(label_path), label, png)
                and cv2.imwrite(str(sibling_label_path(label_path, TRAIN_IDS_SUFFIX)), to_train_ids[label], png)
                and cv2.imwrite(str(sibling_label_path(label_path, INSTANCE_IDS_SUFFIX)), label.astype(np.uint16), png)):
            if no_room(image_path.parent):  # OpenCV's writer says only False
                raise disk_full(image_path)
            raise OSError(f"could not write {image_path} / {label_path}; check the folder is writable")
    return SynthSummary(root=Path(root), train=n_train, val=n_val, size=(int(size[0]), int(size[1])), seed=int(seed))
