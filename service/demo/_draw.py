"""Stylised product pictures and pattern swatches drawn with Pillow for the demo catalog.

Every picture is a flat illustration in the item's color on a light gradient background with a
soft drop shadow: a side-view shoe, a sock, a jacket, a backpack, a knife, a coffee maker,
headphones, a lamp, a rolled yoga mat, or a fabric swatch. Drawing happens on a canvas
``SUPERSAMPLE`` times larger than ``SIZE`` (for smooth edges) that is then scaled down.

Only Pillow primitives are used and no randomness beyond the ``random.Random`` passed in, so
the same inputs give byte-identical PNG files.
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image, ImageDraw, ImageFilter

SIZE = 224
SUPERSAMPLE = 3
W = SIZE * SUPERSAMPLE

# (top, bottom) of the background gradient.
BACKGROUNDS = [
    ((249, 247, 242), (232, 227, 216)),  # warm paper
    ((244, 247, 250), (222, 229, 237)),  # cool gray-blue
    ((246, 248, 243), (226, 233, 222)),  # pale sage
    ((250, 246, 244), (236, 225, 221)),  # blush
    ((247, 247, 247), (228, 228, 228)),  # neutral
]

STEEL = (196, 201, 208)
STEEL_DARK = (140, 146, 156)
GLASS = (214, 230, 238, 150)
COFFEE = (74, 44, 26)
LIGHT = (255, 236, 160)

Color = tuple[int, int, int]


def shade(c: Color, f: float) -> Color:
    """Darker (f < 1) version of a color."""
    return tuple(max(0, min(255, round(v * f))) for v in c)  # type: ignore[return-value]


def tint(c: Color, t: float) -> Color:
    """Mix a color toward white by ``t`` (0..1)."""
    return tuple(round(v + (255 - v) * t) for v in c)  # type: ignore[return-value]


def luminance(c: Color) -> float:
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]


def outline_for(c: Color) -> Color:
    if luminance(c) < 60:
        return (14, 14, 16)
    if luminance(c) > 200:
        return shade(c, 0.55)
    return shade(c, 0.6)


def contrast_for(c: Color) -> Color:
    """A light or dark detail color that stands out on ``c``."""
    return (250, 250, 246) if luminance(c) < 150 else (40, 40, 44)


class Canvas:
    """Transparent drawing layer in unit coordinates (0..1 on both axes)."""

    def __init__(self) -> None:
        self.layer = Image.new("RGBA", (W, W), (0, 0, 0, 0))
        self.d = ImageDraw.Draw(self.layer)

    @staticmethod
    def px(v: float) -> int:
        return round(v * W)

    def pts(self, pts):
        return [(self.px(x), self.px(y)) for x, y in pts]

    def box(self, b):
        x0, y0, x1, y1 = b
        return [self.px(x0), self.px(y0), self.px(x1), self.px(y1)]

    def poly(self, pts, fill, outline=None, width=0.008):
        self.d.polygon(self.pts(pts), fill=fill, outline=outline,
                       width=self.px(width) if outline else 0)

    def rect(self, b, fill, r=0.0, outline=None, width=0.008):
        self.d.rounded_rectangle(self.box(b), radius=self.px(r), fill=fill, outline=outline,
                                 width=self.px(width) if outline else 0)

    def ellipse(self, b, fill, outline=None, width=0.008):
        self.d.ellipse(self.box(b), fill=fill, outline=outline,
                       width=self.px(width) if outline else 0)

    def circle(self, cx, cy, r, fill, outline=None, width=0.008):
        self.ellipse((cx - r, cy - r, cx + r, cy + r), fill, outline, width)

    def line(self, pts, fill, width=0.01):
        self.d.line(self.pts(pts), fill=fill, width=max(1, self.px(width)), joint="curve")

    def arc(self, b, start, end, fill, width=0.01):
        self.d.arc(self.box(b), start, end, fill=fill, width=max(1, self.px(width)))

    def pieslice(self, b, start, end, fill):
        self.d.pieslice(self.box(b), start, end, fill=fill)

    def chord(self, b, start, end, fill):
        self.d.chord(self.box(b), start, end, fill=fill)

    def overlay(self) -> "Canvas":
        """A second canvas for translucent parts, merged with ``merge``."""
        return Canvas()

    def merge(self, other: "Canvas", blur: float = 0.0) -> None:
        layer = other.layer.filter(ImageFilter.GaussianBlur(W * blur)) if blur else other.layer
        self.layer = Image.alpha_composite(self.layer, layer)
        self.d = ImageDraw.Draw(self.layer)


def _outlined(cv: Canvas, shapes, fill, line, width=0.012):
    """Draw a union of shapes with one outer outline: outlined pass, then a fill-only pass."""
    for kind, geom, extra in shapes:
        getattr(cv, kind)(geom, fill, *extra, outline=line, width=width)
    for kind, geom, extra in shapes:
        getattr(cv, kind)(geom, fill, *extra)


def _bezier(p0, p1, p2, p3, n=24):
    out = []
    for i in range(n + 1):
        t = i / n
        a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
        out.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
                    a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return out


# --------------------------------------------------------------------------- products


def draw_shoe(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    mid = (246, 245, 240) if luminance(color) < 215 else accent
    top = 0.62
    h = {"stability": 0.095, "racing": 0.085, "trail": 0.075}.get(variant, 0.075)
    # midsole
    cv.poly([(0.09, top), (0.86, top + 0.01), (0.93, top + 0.035), (0.905, top + h),
             (0.13, top + h), (0.085, top + h * 0.55)], mid, outline=shade(mid, 0.7), width=0.008)
    # outsole
    sole = (44, 44, 48)
    cv.poly([(0.125, top + h), (0.905, top + h), (0.885, top + h + 0.03), (0.15, top + h + 0.03)], sole)
    if variant == "trail":
        for i in range(9):
            x = 0.17 + i * 0.083
            cv.rect((x, top + h + 0.02, x + 0.045, top + h + 0.05), sole)
    # upper
    upper = [(0.105, top + 0.005), (0.095, 0.50), (0.115, 0.42), (0.16, 0.375), (0.23, 0.37),
             (0.30, 0.415), (0.37, 0.435), (0.41, 0.36), (0.455, 0.325), (0.50, 0.355),
             (0.58, 0.44), (0.70, 0.50), (0.80, 0.545), (0.885, 0.585), (0.925, top + 0.028),
             (0.86, top + 0.01)]
    cv.poly(upper, color, outline=line, width=0.012)
    # heel counter and toe cap
    dark = shade(color, 0.8) if luminance(color) > 60 else tint(color, 0.18)
    cv.poly([(0.108, top), (0.10, 0.49), (0.125, 0.43), (0.20, 0.45), (0.235, top)], dark)
    cv.poly([(0.80, 0.55), (0.885, 0.59), (0.922, top + 0.025), (0.86, top + 0.008), (0.78, top + 0.005)], dark)
    # eyestay panel along the laces and a mudguard band above the midsole
    acc = accent if accent != color else contrast_for(color)
    cv.poly([(0.43, 0.375), (0.465, 0.345), (0.70, 0.485), (0.66, 0.515)], acc)
    cv.line([(0.12, top - 0.03), (0.40, top - 0.035), (0.70, top - 0.04), (0.90, top - 0.005)], acc, width=0.014)
    # collar opening
    cv.line([(0.15, 0.385), (0.23, 0.38), (0.31, 0.425), (0.37, 0.44)], shade(line, 0.6), width=0.016)
    # laces
    lace = acc
    for i in range(5):
        t = i / 4
        x, y = 0.465 + t * 0.17, 0.36 + t * 0.105
        cv.line([(x - 0.022, y + 0.028), (x + 0.028, y - 0.016)], lace, width=0.011)
    # gaiter ring / reflective dot
    cv.circle(0.15, 0.56, 0.012, contrast_for(dark))


def draw_sock(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    top = {"no-show": 0.46, "compression": 0.06, "quarter": 0.36}.get(variant, 0.16)
    x0, x1 = (0.32, 0.53) if variant != "compression" else (0.335, 0.515)
    r = 0.13
    shapes = [("rect", (x0, top, x1 if variant != "no-show" else 0.60, 0.66), (0.02,)),
              ("rect", (x0, 0.52, 0.86, 0.78), (r,))]
    _outlined(cv, shapes, color, line)
    patch = shade(color, 0.78) if luminance(color) > 60 else tint(color, 0.25)
    # heel and toe patches
    cv.pieslice((x0 + 0.006, 0.52 + 0.006, x0 + 2 * r - 0.006, 0.78 - 0.006), 90, 180, patch)
    cv.pieslice((0.86 - 2 * r + 0.006, 0.52 + 0.006, 0.86 - 0.006, 0.78 - 0.006), 270, 450, patch)
    # cuff with ribbing
    x1c = x1 if variant != "no-show" else 0.60
    cv.rect((x0 + 0.004, top + 0.004, x1c - 0.004, top + 0.075), accent, r=0.015)
    for i in range(1, 7):
        x = x0 + (x1c - x0) * i / 7
        cv.line([(x, top + 0.012), (x, top + 0.068)], shade(accent, 0.8), width=0.006)
    if variant == "compression":
        for y in (0.22, 0.30, 0.38):
            cv.line([(x0 + 0.01, y), (x1 - 0.01, y + 0.02)], patch, width=0.008)
    # arch band
    cv.line([(0.55, 0.53), (0.53, 0.77)], patch, width=0.02)


def draw_jacket(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    bottom = 0.9 if variant == "long" else 0.8
    dark = shade(color, 0.78) if luminance(color) > 60 else tint(color, 0.2)
    # hood behind
    cv.ellipse((0.365, 0.09, 0.635, 0.36), color, outline=line, width=0.012)
    cv.ellipse((0.405, 0.13, 0.595, 0.33), shade(color, 0.45))
    # sleeves
    left = [(0.31, 0.27), (0.21, 0.33), (0.13, bottom - 0.09), (0.22, bottom - 0.065), (0.285, 0.47)]
    right = [(1 - x, y) for x, y in left]
    body = [(0.31, 0.26), (0.69, 0.26), (0.735, bottom), (0.265, bottom)]
    shapes = [("poly", left, ()), ("poly", right, ()), ("poly", body, ())]
    _outlined(cv, shapes, color, line)
    # cuffs and hem
    cv.poly([(0.135, bottom - 0.115), (0.225, bottom - 0.09), (0.22, bottom - 0.065), (0.13, bottom - 0.09)], dark)
    cv.poly([(1 - 0.135, bottom - 0.115), (1 - 0.225, bottom - 0.09), (1 - 0.22, bottom - 0.065), (1 - 0.13, bottom - 0.09)], dark)
    cv.line([(0.268, bottom - 0.02), (0.732, bottom - 0.02)], dark, width=0.012)
    # collar
    cv.poly([(0.40, 0.26), (0.60, 0.26), (0.57, 0.33), (0.43, 0.33)], dark)
    # zip
    cv.line([(0.5, 0.27), (0.5, bottom - 0.005)], (40, 40, 44), width=0.01)
    cv.rect((0.505, 0.36, 0.525, 0.41), accent, r=0.005)
    # pockets
    if variant == "packable":
        cv.line([(0.56, 0.36), (0.65, 0.36)], dark, width=0.01)
    else:
        cv.line([(0.33, 0.66), (0.40, 0.56)], dark, width=0.012)
        cv.line([(0.67, 0.66), (0.60, 0.56)], dark, width=0.012)
    if variant == "hardshell":
        cv.line([(0.305, 0.30), (0.30, 0.44)], dark, width=0.008)
        cv.line([(0.695, 0.30), (0.70, 0.44)], dark, width=0.008)
    # reflective or logo dot
    cv.circle(0.41, 0.40, 0.012, contrast_for(color))


def draw_backpack(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    dark = shade(color, 0.75) if luminance(color) > 60 else tint(color, 0.2)
    web = accent
    if variant == "vest":
        cv.rect((0.34, 0.20, 0.66, 0.74), dark, r=0.06, outline=line, width=0.012)
        left = [(0.27, 0.24), (0.41, 0.16), (0.44, 0.20), (0.43, 0.78), (0.31, 0.82), (0.26, 0.70)]
        right = [(1 - x, y) for x, y in left]
        for side in (left, right):
            cv.poly(side, color, outline=line, width=0.012)
        over = cv.overlay()
        for x in (0.30, 0.58):
            over.rect((x, 0.30, x + 0.12, 0.52), GLASS, r=0.04)
            over.rect((x + 0.03, 0.36, x + 0.09, 0.52), (120, 170, 210, 140), r=0.03)
        cv.merge(over)
        for x in (0.30, 0.58):
            cv.rect((x + 0.04, 0.25, x + 0.08, 0.31), (40, 40, 44), r=0.01)
        for y in (0.44, 0.54):
            cv.line([(0.40, y), (0.60, y)], web, width=0.014)
        cv.line([(0.30, 0.62), (0.41, 0.62)], dark, width=0.01)
        cv.line([(0.59, 0.62), (0.70, 0.62)], dark, width=0.01)
        return
    if variant == "trekking":
        body = (0.30, 0.14, 0.70, 0.90)
        cv.rect(body, color, r=0.08, outline=line, width=0.012)
        cv.rect((0.28, 0.09, 0.72, 0.26), dark, r=0.07, outline=line, width=0.012)
        cv.line([(0.33, 0.74), (0.67, 0.74)], dark, width=0.01)
        for x in (0.30, 0.70):
            for y in (0.40, 0.58):
                cv.line([(x - 0.015, y), (x + 0.015, y)], web, width=0.016)
        cv.rect((0.38, 0.36, 0.62, 0.62), dark, r=0.05)
        for x in (0.40, 0.60):
            cv.line([(x, 0.22), (x, 0.40)], web, width=0.014)
            cv.rect((x - 0.02, 0.38, x + 0.02, 0.42), (40, 40, 44), r=0.005)
        return
    if variant == "commuter":
        cv.arc((0.42, 0.10, 0.58, 0.26), 180, 360, dark, width=0.02)
        cv.rect((0.27, 0.17, 0.73, 0.86), color, r=0.05, outline=line, width=0.012)
        cv.line([(0.30, 0.27), (0.70, 0.27)], dark, width=0.01)
        cv.rect((0.32, 0.50, 0.68, 0.80), dark, r=0.03)
        cv.line([(0.34, 0.56), (0.66, 0.56)], (40, 40, 44), width=0.008)
        cv.rect((0.60, 0.26, 0.64, 0.32), web, r=0.008)
        cv.rect((0.46, 0.82, 0.54, 0.84), (230, 230, 230))  # reflective tab
        return
    # daypack
    cv.arc((0.42, 0.11, 0.58, 0.27), 180, 360, dark, width=0.02)
    cv.rect((0.28, 0.18, 0.72, 0.86), color, r=0.12, outline=line, width=0.012)
    cv.arc((0.30, 0.22, 0.70, 0.60), 200, 340, dark, width=0.01)
    cv.rect((0.34, 0.52, 0.66, 0.80), dark, r=0.07)
    cv.line([(0.37, 0.58), (0.63, 0.58)], (40, 40, 44), width=0.008)
    for x in (0.28, 0.72):
        cv.line([(x - 0.015, 0.44), (x + 0.015, 0.44)], web, width=0.016)
    cv.rect((0.59, 0.56, 0.62, 0.62), web, r=0.006)


def draw_knife(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    rivet = accent
    hx0 = 0.08 if variant != "paring" else 0.18
    hx1 = 0.38 if variant != "paring" else 0.42
    cy = 0.50
    # handle
    cv.rect((hx0, cy - 0.045, hx1, cy + 0.045), color, r=0.035, outline=line, width=0.01)
    if variant in ("chef", "bread", "paring"):
        for i in range(3):
            x = hx0 + (hx1 - hx0) * (0.25 + 0.25 * i)
            cv.circle(x, cy, 0.011, rivet, outline=shade(rivet, 0.7), width=0.004)
    else:
        cv.rect((hx1 - 0.035, cy - 0.045, hx1, cy + 0.045), shade(color, 0.7))
    # bolster
    cv.rect((hx1 - 0.005, cy - 0.05, hx1 + 0.025, cy + 0.05), STEEL_DARK, r=0.008)
    bx = hx1 + 0.025
    if variant == "chef":
        blade = [(bx, cy - 0.05), (0.78, cy - 0.06), (0.86, cy - 0.04), (0.945, cy + 0.005),
                 (0.88, cy + 0.05), (0.76, cy + 0.085), (bx, cy + 0.09)]
    elif variant == "santoku":
        blade = [(bx, cy - 0.055), (0.80, cy - 0.055), (0.86, cy - 0.03), (0.915, cy + 0.06),
                 (0.86, cy + 0.085), (bx, cy + 0.09)]
    elif variant == "paring":
        blade = [(bx, cy - 0.035), (0.62, cy - 0.035), (0.74, cy), (0.66, cy + 0.04), (bx, cy + 0.045)]
    else:  # bread
        blade = [(bx, cy - 0.045), (0.92, cy - 0.045), (0.945, cy - 0.01), (0.92, cy + 0.045), (bx, cy + 0.045)]
    cv.poly(blade, STEEL, outline=STEEL_DARK, width=0.008)
    # edge bevel
    ys = [y for _, y in blade]
    low = max(ys)
    cv.line([(bx + 0.01, low - 0.018), (blade[-2][0] - 0.02, blade[-2][1] - 0.018)], (226, 229, 233), width=0.01)
    if variant == "santoku":
        for i in range(7):
            x = bx + 0.05 + i * 0.055
            cv.ellipse((x, cy + 0.035, x + 0.03, cy + 0.06), STEEL_DARK)
    if variant == "bread":
        teeth = []
        x = bx + 0.01
        while x < 0.91:
            teeth += [(x, cy + 0.045), (x + 0.012, cy + 0.033)]
            x += 0.024
        cv.line(teeth, STEEL_DARK, width=0.006)


def draw_coffee(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    dark = shade(color, 0.75) if luminance(color) > 60 else tint(color, 0.2)
    if variant == "espresso":
        cv.rect((0.20, 0.20, 0.80, 0.82), color, r=0.04, outline=line, width=0.012)
        cv.rect((0.20, 0.20, 0.80, 0.27), dark, r=0.04)
        cv.rect((0.25, 0.74, 0.75, 0.82), (50, 50, 54), r=0.01)
        cv.circle(0.33, 0.36, 0.055, (246, 246, 242), outline=(60, 60, 64), width=0.008)
        cv.line([(0.33, 0.36), (0.36, 0.33)], (200, 40, 40), width=0.008)
        cv.rect((0.43, 0.40, 0.59, 0.47), STEEL, r=0.01, outline=STEEL_DARK, width=0.006)
        cv.rect((0.45, 0.47, 0.57, 0.51), STEEL_DARK, r=0.008)
        cv.line([(0.57, 0.49), (0.74, 0.53)], (30, 30, 32), width=0.024)
        cv.rect((0.45, 0.61, 0.57, 0.735), (250, 250, 248), r=0.015, outline=(150, 150, 150), width=0.006)
        cv.arc((0.545, 0.63, 0.60, 0.70), 270, 90, (150, 150, 150), width=0.008)
        cv.line([(0.26, 0.47), (0.255, 0.66)], STEEL_DARK, width=0.012)
        cv.circle(0.67, 0.34, 0.02, (240, 240, 236))
        return
    if variant == "pourover":
        over = cv.overlay()
        over.poly([(0.35, 0.46), (0.65, 0.46), (0.70, 0.74), (0.64, 0.86), (0.36, 0.86), (0.30, 0.74)], GLASS)
        cv.merge(over)
        cv.poly([(0.32, 0.74), (0.68, 0.74), (0.64, 0.855), (0.36, 0.855)], COFFEE)
        cv.poly([(0.35, 0.46), (0.65, 0.46), (0.70, 0.74), (0.64, 0.86), (0.36, 0.86), (0.30, 0.74)],
                None, outline=(150, 170, 180), width=0.008)
        cv.poly([(0.28, 0.18), (0.72, 0.18), (0.58, 0.42), (0.42, 0.42)], color, outline=line, width=0.012)
        cv.rect((0.34, 0.41, 0.66, 0.46), dark, r=0.01)
        for x in (0.40, 0.50, 0.60):
            cv.line([(x, 0.21), (0.5 + (x - 0.5) * 0.5, 0.39)], dark, width=0.006)
        cv.rect((0.30, 0.16, 0.70, 0.20), dark, r=0.01)
        return
    if variant == "press":
        over = cv.overlay()
        over.rect((0.34, 0.30, 0.62, 0.82), GLASS, r=0.02)
        cv.merge(over)
        cv.rect((0.35, 0.45, 0.61, 0.80), COFFEE, r=0.01)
        cv.rect((0.34, 0.30, 0.62, 0.82), None, r=0.02, outline=(150, 170, 180), width=0.008)
        cv.rect((0.32, 0.78, 0.64, 0.85), color, r=0.02, outline=line, width=0.01)
        cv.rect((0.32, 0.25, 0.64, 0.31), color, r=0.02, outline=line, width=0.01)
        for x in (0.345, 0.615):
            cv.line([(x, 0.30), (x, 0.80)], color, width=0.016)
        cv.line([(0.48, 0.13), (0.48, 0.46)], STEEL_DARK, width=0.012)
        cv.circle(0.48, 0.13, 0.03, color, outline=line, width=0.008)
        cv.line([(0.62, 0.37), (0.74, 0.38), (0.75, 0.68), (0.62, 0.70)], color, width=0.035)
        return
    # drip
    cv.rect((0.20, 0.78, 0.80, 0.87), color, r=0.02, outline=line, width=0.012)
    cv.rect((0.54, 0.20, 0.78, 0.80), color, outline=line, width=0.012)
    cv.rect((0.20, 0.14, 0.80, 0.33), color, r=0.04, outline=line, width=0.012)
    cv.rect((0.24, 0.30, 0.54, 0.34), dark, r=0.01)
    cv.rect((0.60, 0.44, 0.72, 0.50), (40, 50, 60), r=0.008)
    cv.circle(0.63, 0.57, 0.013, dark)
    cv.circle(0.69, 0.57, 0.013, (210, 60, 50))
    cv.rect((0.22, 0.75, 0.54, 0.78), (60, 60, 62))
    over = cv.overlay()
    over.poly([(0.28, 0.44), (0.50, 0.44), (0.53, 0.62), (0.52, 0.75), (0.26, 0.75), (0.25, 0.62)], GLASS)
    cv.merge(over)
    cv.poly([(0.255, 0.60), (0.525, 0.60), (0.52, 0.745), (0.265, 0.745)], COFFEE)
    cv.rect((0.27, 0.40, 0.51, 0.45), (40, 40, 44), r=0.01)
    cv.line([(0.26, 0.47), (0.20, 0.50), (0.20, 0.64), (0.255, 0.66)], (40, 40, 44), width=0.018)


def draw_headphones(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    dark = shade(color, 0.72) if luminance(color) > 60 else tint(color, 0.2)
    if variant == "earbuds":
        # charging case
        cv.rect((0.30, 0.54, 0.70, 0.84), color, r=0.13, outline=line, width=0.012)
        cv.line([(0.305, 0.64), (0.695, 0.64)], dark, width=0.01)
        cv.circle(0.5, 0.75, 0.012, accent if accent != color else contrast_for(color))
        # two buds lying above it, stems pointing outward
        for cx, sx in ((0.36, -1), (0.64, 1)):
            cv.line([(cx, 0.34), (cx + sx * 0.09, 0.46)], line, width=0.058)
            cv.line([(cx, 0.34), (cx + sx * 0.09, 0.46)], color, width=0.04)
            cv.circle(cx, 0.30, 0.075, color, outline=line, width=0.012)
            cv.ellipse((cx - 0.035 - sx * 0.02, 0.265, cx + 0.035 - sx * 0.02, 0.335), (60, 60, 64))
        return
    thin = variant == "headset"
    band_w = 0.035 if thin else 0.055
    cv.arc((0.22, 0.13, 0.78, 0.73), 180, 360, line, width=band_w + 0.016)
    cv.arc((0.228, 0.138, 0.772, 0.722), 180, 360, color, width=band_w)
    for x in (0.22, 0.78):
        cv.rect((x - 0.012, 0.40, x + 0.012, 0.50), STEEL_DARK)
    cup_h = (0.47, 0.74) if not thin else (0.50, 0.70)
    for x0, x1, pad0, pad1 in ((0.14, 0.28, 0.26, 0.33), (0.72, 0.86, 0.67, 0.74)):
        cv.rect((pad0, cup_h[0] + 0.02, pad1, cup_h[1] - 0.02), (46, 46, 50), r=0.03)
        cv.rect((x0, cup_h[0], x1, cup_h[1]), color, r=0.05, outline=line, width=0.012)
        cv.rect((x0 + 0.03, cup_h[0] + 0.05, x1 - 0.03, cup_h[1] - 0.05), dark, r=0.03)
    if variant == "studio":
        pts = [(0.20, 0.74)]
        y = 0.76
        for i in range(7):
            pts += [(0.16, y + 0.012), (0.24, y + 0.024)]
            y += 0.024
        cv.line(pts, (40, 40, 44), width=0.01)
    if variant == "headset":
        cv.line(_bezier((0.20, 0.66), (0.22, 0.80), (0.32, 0.84), (0.42, 0.82)), (40, 40, 44), width=0.014)
        cv.ellipse((0.41, 0.795, 0.47, 0.845), (40, 40, 44))
    if variant == "over-ear":
        cv.circle(0.79, 0.66, 0.008, accent if accent != color else contrast_for(color))


def draw_lamp(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    dark = shade(color, 0.72) if luminance(color) > 60 else tint(color, 0.2)
    glow = cv.overlay()
    if variant == "mushroom":
        cv.ellipse((0.32, 0.80, 0.68, 0.88), color, outline=line, width=0.01)
        cv.rect((0.465, 0.46, 0.535, 0.84), color, outline=line, width=0.01)
        cv.chord((0.24, 0.20, 0.76, 0.70), 180, 360, color)
        cv.arc((0.24, 0.20, 0.76, 0.70), 180, 360, line, width=0.012)
        cv.line([(0.24, 0.45), (0.76, 0.45)], line, width=0.012)
        cv.rect((0.27, 0.44, 0.73, 0.475), LIGHT, r=0.01)
        return
    if variant == "led":
        glow.poly([(0.22, 0.28), (0.66, 0.28), (0.78, 0.86), (0.10, 0.86)], (255, 240, 180, 60))
        cv.merge(glow, blur=0.006)
        cv.rect((0.52, 0.80, 0.80, 0.87), color, r=0.02, outline=line, width=0.01)
        cv.line([(0.66, 0.81), (0.66, 0.26)], color, width=0.03)
        cv.line([(0.66, 0.81), (0.66, 0.26)], line, width=0.006)
        cv.rect((0.18, 0.21, 0.72, 0.27), color, r=0.02, outline=line, width=0.01)
        cv.rect((0.21, 0.265, 0.67, 0.28), LIGHT, r=0.005)
        cv.circle(0.60, 0.835, 0.012, accent if accent != color else contrast_for(color))
        return
    if variant == "clip":
        glow.poly([(0.60, 0.30), (0.78, 0.24), (0.96, 0.80), (0.56, 0.86)], (255, 240, 180, 60))
        cv.merge(glow, blur=0.006)
        cv.rect((0.38, 0.76, 0.62, 0.80), color, r=0.01, outline=line, width=0.008)
        cv.rect((0.38, 0.84, 0.62, 0.88), color, r=0.01, outline=line, width=0.008)
        cv.rect((0.56, 0.76, 0.62, 0.88), color, outline=line, width=0.008)
        neck = _bezier((0.46, 0.76), (0.40, 0.40), (0.50, 0.16), (0.66, 0.24))
        cv.line(neck, line, width=0.03)
        cv.line(neck, color, width=0.018)
        cv.poly([(0.62, 0.19), (0.76, 0.21), (0.80, 0.29), (0.62, 0.32)], color, outline=line, width=0.01)
        cv.line([(0.63, 0.315), (0.79, 0.29)], LIGHT, width=0.012)
        return
    # architect
    glow.poly([(0.64, 0.52), (0.84, 0.46), (0.98, 0.90), (0.50, 0.90)], (255, 240, 180, 60))
    cv.merge(glow, blur=0.006)
    cv.ellipse((0.14, 0.80, 0.46, 0.88), color, outline=line, width=0.01)
    arm = [(0.30, 0.83), (0.42, 0.46), (0.66, 0.30)]
    cv.line(arm, line, width=0.034)
    cv.line(arm, color, width=0.02)
    cv.line([(0.325, 0.79), (0.43, 0.50)], dark, width=0.008)
    cv.line([(0.45, 0.49), (0.64, 0.36)], dark, width=0.008)
    for x, y in arm[1:]:
        cv.circle(x, y, 0.022, dark, outline=line, width=0.008)
    cv.poly([(0.62, 0.27), (0.70, 0.23), (0.87, 0.46), (0.64, 0.54)], color, outline=line, width=0.012)
    cv.line([(0.645, 0.535), (0.865, 0.465)], LIGHT, width=0.016)


def draw_yoga_mat(cv: Canvas, color: Color, accent: Color, variant: str, rng: random.Random) -> None:
    line = outline_for(color)
    top_face = tint(color, 0.12)
    under = shade(color, 0.7) if luminance(color) > 60 else tint(color, 0.22)
    # unrolled part, in perspective toward the viewer
    flat = [(0.25, 0.50), (0.68, 0.50), (0.90, 0.88), (0.08, 0.88)]
    cv.poly(flat, top_face, outline=line, width=0.01)
    cv.poly([(0.08, 0.88), (0.90, 0.88), (0.90, 0.905), (0.08, 0.905)], under)
    if variant == "standard":
        for t in (0.35, 0.65):
            cv.line([(0.25 + (0.68 - 0.25) * t, 0.52), (0.08 + (0.90 - 0.08) * t, 0.87)], shade(top_face, 0.85), width=0.006)
        cv.line([(0.19, 0.66), (0.77, 0.66)], shade(top_face, 0.85), width=0.006)
    if variant == "cork":
        for _ in range(110):
            y = rng.uniform(0.52, 0.86)
            f = (y - 0.50) / 0.38
            x0 = 0.25 + (0.08 - 0.25) * f
            x1 = 0.68 + (0.90 - 0.68) * f
            x = rng.uniform(x0 + 0.01, x1 - 0.01)
            cv.circle(x, y, 0.004, shade(top_face, 0.8))
    # roll
    cv.rect((0.22, 0.28, 0.70, 0.52), color, outline=line, width=0.012)
    cv.line([(0.24, 0.31), (0.68, 0.31)], tint(color, 0.25), width=0.012)
    cv.ellipse((0.63, 0.28, 0.77, 0.52), color, outline=line, width=0.012)
    for k in range(1, 5):
        i = k * 0.014
        cv.arc((0.63 + i, 0.28 + i * 1.6, 0.77 - i, 0.52 - i * 1.6), 0, 360, under, width=0.006)
    cv.ellipse((0.689, 0.385, 0.711, 0.415), under)
    # strap
    strap = accent if accent != color else contrast_for(color)
    for x in (0.32, 0.56):
        cv.rect((x, 0.275, x + 0.035, 0.525), strap, r=0.006)
    if variant == "travel":
        cv.line([(0.165, 0.69), (0.79, 0.69)], shade(top_face, 0.8), width=0.008)


def draw_swatch(cv: Canvas, c1: Color, c2: Color, pattern: str, rng: random.Random) -> None:
    x0, y0, x1, y1 = 0.14, 0.14, 0.86, 0.86
    sw = Image.new("RGBA", (cv.px(x1 - x0), cv.px(y1 - y0)), c1 + (255,))
    d = ImageDraw.Draw(sw)
    n = sw.size[0]
    if pattern == "stripes":
        step = n // 6
        for k in range(-6, 14):
            o = k * step
            d.polygon([(o, 0), (o + step // 2, 0), (o + step // 2 - n, n), (o - n, n)], fill=c2)
    elif pattern == "pinstripe":
        step = n // 12
        for x in range(step // 2, n, step):
            d.line([(x, 0), (x, n)], fill=c2, width=max(2, n // 120))
    elif pattern == "gingham":
        step = n // 10
        band = Image.new("RGBA", sw.size, (0, 0, 0, 0))
        bd = ImageDraw.Draw(band)
        for x in range(0, n, step * 2):
            bd.rectangle([x, 0, x + step - 1, n], fill=c2 + (120,))
            bd.rectangle([0, x, n, x + step - 1], fill=c2 + (120,))
        sw = Image.alpha_composite(sw, band)
    elif pattern == "dots":
        step = n // 7
        r = step // 4
        for j, y in enumerate(range(step // 2, n + step, step)):
            off = step // 2 if j % 2 else 0
            for x in range(step // 2 - off, n + step, step):
                d.ellipse([x - r, y - r, x + r, y + r], fill=c2)
    elif pattern == "chevron":
        step = n // 8
        for y in range(-step, n + step, step):
            pts = []
            for i, x in enumerate(range(0, n + step, step)):
                pts.append((x, y + (step // 2 if i % 2 else 0)))
            d.line(pts, fill=c2, width=step // 3, joint="curve")
    elif pattern == "waves":
        step = n // 8
        for y in range(0, n + step, step):
            pts = [(x, y + math.sin(x / n * 4 * math.pi) * step * 0.3) for x in range(0, n + 1, 4)]
            d.line(pts, fill=c2, width=step // 3)
    elif pattern == "plaid":
        step = n // 4
        band = Image.new("RGBA", sw.size, (0, 0, 0, 0))
        bd = ImageDraw.Draw(band)
        for x in range(step // 3, n, step):
            bd.rectangle([x, 0, x + step // 3, n], fill=c2 + (140,))
            bd.rectangle([0, x, n, x + step // 3], fill=c2 + (140,))
            bd.line([(x + step * 2 // 3, 0), (x + step * 2 // 3, n)], fill=(250, 250, 250, 160), width=3)
            bd.line([(0, x + step * 2 // 3), (n, x + step * 2 // 3)], fill=(250, 250, 250, 160), width=3)
        sw = Image.alpha_composite(sw, band)
    elif pattern == "blocks":
        d.polygon([(0, n), (n, 0), (n, n)], fill=c2)
    elif pattern == "grid":
        step = n // 10
        for x in range(step // 2, n, step):
            d.line([(x, 0), (x, n)], fill=c2, width=max(2, n // 150))
            d.line([(0, x), (n, x)], fill=c2, width=max(2, n // 150))
    cv.layer.paste(sw, (cv.px(x0), cv.px(y0)))
    cv.d = ImageDraw.Draw(cv.layer)
    cv.rect((x0, y0, x1, y1), None, outline=shade(c1, 0.75), width=0.006)


DRAWERS = {
    "running-shoes": draw_shoe,
    "running-socks": draw_sock,
    "rain-jackets": draw_jacket,
    "backpacks": draw_backpack,
    "kitchen-knives": draw_knife,
    "coffee-makers": draw_coffee,
    "headphones": draw_headphones,
    "desk-lamps": draw_lamp,
    "yoga-mats": draw_yoga_mat,
}


def _background(top: Color, bottom: Color) -> Image.Image:
    col = Image.new("RGB", (1, W))
    col.putdata([tuple(round(a + (b - a) * (y / (W - 1))) for a, b in zip(top, bottom)) for y in range(W)])
    return col.resize((W, W), Image.NEAREST)


def render(cv: Canvas, bg_index: int) -> bytes:
    """Composite the layer with a drop shadow on a gradient; return optimised PNG bytes."""
    top, bottom = BACKGROUNDS[bg_index % len(BACKGROUNDS)]
    bg = _background(top, bottom).convert("RGBA")
    alpha = cv.layer.getchannel("A")
    shadow_alpha = alpha.point(lambda a: 70 if a >= 200 else 0).filter(ImageFilter.GaussianBlur(W * 0.008))
    shadow = Image.new("RGBA", (W, W), (40, 36, 30, 0))
    shadow.putalpha(shadow_alpha)
    off = round(W * 0.015)
    bg.alpha_composite(shadow, (off, off * 2))
    bg.alpha_composite(cv.layer)
    img = bg.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def product_png(category: str, shape: str, color: Color, accent: Color, bg_index: int,
                rng: random.Random) -> bytes:
    cv = Canvas()
    DRAWERS[category](cv, color, accent, shape, rng)
    if category == "kitchen-knives":  # diagonal reads better than a thin horizontal blade
        cv.layer = cv.layer.rotate(28, resample=Image.BICUBIC, center=(W // 2, W // 2))
    return render(cv, bg_index)


def swatch_png(c1: Color, c2: Color, pattern: str, bg_index: int, rng: random.Random) -> bytes:
    cv = Canvas()
    draw_swatch(cv, c1, c2, pattern, rng)
    return render(cv, bg_index)
