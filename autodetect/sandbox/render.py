"""Synthetic listing photos, drawn with Pillow from a seed.

A car is its side profile (:class:`~autodetect.sandbox.cars.Shape`) extruded across its width and
seen through an orthographic camera from a random three-quarter or side viewpoint; faces are shaded
by a random light, drawn back to front, and carry the model's details (:class:`~.cars.Look`). Paint
comes from :data:`PALETTE`, shared by every model, so colour alone never identifies a model. The
scene around the car (sky, buildings, trees, road, clutter), lighting, scale, position and mirroring
are random as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from autodetect.sandbox.cars import CarSpec, Look, Shape

RGB = tuple[int, int, int]
SIZE = (384, 288)

#: Body paints, the same for every model.
PALETTE: dict[str, RGB] = {
    "white": (236, 236, 232), "black": (24, 24, 27), "grey": (112, 115, 120), "silver": (182, 185, 190),
    "red": (176, 26, 32), "maroon": (104, 22, 32), "blue": (32, 72, 160), "navy": (28, 38, 72),
    "light blue": (122, 166, 204), "green": (34, 104, 58), "dark green": (26, 60, 42),
    "yellow": (226, 188, 34), "orange": (222, 112, 28), "beige": (198, 180, 142), "brown": (98, 68, 46),
}
#: How common each paint is (real-world shares: white, black, grey and silver first); sums to 1.
PAINT_SHARES: dict[str, float] = {name: share / 100 for name, share in zip(
    PALETTE, (18, 16, 12, 11, 9, 3, 7, 3, 3, 3, 2, 2, 3, 4, 4))}

_DETAIL_RGB: dict[str, RGB] = {
    "black": (20, 20, 22), "chrome": (206, 209, 214), "grey": (92, 95, 100), "silver": (176, 179, 184),
    "blue": (32, 62, 172), "red": (192, 26, 32), "gold": (212, 172, 62), "white": (242, 242, 242),
    "bronze": (150, 108, 58), "gunmetal": (66, 70, 76),
}
_GLASS: RGB = (38, 48, 60)
_TYRE: RGB = (30, 30, 32)
_WELL: RGB = (12, 12, 14)
_HEADLAMP: RGB = (236, 240, 246)
_TAILLAMP: RGB = (196, 20, 26)
_TAIL_SETBACK = 0.10  # the rear top edge sits this far ahead of the rear bumper
_NOSE_SETBACK = 0.14


def paint_colour(rng: np.random.Generator) -> str:
    """A paint name from :data:`PALETTE`, drawn with :data:`PAINT_SHARES`."""
    return list(PAINT_SHARES)[int(rng.choice(len(PAINT_SHARES), p=list(PAINT_SHARES.values())))]


# --- geometry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Edge:
    role: str  # front, hood, screen, roof, rear_glass, deck, rear
    a: tuple[float, float]  # (x, z) start; the profile runs counter-clockwise seen from +y
    b: tuple[float, float]


@dataclass(frozen=True)
class _Geometry:
    shape: Shape
    profile: tuple[tuple[float, float], ...]
    edges: tuple[_Edge, ...]
    cowl: tuple[float, float]
    roof_front: tuple[float, float]
    roof_rear: tuple[float, float]
    rear_base: tuple[float, float]

    def half_width(self, z: float) -> float:
        s = self.shape
        if z <= s.belt:
            return s.width / 2
        return s.width / 2 * (1 - s.tumble * min(1.0, (z - s.belt) / (s.height - s.belt)))

    def span(self, z: float) -> tuple[float, float]:
        """The body's x extent at height ``z`` (below the window line)."""
        xs = []
        pts = self.profile
        for (x0, z0), (x1, z1) in zip(pts, pts[1:] + pts[:1]):
            if (z0 - z) * (z1 - z) <= 0 and z0 != z1:
                xs.append(x0 + (z - z0) / (z1 - z0) * (x1 - x0))
        return min(xs), max(xs)


@lru_cache(maxsize=256)
def _geometry(s: Shape) -> _Geometry:
    length, ride = s.length, s.ride
    nose = (length - _NOSE_SETBACK, s.nose)
    cowl = (length - s.hood, s.belt + 0.03)
    roof_z = s.height - s.roof_arc
    roof_front = (length - s.hood - s.screen, roof_z)
    roof_rear = (s.deck + s.rear_glass + _TAIL_SETBACK, roof_z - s.roof_slope)
    rear_base = (s.deck + _TAIL_SETBACK, s.tail)
    top = [nose, cowl, roof_front]
    roles = ["front", "hood", "screen"]
    if s.roof_arc:
        for t in (0.25, 0.5, 0.75):
            top.append((roof_front[0] + t * (roof_rear[0] - roof_front[0]),
                        roof_z - t * s.roof_slope + s.roof_arc * math.sin(math.pi * t)))
            roles.append("roof")
    top += [roof_rear, rear_base]
    roles += ["roof", "rear_glass"]
    if s.deck:
        top.append((_TAIL_SETBACK, s.tail - 0.02))
        roles.append("deck")
    roles.append("rear")
    profile = [(length, ride + 0.12), *top, (0.0, ride + 0.12), (0.12, ride), (length - 0.12, ride)]
    edges = tuple(_Edge(role, profile[i], profile[i + 1]) for i, role in enumerate(roles))
    return _Geometry(s, tuple(profile), edges, cowl, roof_front, roof_rear, rear_base)


def _clip_x(poly: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """Clip a convex (x, z) polygon to lo <= x <= hi (Sutherland-Hodgman against two lines)."""
    for inside, edge in ((lambda x: x >= lo, lo), (lambda x: x <= hi, hi)):
        out: list[tuple[float, float]] = []
        for p, q in zip(poly, poly[1:] + poly[:1]):
            if inside(p[0]):
                out.append(p)
            if inside(p[0]) != inside(q[0]):
                t = (edge - p[0]) / (q[0] - p[0])
                out.append((edge, p[1] + t * (q[1] - p[1])))
        poly = out
    return poly


# --- camera -------------------------------------------------------------------------------------

class _Camera:
    """Orthographic camera on the car's +y side. ``azimuth`` > 0 looks at the front, < 0 at the rear."""

    def __init__(self, azimuth: float, elevation: float):
        ca, sa, ce, se = math.cos(azimuth), math.sin(azimuth), math.cos(elevation), math.sin(elevation)
        self.view = np.array([sa * ce, ca * ce, se])  # towards the camera
        right = np.array([-ca, sa, 0.0])
        up = np.cross(right, -self.view)
        self._m = np.stack([right, -up], axis=1)  # world -> screen (before scale and offset)
        self.scale = 1.0
        self.offset = np.zeros(2)

    def fit(self, scale: float, offset: tuple[float, float]) -> None:
        self.scale = scale
        self.offset = np.asarray(offset, dtype=float)

    def project(self, pts: np.ndarray) -> list[float]:
        """(N, 3) world points -> flat [x0, y0, x1, y1, ...] pixel list for ImageDraw."""
        return (pts @ self._m * self.scale + self.offset).ravel().tolist()

    def facing(self, normal: np.ndarray) -> float:
        return float(normal @ self.view)


# --- the car ------------------------------------------------------------------------------------

def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(max(0, min(255, int(c * factor))) for c in colour)  # type: ignore[return-value]


def _contrast(paint: RGB) -> RGB:
    """Stripe colour: white on dark paint, near-black on light paint."""
    return (236, 236, 236) if sum(paint) < 330 else (24, 24, 26)


def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 14) -> list[tuple[float, float]]:
    return [(cu + ru * math.cos(2 * math.pi * k / n), cv + rv * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _rect(u0: float, v0: float, u1: float, v1: float) -> list[tuple[float, float]]:
    return [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]


def _mirror(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-u, v) for u, v in poly]


def _lamp(kind: str, big: bool) -> list[list[tuple[float, float]]]:
    """A lamp cluster on the right half of a face (u > 0), in face coordinates (v up)."""
    u0, u1, v0, v1 = (0.5, 0.97, 0.52, 0.95) if big else (0.55, 0.96, 0.5, 0.92)
    um, vm = (u0 + u1) / 2, (v0 + v1) / 2
    return {
        "round": [_ellipse(um, vm, 0.15, 0.17)],
        "twin": [_ellipse(u0 + 0.1, vm, 0.09, 0.11), _ellipse(u1 - 0.1, vm, 0.09, 0.11)],
        "rect": [_rect(u0, v0 + 0.05, u1, v1 - 0.05)],
        "slit": [_rect(u0 - 0.05, vm - 0.04, u1, vm + 0.05)],
        "swept": [[(u0, v0 + 0.12), (u1, v0), (u1, v1), (u0 + 0.1, v1 - 0.05)]],
        "l_shape": [[(u0, v1), (u1, v1), (u1, v0), (u1 - 0.09, v0), (u1 - 0.09, v1 - 0.1), (u0, v1 - 0.1)]],
        "c_shape": [[(u1, v1), (u0, v1), (u0, v0), (u1, v0), (u1, v0 + 0.09), (u0 + 0.09, v0 + 0.09),
                     (u0 + 0.09, v1 - 0.09), (u1, v1 - 0.09)]],
        "split": [_rect(u0 - 0.04, v1 - 0.06, u1, v1), _rect(u0 + 0.12, v0, u1 - 0.04, vm - 0.02)],
        "bar": [_rect(0.0, vm - 0.05, u1, vm + 0.06)],
        "vertical": [_rect(u1 - 0.13, v0 - 0.2, u1, v1)],
        "triangle": [[(u0, v1), (u1, v1), (u1, v0 - 0.06)]],
        "slim": [_rect(u0 + 0.1, vm - 0.025, u1, vm + 0.025)],
    }[kind]


def _grille(kind: str) -> list[list[tuple[float, float]]]:
    """Grille openings in front-face coordinates (u across, v up)."""
    return {
        "wide": [_rect(-0.48, 0.34, 0.48, 0.7)],
        "hexagon": [[(-0.2, 0.12), (0.2, 0.12), (0.34, 0.42), (0.28, 0.74), (-0.28, 0.74), (-0.34, 0.42)]],
        "kidney": [_ellipse(-0.14, 0.5, 0.11, 0.2, 10), _ellipse(0.14, 0.5, 0.11, 0.2, 10)],
        "bar": [_rect(-0.5, 0.6, 0.5, 0.68), _rect(-0.55, 0.12, 0.55, 0.3)],
        "trapezoid": [[(-0.6, 0.12), (0.6, 0.12), (0.38, 0.66), (-0.38, 0.66)]],
        "oval": [_ellipse(0.0, 0.44, 0.34, 0.24)],
        "slots": [_rect(-0.45 + 0.14 * k, 0.3, -0.38 + 0.14 * k, 0.76) for k in range(7)],
        "mesh": [_rect(-0.5, 0.2, 0.5, 0.74)],
        "split": [_rect(-0.5, 0.62, 0.5, 0.76), _rect(-0.44, 0.16, 0.44, 0.44)],
        "none": [_rect(-0.4, 0.1, 0.4, 0.22)],
    }[kind]


def _badge(kind: str, cu: float, cv: float, r: float) -> list[list[tuple[float, float]]]:
    return {
        "circle": [_ellipse(cu, cv, r, r * 1.4, 10)],
        "oval": [_ellipse(cu, cv, r * 1.6, r, 10)],
        "shield": [[(cu - r, cv + r * 1.3), (cu + r, cv + r * 1.3), (cu + r, cv), (cu, cv - r * 1.5), (cu - r, cv)]],
        "diamond": [[(cu, cv + r * 1.5), (cu + r * 1.1, cv), (cu, cv - r * 1.5), (cu - r * 1.1, cv)]],
        "bowtie": [[(cu - r * 1.8, cv - r * 0.5), (cu + r * 1.8, cv - r * 0.5), (cu + r * 1.8, cv + r * 0.5),
                    (cu - r * 1.8, cv + r * 0.5)], _rect(cu - r * 0.6, cv - r, cu + r * 0.6, cv + r)],
        "rings": [_ellipse(cu + (k - 1.5) * r * 1.3, cv, r * 0.75, r, 8) for k in range(4)],
        "star": [[(cu, cv + r * 1.5), (cu + r * 0.35, cv), (cu + r * 1.3, cv - r * 0.8), (cu, cv - r * 0.3),
                  (cu - r * 1.3, cv - r * 0.8), (cu - r * 0.35, cv)]],
        "wings": [[(cu - r * 2.2, cv + r * 0.8), (cu, cv - r * 0.6), (cu + r * 2.2, cv + r * 0.8), (cu, cv + r * 0.1)]],
    }[kind]


@lru_cache(maxsize=512)
def _arc(n: int, start: float, stop: float) -> np.ndarray:
    """``n`` points on the unit circle in the x-z plane, from angle ``start`` to ``stop``."""
    ts = np.linspace(start, stop, n)
    return np.stack([np.cos(ts), np.zeros(n), np.sin(ts)], axis=1)


class _CarPainter:
    """Draws one car: far wheels, visible faces back to front with their details, the near side with
    windows, trim and wheels, then parts that stand out (mirrors, rack, spoilers)."""

    def __init__(self, draw: ImageDraw.ImageDraw, spec: CarSpec, paint: RGB, cam: _Camera, light: np.ndarray):
        self.d = draw
        self.geo = _geometry(spec.shape)
        self.s = spec.shape
        self.look: Look = spec.look
        self.paint = paint
        self.cam = cam
        self.light = light

    # -- helpers
    def _lit(self, colour: RGB, normal: np.ndarray) -> RGB:
        diffuse = max(0.0, float(normal @ self.light))
        return _shade(colour, 0.52 + 0.5 * diffuse + 0.12 * normal[2])

    def _detail(self, name: str) -> RGB:
        return _shade(self.paint, 0.82) if name == "body" else _DETAIL_RGB[name]

    def _poly3(self, pts: list[tuple[float, float, float]], fill: RGB) -> None:
        self.d.polygon(self.cam.project(np.asarray(pts)), fill=fill)

    def _side(self, pts: list[tuple[float, float]], fill: RGB, out: float = 0.0) -> None:
        """A polygon on the near side, given in profile (x, z) coordinates."""
        hw = self.geo.half_width
        self._poly3([(x, hw(z) + out, z) for x, z in pts], fill)

    def _face(self, edge: _Edge, polys: list[list[tuple[float, float]]], fill: RGB, up: bool) -> None:
        """Polygons in face coordinates: u across the width (-1..1), v along the edge (0..1; with
        ``up`` v runs from the lower to the upper end)."""
        (xa, za), (xb, zb) = (edge.a, edge.b) if not up or edge.a[1] <= edge.b[1] else (edge.b, edge.a)
        hw = self.geo.half_width
        for poly in polys:
            pts = []
            for u, v in poly:
                z = za + v * (zb - za)
                pts.append((xa + v * (xb - xa), u * hw(z) * 0.98, z))
            self._poly3(pts, fill)

    @staticmethod
    def _normal(edge: _Edge) -> np.ndarray:
        (x0, z0), (x1, z1) = edge.a, edge.b
        n = np.array([z1 - z0, 0.0, x0 - x1])
        return n / np.linalg.norm(n)

    # -- the whole car
    def paint_car(self) -> None:
        s = self.s
        for x in self._axles():
            self._wheel(x, -s.width / 2, near=False)
        visible = []
        for edge in self.geo.edges:
            n = self._normal(edge)
            if self.cam.facing(n) > 0.01:
                mid = np.array([(edge.a[0] + edge.b[0]) / 2, 0.0, (edge.a[1] + edge.b[1]) / 2])
                visible.append((float(mid @ self.cam.view), edge, n))
        for _, edge, n in sorted(visible, key=lambda t: t[0]):
            self._strip(edge, n)
        side_n = np.array([0.0, 1.0, 0.0])
        self._side(list(self.geo.profile), self._lit(self.paint, side_n))
        self._side_details()
        for x in self._axles():
            self._wheel(x, s.width / 2, near=True)
        self._mirrors()
        self._roof_parts()
        self._spoiler()

    def _axles(self) -> tuple[float, float]:
        return self.s.rear_axle * self.s.length, self.s.front_axle * self.s.length

    def _strip(self, edge: _Edge, n: np.ndarray) -> None:
        look, role = self.look, edge.role
        glass = role == "screen" or (role == "rear_glass" and self.s.body != "pickup")
        if role == "roof" and look.roof in ("black", "glass", "softtop"):
            base = {"black": _DETAIL_RGB["black"], "glass": _GLASS, "softtop": (48, 48, 52)}[look.roof]
        else:
            base = _GLASS if glass else self.paint
        hw = self.geo.half_width
        (xa, za), (xb, zb) = edge.a, edge.b
        quad = [(xa, hw(za), za), (xb, hw(zb), zb), (xb, -hw(zb), zb), (xa, -hw(za), za)]
        self._poly3(quad, self._lit(base, n))
        detail = getattr(self, f"_on_{role}", None)
        if detail:
            detail(edge)

    # -- faces
    def _on_front(self, edge: _Edge) -> None:
        look = self.look
        black = _DETAIL_RGB["black"]
        self._face(edge, [_rect(-0.7, 0.02, 0.7, 0.12)], black, up=True)
        self._face(edge, _grille(look.grille), self._detail(look.grille_colour), up=True)
        if look.grille == "mesh":
            bars = [_rect(-0.5, 0.2 + 0.11 * k, 0.5, 0.225 + 0.11 * k) for k in range(1, 5)]
            self._face(edge, bars, black if look.grille_colour != "black" else (70, 72, 76), up=True)
        for lamp in _lamp(look.headlight, big=True):
            self._face(edge, [lamp, _mirror(lamp)], _HEADLAMP, up=True)
        if "fog_lights" in look.extras:
            fog = _ellipse(0.72, 0.2, 0.07, 0.07, 8)
            self._face(edge, [fog, _mirror(fog)], (250, 246, 214), up=True)
        if "tow_hook" in look.extras:
            self._face(edge, [_rect(0.5, 0.0, 0.6, 0.1)], (200, 30, 30), up=True)
        self._face(edge, _badge(look.badge, 0.0, 0.62, 0.1), self._detail(look.badge_colour), up=True)
        if "bull_bar" in look.extras:
            bar = _DETAIL_RGB["black"]
            self._face(edge, [_rect(-0.75, 0.3, 0.75, 0.36), _rect(-0.75, 0.0, -0.66, 0.36),
                              _rect(0.66, 0.0, 0.75, 0.36)], bar, up=True)

    def _on_rear(self, edge: _Edge) -> None:
        look = self.look
        self._face(edge, [_rect(-0.9, 0.0, 0.9, 0.12)], _DETAIL_RGB["black"], up=True)
        for lamp in _lamp(look.taillight, big=False):
            self._face(edge, [lamp, _mirror(lamp)], _TAILLAMP, up=True)
        plate_v = 0.16 if "spare_wheel" in look.extras else 0.3
        self._face(edge, [_rect(-0.2, plate_v, 0.2, plate_v + 0.16)], (232, 232, 226), up=True)
        self._face(edge, [_rect(-0.14, plate_v + 0.06, 0.14, plate_v + 0.1)], (40, 40, 90), up=True)
        self._face(edge, _badge(look.badge, 0.0, 0.64, 0.09), self._detail(look.badge_colour), up=True)
        if "spare_wheel" in look.extras:
            self._face(edge, [_ellipse(0.0, 0.6, 0.38, 0.3, 16)], _TYRE, up=True)
            self._face(edge, [_ellipse(0.0, 0.6, 0.2, 0.16, 12)], self._detail(look.rim), up=True)
        if "quad_exhaust" in look.extras:
            pipes = [_ellipse(u, 0.06, 0.05, 0.04, 8) for u in (-0.62, -0.5, 0.5, 0.62)]
            self._face(edge, pipes, (150, 152, 156), up=True)

    def _on_hood(self, edge: _Edge) -> None:
        look = self.look
        if "hood_stripes" in look.extras:
            self._face(edge, [_rect(-0.32, 0, -0.12, 1), _rect(0.12, 0, 0.32, 1)], _contrast(self.paint), up=False)
        if "hood_scoop" in look.extras:
            self._face(edge, [[(-0.18, 0.35), (0.18, 0.35), (0.22, 0.72), (-0.22, 0.72)]], (30, 30, 34), up=False)

    def _on_roof(self, edge: _Edge) -> None:
        look = self.look
        roofs = [e for e in self.geo.edges if e.role == "roof"]
        if look.roof == "sunroof" and edge == roofs[(len(roofs) - 1) // 2]:
            self._face(edge, [_rect(-0.5, 0.12, 0.5, 0.6)], _GLASS, up=False)
        elif look.roof == "softtop":
            seams = [_rect(-0.9, t, 0.9, t + 0.05) for t in (0.3, 0.6)]
            self._face(edge, seams, (30, 30, 33), up=False)
        if "hood_stripes" in look.extras and look.roof == "plain":
            self._face(edge, [_rect(-0.32, 0, -0.12, 1), _rect(0.12, 0, 0.32, 1)], _contrast(self.paint), up=False)
        if "roof_light" in look.extras and edge.a == self.geo.roof_front:
            self._face(edge, [_rect(-0.45, 0.02, 0.45, 0.12)], (250, 200, 60), up=False)

    def _on_deck(self, edge: _Edge) -> None:
        if self.s.body == "pickup":
            self._face(edge, [_rect(-0.86, 0.03, 0.86, 0.96)], (34, 34, 36), up=False)
        elif "hood_stripes" in self.look.extras:
            self._face(edge, [_rect(-0.32, 0, -0.12, 1), _rect(0.12, 0, 0.32, 1)], _contrast(self.paint), up=False)

    def _on_rear_glass(self, edge: _Edge) -> None:
        if self.s.body == "pickup":  # the cab's back wall has a small window
            self._face(edge, [_rect(-0.6, 0.35, 0.6, 0.85)], _GLASS, up=True)

    # -- the near side
    def _band(self, z0: float, z1: float, fill: RGB, inset: float = 0.02) -> None:
        a0, b0 = self.geo.span(z0)
        a1, b1 = self.geo.span(z1)
        self._side([(a0 + inset, z0), (b0 - inset, z0), (b1 - inset, z1), (a1 + inset, z1)], fill, out=0.005)

    def _windows(self) -> tuple[list[list[tuple[float, float]]], list[float]]:
        """Side window panes in profile coordinates, and the x of the door seams."""
        g, s = self.geo, self.s
        z0, top_front, top_rear = s.belt + 0.07, g.roof_front[1] - 0.07, g.roof_rear[1] - 0.07

        def along(p: tuple[float, float], q: tuple[float, float], z: float) -> float:
            return p[0] + (z - p[1]) / (q[1] - p[1]) * (q[0] - p[0])

        quad = [(along(g.cowl, g.roof_front, z0) - 0.08, z0),
                (along(g.cowl, g.roof_front, top_front) - 0.08, top_front),
                (along(g.rear_base, g.roof_rear, top_rear) + 0.1, top_rear),
                (along(g.rear_base, g.roof_rear, z0) + 0.1, z0)]
        lo, hi = quad[3][0], quad[0][0]
        cuts = sorted(hi - c * (hi - lo) for c in {1: (), 2: (0.5,), 3: (0.4, 0.74)}[self.look.windows])
        if "panel_van" in self.look.extras:  # glass in the cab doors only
            lo = cuts[0] if cuts else hi - 0.28 * (hi - lo)
            cuts = []
        bounds = [lo, *cuts, hi]
        pillar = 0.06
        panes = [_clip_x(quad, bounds[k] + (pillar if k else 0), bounds[k + 1] - (pillar if k < len(cuts) else 0))
                 for k in range(len(bounds) - 1)]
        return [pane for pane in panes if len(pane) >= 3], cuts or [lo + 0.1]

    def _side_details(self) -> None:
        s, look, g = self.s, self.look, self.geo
        black = _DETAIL_RGB["black"]
        low = s.ride + 0.02
        if look.trim == "twotone":
            self._band(low, s.ride + 0.38 * (s.belt - s.ride), (78, 80, 86))
        elif look.trim == "cladding":
            self._band(low, s.ride + 0.2, black)
        frame = {"chrome": _DETAIL_RGB["chrome"], "black": black}.get(look.trim)
        glass = self._lit(_GLASS, np.array([0.0, 1.0, 0.2]))
        panes, seams = self._windows()
        for pane in panes:
            if frame:
                cx = sum(p[0] for p in pane) / len(pane)
                cz = sum(p[1] for p in pane) / len(pane)
                self._side([(cx + (x - cx) * 1.09, cz + (z - cz) * 1.28) for x, z in pane], frame, out=0.01)
            self._side(pane, glass, out=0.012)
        if look.trim in ("chrome", "black"):
            z = s.ride + 0.55 * (s.belt - s.ride)
            self._band(z, z + 0.06, frame or black, inset=0.25)
        elif look.trim == "stripe":
            z = s.ride + 0.3 * (s.belt - s.ride)
            self._band(z, z + 0.1, _contrast(self.paint), inset=0.1)
        seam = _shade(self.paint, 0.55)
        handle = _DETAIL_RGB["chrome"] if look.trim == "chrome" else _shade(self.paint, 0.7)
        zh = s.belt - 0.1
        for x in seams:
            self._side([(x - 0.01, s.ride + 0.1), (x + 0.01, s.ride + 0.1), (x + 0.01, s.belt), (x - 0.01, s.belt)],
                       seam, out=0.008)
            self._side([(x + 0.06, zh), (x + 0.24, zh), (x + 0.24, zh + 0.04), (x + 0.06, zh + 0.04)], handle, out=0.01)
        if "sliding_door" in look.extras:
            x0, x1 = g.rear_base[0] + 0.3, seams[-1]
            self._side([(x0, s.belt - 0.01), (x1, s.belt - 0.01), (x1, s.belt + 0.02), (x0, s.belt + 0.02)],
                       black, out=0.012)
        if "side_vents" in look.extras:
            xr = self._axles()[0] + s.wheel * 1.3
            self._side([(xr, s.ride + 0.15), (xr + 0.35, s.ride + 0.2), (xr + 0.3, s.belt - 0.08),
                        (xr + 0.05, s.belt - 0.12)], (22, 22, 24), out=0.01)
        if "running_boards" in look.extras:
            xr, xf = self._axles()
            self._side([(xr + s.wheel * 1.3, s.ride - 0.04), (xf - s.wheel * 1.3, s.ride - 0.04),
                        (xf - s.wheel * 1.3, s.ride + 0.05), (xr + s.wheel * 1.3, s.ride + 0.05)], black, out=0.1)
        # the model's badge on the front fender, behind the wheel arch (seen from the side as well)
        xb, zb = self._axles()[1] - s.wheel * 1.75, s.ride + 0.72 * (s.belt - s.ride)
        for poly in _badge(look.badge, xb, zb, 0.09):
            self._side(poly, self._detail(look.badge_colour), out=0.014)
        # lamp corners visible from the side
        front_x, rear_x = s.length - _NOSE_SETBACK, _TAIL_SETBACK
        self._side([(front_x - 0.28, s.nose - 0.1), (front_x + 0.02, s.nose - 0.1), (front_x + 0.02, s.nose - 0.02),
                    (front_x - (0.5 if look.headlight in ("swept", "slit") else 0.22), s.nose - 0.01)],
                   _HEADLAMP, out=0.01)
        tall = look.taillight in ("vertical", "l_shape")
        self._side([(rear_x - 0.02, s.tail - (0.3 if tall else 0.14)), (rear_x + 0.2, s.tail - (0.3 if tall else 0.14)),
                    (rear_x + 0.2, s.tail - 0.04), (rear_x, s.tail - 0.03)], _TAILLAMP, out=0.01)

    def _wheel(self, x: float, y: float, near: bool) -> None:
        s, look = self.s, self.look
        r = s.wheel

        def ring(radius: float, z: float = r, n: int = 16, start: float = 0.0, stop: float = 2 * math.pi):
            return _arc(n, start, stop) * [radius, 0.0, radius] + [x, y, z]

        if not near:
            self.d.polygon(self.cam.project(ring(r)), fill=_TYRE)
            return
        flare = "fender_flares" in look.extras or look.trim == "cladding"
        arch = ring(r * (1.3 if flare else 1.14), n=12, stop=math.pi)
        arch = np.vstack([arch, [[x - r * 1.14, y, s.ride], [x + r * 1.14, y, s.ride]]])
        self.d.polygon(self.cam.project(arch), fill=_DETAIL_RGB["black"] if flare else _WELL)
        if flare:
            self.d.polygon(self.cam.project(ring(r * 1.12, n=12, stop=math.pi)), fill=_WELL)
        self.d.polygon(self.cam.project(ring(r)), fill=_TYRE)
        rim = self._detail(look.rim)
        self.d.polygon(self.cam.project(ring(r * 0.72)), fill=rim)
        dark = _shade(rim, 0.35) if sum(rim) > 200 else (8, 8, 10)
        spokes = {"spokes5": (5, 0.2), "spokes6": (6, 0.16), "multi": (10, 0.07), "twin": (5, 0.09)}.get(look.wheel)
        if spokes:  # dark gaps between spokes
            count, width = spokes
            for k in range(count * (2 if look.wheel == "twin" else 1)):
                a = 2 * math.pi * k / count + (0.35 if look.wheel == "twin" and k >= count else 0) + math.pi / count
                gap = ring(r * 0.66, n=4, start=a - width * 1.3, stop=a + width * 1.3)
                gap = np.vstack([[[x + r * 0.22 * math.cos(a), y, r + r * 0.22 * math.sin(a)]], gap])
                self.d.polygon(self.cam.project(gap), fill=dark)
        elif look.wheel == "dish":
            for k in range(5):
                a = 2 * math.pi * k / 5
                self.d.polygon(self.cam.project(ring(r * 0.09, z=r + r * 0.42 * math.sin(a), n=6)
                                                + [r * 0.42 * math.cos(a), 0, 0]), fill=dark)
        else:  # steel: plain disc with a ring and a hub cap
            self.d.polygon(self.cam.project(ring(r * 0.5)), fill=_shade(rim, 0.7))
        self.d.polygon(self.cam.project(ring(r * 0.16, n=8)), fill=_shade(rim, 1.1))

    def _mirrors(self) -> None:
        s, g = self.s, self.geo
        x, z, y = g.cowl[0] - 0.12, s.belt + 0.06, s.width / 2
        fill = _DETAIL_RGB["black"] if self.look.trim in ("black", "cladding") else self._lit(self.paint, np.array([0, 1.0, 0]))
        self._poly3([(x, y, z), (x - 0.22, y + 0.2, z), (x - 0.22, y + 0.2, z + 0.13), (x, y, z + 0.16)], fill)

    def _roof_parts(self) -> None:
        g, s = self.geo, self.s
        if self.look.roof != "rack":
            return
        (xf, zf), (xr, zr) = g.roof_front, g.roof_rear
        rail = (60, 62, 66)
        for side in (-1, 1):
            y = side * g.half_width(s.height) * 0.78
            z = s.height + 0.08
            self._poly3([(xf - 0.15, y, zf), (xf - 0.1, y, z), (xr + 0.05, y, z), (xr + 0.02, y, zr),
                         (xr + 0.06, y, zr), (xr + 0.09, y, z - 0.04), (xf - 0.14, y, z - 0.04), (xf - 0.2, y, zf)], rail)

    def _spoiler(self) -> None:
        g, s, kind = self.geo, self.s, self.look.spoiler
        hw = g.half_width
        if kind == "wing":
            x0, z = _TAIL_SETBACK + 0.02, s.tail + 0.2
            fill = self._lit(self.paint, np.array([0, 0, 1.0]))
            for side in (-0.6, 0.6):
                y = side * hw(s.tail)
                self._poly3([(x0 + 0.1, y, s.tail), (x0 + 0.16, y, s.tail), (x0 + 0.12, y, z), (x0 + 0.06, y, z)],
                            (30, 30, 32))
            w = hw(s.tail) * 0.95
            self._poly3([(x0, w, z), (x0 + 0.3, w, z + 0.04), (x0 + 0.3, -w, z + 0.04), (x0, -w, z)], fill)
            self._poly3([(x0, w, z), (x0 + 0.3, w, z + 0.04), (x0 + 0.3, w, z - 0.02), (x0, w, z - 0.06)],
                        _shade(fill, 0.7))
        elif kind == "lip":  # on the boot lid's edge, or atop the rear window of a deckless body
            x0, z = (_TAIL_SETBACK, s.tail + 0.04) if s.deck else (g.roof_rear[0] - 0.06, g.roof_rear[1] + 0.02)
            w = hw(z) * 0.92
            self._poly3([(x0 - 0.06, w, z), (x0 + 0.14, w, z - 0.03), (x0 + 0.14, -w, z - 0.03), (x0 - 0.06, -w, z)],
                        (28, 28, 30))
        elif kind == "roof":
            (xr, zr) = g.roof_rear
            w = hw(zr) * 0.95
            fill = self._lit(self.paint, np.array([0, 0.3, 0.95]))
            self._poly3([(xr + 0.12, w, zr + 0.01), (xr - 0.16, w, zr - 0.03), (xr - 0.16, -w, zr - 0.03),
                         (xr + 0.12, -w, zr + 0.01)], fill)
            self._poly3([(xr + 0.12, w, zr + 0.01), (xr - 0.16, w, zr - 0.03), (xr - 0.1, w, zr - 0.1)],
                        _shade(fill, 0.6))


# --- scenes -------------------------------------------------------------------------------------

_SKIES: tuple[tuple[RGB, RGB], ...] = (
    ((96, 150, 220), (196, 220, 240)), ((150, 160, 172), (214, 218, 222)), ((70, 90, 150), (250, 170, 110)),
    ((40, 60, 110), (120, 140, 180)), ((170, 200, 230), (236, 240, 244)), ((120, 130, 120), (200, 200, 185)),
)
_GROUNDS: tuple[RGB, ...] = ((82, 84, 88), (112, 112, 110), (64, 66, 70), (140, 132, 118), (70, 100, 60),
                            (150, 150, 148))


def _rand_colour(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> RGB:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    h = size[1]
    t = np.linspace(0.0, 1.0, h)[:, None]
    col = (np.asarray(top) * (1 - t) + np.asarray(bottom) * t).astype(np.uint8)
    return Image.fromarray(col[:, None, :]).resize(size, Image.NEAREST)


def _scene(rng: np.random.Generator, size: tuple[int, int], horizon: int) -> Image.Image:
    """Sky, a far layer (buildings, trees or hills), ground (road, lot or grass) and clutter."""
    w, h = size
    top, bottom = _SKIES[int(rng.integers(len(_SKIES)))]
    img = _gradient(size, _shade(top, rng.uniform(0.8, 1.15)), _shade(bottom, rng.uniform(0.85, 1.1)))
    d = ImageDraw.Draw(img, "RGBA")
    for _ in range(int(rng.integers(0, 4))):  # clouds
        cx, cy, rx = rng.uniform(0, w), rng.uniform(0, horizon * 0.7), rng.uniform(20, 70)
        d.ellipse([cx - rx, cy - rx * 0.35, cx + rx, cy + rx * 0.35], fill=(245, 245, 248, int(rng.integers(90, 200))))
    far = int(rng.integers(3))
    if far == 0:  # buildings with window grids
        x = -rng.uniform(0, 40)
        while x < w:
            bw, bh = rng.uniform(40, 120), rng.uniform(30, max(40.0, horizon * 0.95))
            wall = _rand_colour(rng, 60, 220)
            d.rectangle([x, horizon - bh, x + bw, horizon], fill=wall)
            win = _shade(wall, rng.uniform(0.4, 0.7))
            step = rng.uniform(9, 16)
            for wy in np.arange(horizon - bh + 6, horizon - 8, step):
                d.rectangle([x + 5, wy, x + bw - 5, wy + step * 0.45], fill=win)
            x += bw + rng.uniform(0, 20)
    elif far == 1:  # tree line
        for _ in range(int(rng.integers(8, 18))):
            cx, r = rng.uniform(-20, w + 20), rng.uniform(15, 45)
            green = (int(rng.integers(25, 80)), int(rng.integers(70, 140)), int(rng.integers(25, 70)))
            d.rectangle([cx - r * 0.08, horizon - r, cx + r * 0.08, horizon], fill=(80, 60, 40))
            d.ellipse([cx - r, horizon - r * 2.4, cx + r, horizon - r * 0.6], fill=green)
    else:  # hills
        for shade in (0.8, 1.0):
            pts = [(0, horizon)] + [(x, horizon - rng.uniform(5, 60) * shade) for x in np.linspace(0, w, 7)] + [(w, horizon)]
            d.polygon(pts, fill=_shade((90, 120, 90), shade + rng.uniform(-0.2, 0.2)))
    ground = _shade(_GROUNDS[int(rng.integers(len(_GROUNDS)))], rng.uniform(0.85, 1.15))
    d.rectangle([0, horizon, w, h], fill=ground)
    markings = int(rng.integers(3))
    if markings == 0:  # lane lines converging to a vanishing point
        vx = rng.uniform(0, w)
        for k in range(-3, 4):
            d.line([(vx, horizon), (vx + k * w * 0.6, h)], fill=(230, 230, 220), width=2)
    elif markings == 1:  # parking bays
        for x in np.arange(rng.uniform(-60, 0), w + 60, rng.uniform(50, 90)):
            d.line([(x, horizon + 4), (x - 40, h)], fill=(235, 235, 235), width=3)
    else:  # kerb and pavement
        y = horizon + rng.uniform(4, 20)
        d.rectangle([0, horizon, w, y], fill=_shade(ground, 1.3))
    for _ in range(int(rng.integers(3, 9))):  # clutter: signs, bins, poles, blobs
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(6, 40), rng.uniform(6, 60)
        fill = _rand_colour(rng) + (int(rng.integers(160, 256)),)
        kind = int(rng.integers(3))
        if kind == 0:
            d.rectangle([x, y, x + sx, y + sy], fill=fill)
        elif kind == 1:
            d.ellipse([x, y, x + sx, y + sy], fill=fill)
        else:
            d.polygon([(x, y), (x + sx, y + sy * 0.3), (x + sx * 0.4, y + sy)], fill=fill)
    return img


def _lighting(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random brightness, contrast and colour tint (one lookup table), sometimes a slight blur."""
    brightness, contrast = rng.uniform(0.72, 1.22), rng.uniform(0.75, 1.2)
    x = np.arange(256) / 255.0
    lut = []
    for tint in rng.uniform(0.9, 1.1, 3):
        lut += np.clip(((x - 0.5) * contrast + 0.5) * brightness * tint * 255, 0, 255).astype(int).tolist()
    img = img.point(lut)
    if rng.random() < 0.35:
        img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.4, 0.9)))
    return img


# --- public -------------------------------------------------------------------------------------

def _pose(rng: np.random.Generator) -> tuple[float, float]:
    """A random azimuth (three-quarter front, three-quarter rear or side) and elevation, in radians."""
    roll = rng.random()
    if roll < 0.4:
        azimuth = rng.uniform(25, 65)
    elif roll < 0.7:
        azimuth = -rng.uniform(25, 65)
    else:
        azimuth = rng.uniform(-25, 25)
    return math.radians(azimuth), math.radians(rng.uniform(4, 22))


def _fit(cam: _Camera, s: Shape, box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Scale and place the camera so the car's bounding box fills ``box`` (x0, y0, x1, y1) in pixels;
    returns the screen y of the car's top and bottom."""
    corners = np.array([(x, y, z) for x in (0, s.length) for y in (-s.width / 2, s.width / 2)
                        for z in (0, s.height)])
    flat = np.asarray(cam.project(corners)).reshape(-1, 2)
    (minx, miny), (maxx, maxy) = flat.min(axis=0), flat.max(axis=0)
    bx0, by0, bx1, by1 = box
    scale = min((bx1 - bx0) / (maxx - minx), (by1 - by0) / (maxy - miny))
    offset = ((bx0 + bx1) / 2 - scale * (minx + maxx) / 2, by1 - scale * maxy)
    cam.fit(scale, offset)
    return by1 - scale * (maxy - miny), by1


def _shadow(draw: ImageDraw.ImageDraw, cam: _Camera, s: Shape, light: np.ndarray, alpha: int) -> None:
    dx, dy = -light[0] / max(light[2], 0.35) * 0.5, -light[1] / max(light[2], 0.35) * 0.5
    hw = s.width / 2 + 0.05
    foot = np.array([(-0.05, -hw, 0), (s.length + 0.05, -hw, 0), (s.length + 0.05, hw, 0), (-0.05, hw, 0)])
    draw.polygon(cam.project(foot + [dx, dy, 0]), fill=(0, 0, 0, alpha // 2))
    draw.polygon(cam.project(foot), fill=(0, 0, 0, alpha))


def render_car(spec: CarSpec, rng: np.random.Generator, size: tuple[int, int] = SIZE,
               colour: str | None = None) -> Image.Image:
    """A photo of ``spec`` in ``colour`` (a :data:`PALETTE` name; random when None) from a random
    viewpoint, scale and position, in a random scene and light. Deterministic for a given ``rng`` state."""
    w, h = size
    paint = PALETTE[colour or paint_colour(rng)]
    cam = _Camera(*_pose(rng))
    width_share = rng.uniform(0.72, 0.97)  # listing photos show the car large in the frame
    bw, bh = w * width_share, h * rng.uniform(0.62, 0.92)
    x0 = rng.uniform(-0.03 * w, w - bw + 0.03 * w)
    y1 = rng.uniform(h * 0.7, h * 0.99)
    top, bottom = _fit(cam, spec.shape, (x0, max(0.0, y1 - bh), x0 + bw, y1))
    horizon = int(np.clip(top + rng.uniform(0.1, 0.75) * (bottom - top), h * 0.15, h * 0.8))
    img = _scene(rng, size, horizon)
    draw = ImageDraw.Draw(img, "RGBA")
    sun = rng.uniform(0, 2 * math.pi)
    light = np.array([math.cos(sun) * 0.6, math.sin(sun) * 0.6, rng.uniform(0.5, 1.0)])
    light /= np.linalg.norm(light)
    _shadow(draw, cam, spec.shape, light, int(rng.integers(70, 150)))
    _CarPainter(draw, spec, paint, cam, light).paint_car()
    img = _lighting(img, rng)
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def render_reference(spec: CarSpec, size: tuple[int, int] = SIZE, colour: str = "silver") -> Image.Image:
    """A clean three-quarter front view on a plain background, for galleries and reports."""
    w, h = size
    cam = _Camera(math.radians(35), math.radians(12))
    _fit(cam, spec.shape, (w * 0.06, h * 0.1, w * 0.94, h * 0.9))
    img = Image.new("RGB", size, (226, 228, 232))
    light = np.array([0.4, 0.5, 0.77])
    _CarPainter(ImageDraw.Draw(img, "RGBA"), spec, PALETTE[colour], cam, light).paint_car()
    return img


#: The non-car photos the marketplace puts in listings.
NON_CAR_KINDS = ("interior", "document")
#: Every non-car photo the sandbox draws: the listings' kinds, plus what a person may point the camera
#: at or upload by mistake: an empty street (the scenery of a car photo without the car) and a
#: screenshot of text. The open-set evaluation measures "no car recognised" on all of them.
ALL_NON_CAR_KINDS = (*NON_CAR_KINDS, "street", "screenshot")


def render_non_car(rng: np.random.Generator, kind: str, size: tuple[int, int] = SIZE) -> Image.Image:
    """A photo without a car: ``"interior"`` (dashboard, steering wheel, seats), ``"document"`` (a
    title or registration form on a table), ``"street"`` (a street, lot or kerb with no car) or
    ``"screenshot"`` (a phone screenshot of a text page). Deterministic for a given ``rng`` state."""
    if kind == "interior":
        img = _interior(rng, size)
    elif kind == "document":
        img = _document(rng, size)
    elif kind == "street":
        img = _scene(rng, size, int(size[1] * rng.uniform(0.3, 0.7)))
    elif kind == "screenshot":
        return _screenshot(rng, size)  # a screen capture: no camera, no lighting
    else:
        raise ValueError(f"unknown non-car kind {kind!r}; expected one of {ALL_NON_CAR_KINDS}")
    return _lighting(img, rng)


_UPHOLSTERY: tuple[RGB, ...] = ((28, 28, 30), (70, 70, 74), (182, 160, 124), (120, 82, 56), (128, 30, 34))


def _interior(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    top, bottom = _SKIES[int(rng.integers(len(_SKIES)))]
    horizon = int(h * rng.uniform(0.25, 0.45))
    img = _gradient(size, top, bottom)
    d = ImageDraw.Draw(img)
    d.rectangle([0, horizon, w, h], fill=_shade((90, 110, 80), rng.uniform(0.6, 1.3)))
    trim = _UPHOLSTERY[int(rng.integers(len(_UPHOLSTERY)))]
    dash = _shade((40, 40, 44), rng.uniform(0.7, 1.6))
    dash_y = horizon + rng.uniform(-10, 25)
    d.polygon([(0, dash_y + 20), (w * 0.3, dash_y), (w * 0.7, dash_y - 5), (w, dash_y + 15), (w, h), (0, h)], fill=dash)
    d.rectangle([0, 0, w, rng.uniform(8, 30)], fill=(30, 30, 32))  # headliner
    for x in (rng.uniform(0, 30), w - rng.uniform(0, 30)):  # A-pillars
        d.polygon([(x - 18, 0), (x + 18, 0), (x + 40 * np.sign(w / 2 - x), dash_y + 20),
                   (x + 10 * np.sign(w / 2 - x), dash_y + 20)], fill=(36, 36, 40))
    cx, cy, r = w * rng.uniform(0.25, 0.45), dash_y + h * rng.uniform(0.3, 0.45), h * rng.uniform(0.22, 0.32)
    for k, gx in enumerate((cx - r * 0.35, cx + r * 0.35)):  # gauges behind the wheel
        d.ellipse([gx - r * 0.3, dash_y + 8, gx + r * 0.3, dash_y + 8 + r * 0.6], fill=(12, 12, 16), outline=(200, 200, 210))
        ang = rng.uniform(0.6, 2.6)
        d.line([(gx, dash_y + 8 + r * 0.3), (gx - math.cos(ang) * r * 0.25, dash_y + 8 + r * 0.3 - math.sin(ang) * r * 0.25)],
               fill=(240, 80, 40), width=2)
    sx = w * rng.uniform(0.55, 0.68)
    d.rectangle([sx, dash_y + 15, sx + w * 0.16, dash_y + 15 + h * 0.16], fill=(20, 24, 40), outline=(90, 90, 96))
    d.rectangle([sx + 6, dash_y + 20, sx + w * 0.16 - 6, dash_y + 10 + h * 0.16], fill=_rand_colour(rng, 40, 160))
    for k in range(3):  # vents
        d.rectangle([sx + k * 20, dash_y + h * 0.2 + 15, sx + k * 20 + 14, dash_y + h * 0.2 + 23], fill=(16, 16, 18))
    d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(22, 22, 24), width=max(6, int(r * 0.16)))
    for ang in (0.0, math.pi, math.pi / 2):
        d.line([(cx, cy), (cx + math.cos(ang) * r, cy + math.sin(ang) * r)], fill=(26, 26, 28), width=int(r * 0.14))
    d.ellipse([cx - r * 0.25, cy - r * 0.2, cx + r * 0.25, cy + r * 0.2], fill=(34, 34, 38))
    for seat_x in (w * rng.uniform(0.02, 0.1), w * rng.uniform(0.75, 0.85)):  # seat bolsters in the foreground
        d.rounded_rectangle([seat_x, h * rng.uniform(0.72, 0.85), seat_x + w * 0.22, h + 20], radius=18, fill=trim)
    gx = w * rng.uniform(0.5, 0.6)
    d.rectangle([gx - 6, h * 0.8, gx + 6, h], fill=(20, 20, 22))
    d.ellipse([gx - 12, h * 0.75, gx + 12, h * 0.82], fill=_shade(trim, 0.8))
    return img


_DOC_TITLES = ("CERTIFICATE OF TITLE", "VEHICLE REGISTRATION", "CERTIFICATE OF TITLE FOR A VEHICLE",
               "REGISTRATION CARD", "BILL OF SALE")
_DOC_STATES = ("TEXAS", "CALIFORNIA", "FLORIDA", "OHIO", "GEORGIA", "ILLINOIS", "ARIZONA", "NEW YORK")
_DOC_FIELDS = ("VIN", "YEAR", "MAKE", "MODEL", "BODY", "OWNER", "ADDRESS", "ODOMETER", "ISSUED", "LIEN")


def _document(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    table = _shade(((120, 84, 52), (150, 150, 146), (70, 60, 52), (190, 176, 150))[int(rng.integers(4))],
                   rng.uniform(0.8, 1.2))
    img = Image.new("RGB", size, table)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):  # things on the table: pen, keys, phone
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        d.rounded_rectangle([x, y, x + rng.uniform(10, 70), y + rng.uniform(6, 30)], radius=4, fill=_rand_colour(rng))
    pw, ph = int(h * rng.uniform(0.7, 0.95) * 0.78), int(h * rng.uniform(0.7, 0.95))
    paper = Image.new("RGB", (pw, ph), _shade((246, 244, 236), rng.uniform(0.92, 1.02)))
    p = ImageDraw.Draw(paper)
    font = ImageFont.load_default()
    ink, tint = (30, 30, 40), _rand_colour(rng, 90, 200)
    p.rectangle([4, 4, pw - 5, ph - 5], outline=tint, width=2)
    p.text((10, 10), f"STATE OF {_DOC_STATES[int(rng.integers(len(_DOC_STATES)))]}", fill=ink, font=font)
    p.text((10, 24), _DOC_TITLES[int(rng.integers(len(_DOC_TITLES)))], fill=tint, font=font)
    y = 44
    for field in rng.permutation(_DOC_FIELDS)[: int(rng.integers(5, len(_DOC_FIELDS)))]:
        p.text((10, y), str(field), fill=ink, font=font)
        x = 70
        while x < pw - 20:  # words on the line
            wlen = rng.uniform(8, 40)
            p.rectangle([x, y + 3, min(x + wlen, pw - 12), y + 8], fill=(60, 60, 70))
            x += wlen + rng.uniform(4, 10)
        p.line([(8, y + 13), (pw - 10, y + 13)], fill=(170, 170, 176))
        y += int(rng.uniform(16, 24))
        if y > ph - 40:
            break
    bx = pw - 60
    for k in range(28):  # barcode
        if rng.random() < 0.6:
            p.line([(bx + k * 2, ph - 30), (bx + k * 2, ph - 10)], fill=ink, width=1)
    p.ellipse([12, ph - 46, 48, ph - 10], outline=tint, width=2)  # seal
    angle = rng.uniform(-14, 14)
    paper = paper.convert("RGBA").rotate(angle, expand=True, resample=Image.BILINEAR)
    img.paste(paper, (int(rng.uniform(0, max(1, w - paper.width))), int(rng.uniform(-10, max(1, h - paper.height)))),
              paper)
    return img


_SCREEN_WORDS = ("the", "car", "price", "seller", "miles", "engine", "title", "clean", "offer", "message",
                 "today", "new", "used", "great", "condition", "call", "deal", "details", "ships", "payment",
                 "account", "settings", "notifications", "search", "results", "reply", "tap", "more")


def _screenshot(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A phone screenshot: a status bar, an app bar in an accent colour, then paragraphs of text
    (light or dark theme), sometimes a button."""
    w, h = size
    dark = rng.random() < 0.3
    page, ink = ((18, 18, 20), (226, 226, 230)) if dark else ((250, 250, 250), (28, 28, 32))
    img = Image.new("RGB", size, page)
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    accent = _rand_colour(rng, 30, 200)
    d.rectangle([0, 0, w, 14], fill=_shade(accent, 0.7))
    d.text((6, 1), f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}", fill=(240, 240, 240), font=font)
    bar = int(rng.uniform(28, 44))
    d.rectangle([0, 14, w, 14 + bar], fill=accent)
    d.text((12, 14 + bar // 2 - 5), " ".join(rng.choice(_SCREEN_WORDS, 2)).title(), fill=(250, 250, 250), font=font)
    y, line = 24 + bar, int(rng.uniform(12, 17))
    while y < h - line:
        if rng.random() < 0.12:  # a paragraph break
            y += line
            continue
        words, x = rng.choice(_SCREEN_WORDS, int(rng.integers(4, 14))), 10
        d.text((x, y), " ".join(words), fill=ink, font=font)
        y += line
    if rng.random() < 0.5:
        bx = rng.uniform(10, w * 0.5)
        d.rounded_rectangle([bx, h - 40, bx + rng.uniform(90, 160), h - 12], radius=10, fill=accent)
    return img
