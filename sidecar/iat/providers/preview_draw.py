"""Drawing for the preview renderer's style-lock stage: characters as recognisable figures, scene hints as props.

Everything a figure looks like comes from the character alone (its code, palette, appearance and outfit words), so a
character stays on-model in every shot and candidate; only its pose and placement come from the seed. No
trigonometry and no platform-dependent maths: coordinates are products, sums and square roots (exact in IEEE),
rounded to whole pixels before drawing, so the same inputs rasterise the same everywhere.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from PIL import ImageDraw

RGB = tuple[int, int, int]

DEFAULT_PALETTE: tuple[RGB, ...] = ((238, 232, 213), (131, 175, 155), (200, 200, 169), (84, 110, 122), (254, 67, 101))
SKIN_TONES: tuple[RGB, ...] = ((255, 219, 185), (241, 194, 155), (224, 172, 128), (198, 134, 86), (141, 85, 54))
# Outfit colours for a character without a palette: far apart in hue, so two such characters still differ.
FALLBACK_OUTFITS: tuple[RGB, ...] = ((214, 40, 40), (36, 123, 160), (112, 193, 179), (247, 127, 0), (106, 76, 147),
                                    (46, 139, 87), (252, 191, 73), (60, 60, 80))
EYE: RGB = (30, 30, 40)

HATS = ("none", "top", "cap", "beanie", "crown", "wizard")
HAIRS = ("short", "spiky", "long", "bun", "bald")
ACCESSORIES = ("scarf", "glasses", "backpack", "staff", "bowtie", "cape", "belt")
BUILDS = {"regular": (0.92, 1.0, 1.0), "tall": (1.0, 0.85, 0.95), "stout": (0.86, 1.35, 1.05),
          "small": (0.78, 1.0, 1.15)}  # height factor, width factor, head factor

# Words in appearance/outfit text that pick a feature before the code's hash does.
_HAT_WORDS = {"top hat": "top", "tophat": "top", "cap": "cap", "beanie": "beanie", "crown": "crown",
              "wizard": "wizard", "pointy hat": "wizard", "witch": "wizard", "no hat": "none", "hat": "top"}
_HAIR_WORDS = {"bald": "bald", "spiky": "spiky", "long hair": "long", "ponytail": "bun", "bun": "bun",
               "short hair": "short", "braid": "long"}
_ACC_WORDS = {"glasses": "glasses", "spectacles": "glasses", "scarf": "scarf", "backpack": "backpack",
              "staff": "staff", "cane": "staff", "wand": "staff", "bow tie": "bowtie", "bowtie": "bowtie",
              "cape": "cape", "cloak": "cape", "belt": "belt"}
_BUILD_WORDS = {"tall": "tall", "stout": "stout", "round": "stout", "chubby": "stout", "small": "small",
                "short": "small", "child": "small", "kid": "small"}
_DRESS_WORDS = ("dress", "skirt", "robe", "gown", "coat", "tunic")


def digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()


class Rand:
    """random.Random driven through random() only, whose sequence Python guarantees for an integer seed."""

    def __init__(self, *parts: object):
        self._r = random.Random(int.from_bytes(digest(*parts)[:8], "big"))

    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._r.random()

    def i(self, n: int) -> int:
        return min(n - 1, int(self._r.random() * n))


def _first_word(text: str, table: dict[str, str]) -> str | None:
    # Longest phrase first, so "top hat" wins over "hat" and "short hair" over "short".
    for word in sorted(table, key=lambda w: (-len(w), w)):
        if word in text:
            return table[word]
    return None


def _skin_score(c: RGB) -> float:
    r, g, b = c
    if not (r > g > b and r >= 110 and 15 <= r - b <= 150):
        return 0.0
    return 1.0 - abs((g - b) / max(1, r - b) - 0.45)


def darken(c: RGB, f: float) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def distance2(a: RGB, b: RGB) -> int:
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2


@dataclass(frozen=True)
class FigureSpec:
    """How one character looks, fixed by the character; never by the seed."""

    build: str
    hat: str
    hair: str
    accessory: str
    dress: bool
    skin: RGB
    torso: RGB
    legs: RGB
    hair_c: RGB
    accent: RGB
    hat_c: RGB
    shoes: RGB
    stripes: tuple[RGB, ...]

    def colours(self) -> list[RGB]:
        out = [self.skin, self.torso, self.legs, self.shoes, *self.stripes]
        if self.hair != "bald":
            out.append(self.hair_c)
        if self.hat != "none":
            out.append(self.hat_c)
        if self.accessory != "glasses":
            out.append(self.accent)
        return out


def figure_spec(code: str, palette: tuple[RGB, ...], appearance: str, outfit: str) -> FigureSpec:
    h = digest("figure", code)
    words = f" {appearance} {outfit} ".lower()
    hat = _first_word(words, _HAT_WORDS) or HATS[h[0] % len(HATS)]
    hair = _first_word(words, _HAIR_WORDS) or HAIRS[h[1] % len(HAIRS)]
    accessory = _first_word(words, _ACC_WORDS) or ACCESSORIES[h[2] % len(ACCESSORIES)]
    build = _first_word(words, _BUILD_WORDS) or tuple(BUILDS)[h[3] % len(BUILDS)]
    dress = any(w in words for w in _DRESS_WORDS) or (not outfit.strip() and h[4] % 3 == 0)

    rest = list(palette)
    skin = SKIN_TONES[h[5] % len(SKIN_TONES)]
    if rest:
        best = max(rest, key=_skin_score)
        if _skin_score(best) > 0.5 and len(rest) > 1:
            skin = best
            rest.remove(best)
    if not rest:
        rest = [FALLBACK_OUTFITS[h[6] % len(FALLBACK_OUTFITS)]]
    # Roles present on this figure take the palette in order; extra colours become stripes on the torso, so every
    # colour of the character's palette shows.
    roles = ["torso", "legs"] + (["hair"] if hair != "bald" else []) + \
            (["accent"] if accessory != "glasses" else []) + (["hat"] if hat != "none" else [])
    got = dict(zip(roles, rest))
    torso = got["torso"]
    defaults = {"legs": darken(torso, 0.55), "hair": (70, 45, 30), "accent": (235, 235, 235),
                "hat": darken(got.get("legs", torso), 0.7)}
    return FigureSpec(
        build=build, hat=hat, hair=hair, accessory=accessory, dress=dress, skin=skin, torso=torso,
        legs=got.get("legs", defaults["legs"]), hair_c=got.get("hair", defaults["hair"]),
        accent=got.get("accent", defaults["accent"]), hat_c=got.get("hat", defaults["hat"]),
        shoes=darken(got.get("legs", defaults["legs"]), 0.45), stripes=tuple(rest[len(roles):][:4]))


# Half the widest extent of any figure, and its height above the top of the head, as fractions of its height:
# placement uses these to keep whole figures inside the frame (and inside the cut-out margin).
HALF_WIDTH = 0.43
HAT_ROOM = 0.22


def _pt(x: float, y: float) -> tuple[int, int]:
    return (round(x), round(y))


def _ellipse(d: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
    d.ellipse([_pt(cx - rx, cy - ry), _pt(cx + rx, cy + ry)], fill=fill)


def _poly(d: ImageDraw.ImageDraw, pts: list[tuple[float, float]], fill: RGB) -> None:
    d.polygon([_pt(x, y) for x, y in pts], fill=fill)


def _line(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], fill: RGB, w: float) -> None:
    d.line([_pt(*a), _pt(*b)], fill=fill, width=max(1, round(w)))
    r = w / 2  # round caps, so thick limbs do not end in square stubs
    _ellipse(d, a[0], a[1], r, r, fill)
    _ellipse(d, b[0], b[1], r, r, fill)


def draw_figure(d: ImageDraw.ImageDraw, spec: FigureSpec, cx: float, feet_y: float, height: float,
                rnd: Rand) -> None:
    """One character standing with its feet at (cx, feet_y); `height` is the slot's figure height."""
    hf_k, bw, head_k = BUILDS[spec.build]
    hf = height * hf_k
    u = hf / 8.0
    top = feet_y - hf
    head_r = 0.62 * u * head_k
    tilt = rnd.u(-0.12, 0.12) * u
    hx, hy = cx + tilt, top + head_r
    neck_y = top + 2 * head_r
    sh_y = neck_y + 0.15 * u
    hip_y = feet_y - 3.4 * u
    tw = 0.85 * u * bw
    side = 1 if digest("side", spec)[0] % 2 else -1  # which side a staff or backpack sits on, per character

    # Pose: hands anywhere from raised to hanging, at a fixed arm length (no angles, no trigonometry).
    arm_len = 2.4 * u
    hands = []
    for s in (-1, 1):
        dx, dy = rnd.u(0.25, 1.4), rnd.u(-1.3, 2.6)
        norm = (dx * dx + dy * dy) ** 0.5
        shoulder = (cx + s * (tw - 0.15 * u), sh_y + 0.2 * u)
        hands.append((shoulder, (shoulder[0] + s * dx / norm * arm_len, shoulder[1] + dy / norm * arm_len)))
    spread = rnd.u(0.25, 0.9) * u

    if spec.accessory == "cape":
        _poly(d, [(cx - tw * 0.9, sh_y), (cx + tw * 0.9, sh_y), (cx + tw * 1.6, feet_y - 0.9 * u),
                  (cx - tw * 1.6, feet_y - 0.9 * u)], spec.accent)
    if spec.accessory == "backpack":
        _poly(d, [(cx + side * tw * 0.3, sh_y + 0.3 * u), (cx + side * (tw + 0.55 * u), sh_y + 0.3 * u),
                  (cx + side * (tw + 0.55 * u), hip_y - 0.2 * u), (cx + side * tw * 0.3, hip_y - 0.2 * u)],
              spec.accent)
    if spec.hair == "long":
        _poly(d, [(hx - head_r * 1.1, hy), (hx + head_r * 1.1, hy), (hx + head_r * 1.6, sh_y + 1.8 * u),
                  (hx - head_r * 1.6, sh_y + 1.8 * u)], spec.hair_c)

    # Legs and shoes.
    leg_w = 0.5 * u * min(bw, 1.2)
    for s in (-1, 1):
        hip = (cx + s * 0.35 * u * bw, hip_y - 0.2 * u)
        foot = (cx + s * spread, feet_y - 0.25 * u)
        _line(d, hip, foot, spec.legs, leg_w)
        _ellipse(d, foot[0] + s * 0.2 * u, feet_y - 0.15 * u, 0.42 * u, 0.2 * u, spec.shoes)

    # Torso: a shirt (box) or a dress (trapezoid to the knees), with any extra palette colours as stripes.
    if spec.dress:
        hem_y, hem_w = feet_y - 1.6 * u, tw * 1.75
        torso = [(cx - tw, sh_y), (cx + tw, sh_y), (cx + hem_w, hem_y), (cx - hem_w, hem_y)]
        bottom = hem_y
    else:
        torso = [(cx - tw, sh_y), (cx + tw, sh_y), (cx + tw * 0.9, hip_y + 0.1 * u), (cx - tw * 0.9, hip_y + 0.1 * u)]
        bottom = hip_y + 0.1 * u
    _poly(d, torso, spec.torso)
    if spec.stripes:
        band = (bottom - sh_y) / (2 * len(spec.stripes) + 1)
        for k, colour in enumerate(spec.stripes):
            y0 = sh_y + band * (2 * k + 1)
            frac0, frac1 = (y0 - sh_y) / (bottom - sh_y), (y0 + band - sh_y) / (bottom - sh_y)
            half_bottom = torso[2][0] - cx
            w0, w1 = tw + (half_bottom - tw) * frac0, tw + (half_bottom - tw) * frac1
            _poly(d, [(cx - w0, y0), (cx + w0, y0), (cx + w1, y0 + band), (cx - w1, y0 + band)], colour)
    if spec.accessory == "belt":
        _poly(d, [(cx - tw * 0.95, hip_y - 0.45 * u), (cx + tw * 0.95, hip_y - 0.45 * u),
                  (cx + tw * 0.95, hip_y - 0.05 * u), (cx - tw * 0.95, hip_y - 0.05 * u)], spec.accent)

    # Arms in the outfit colour, hands in skin.
    for shoulder, hand in hands:
        _line(d, shoulder, hand, spec.torso, 0.42 * u)
        _ellipse(d, hand[0], hand[1], 0.27 * u, 0.27 * u, spec.skin)
    if spec.accessory == "staff":
        hand = hands[0 if side < 0 else 1][1]
        staff_top = max(hand[1] - 1.6 * u, top - 0.9 * u)  # a raised hand must not lift the staff out of frame
        _line(d, (hand[0], staff_top), (hand[0], feet_y - 0.1 * u), darken(spec.accent, 0.6), 0.22 * u)
        _ellipse(d, hand[0], staff_top - 0.1 * u, 0.35 * u, 0.35 * u, spec.accent)

    # Head, hair, face.
    _ellipse(d, hx, hy, head_r, head_r * 1.05, spec.skin)
    if spec.hair in ("short", "long", "bun"):
        d.pieslice([_pt(hx - head_r * 1.08, hy - head_r * 1.12), _pt(hx + head_r * 1.08, hy + head_r * 0.7)],
                   180, 360, fill=spec.hair_c)
    if spec.hair == "bun":
        _ellipse(d, hx, hy - head_r * 1.25, head_r * 0.45, head_r * 0.4, spec.hair_c)
    if spec.hair == "spiky":
        spikes = []
        for k in range(6):
            x0 = hx - head_r + 2 * head_r * k / 6
            spikes += [(x0, hy - head_r * 0.35), (x0 + head_r / 6, hy - head_r * 1.5)]
        spikes += [(hx + head_r, hy - head_r * 0.35), (hx + head_r, hy - head_r * 0.1),
                   (hx - head_r, hy - head_r * 0.1)]
        _poly(d, spikes, spec.hair_c)
    eye_y = hy + 0.08 * u
    for s in (-1, 1):
        _ellipse(d, hx + s * 0.24 * u + tilt * 0.3, eye_y, 0.08 * u, 0.09 * u, EYE)
    if spec.accessory == "glasses":
        for s in (-1, 1):
            ex = hx + s * 0.24 * u
            box = [_pt(ex - 0.2 * u, eye_y - 0.18 * u), _pt(ex + 0.2 * u, eye_y + 0.18 * u)]
            d.ellipse(box, outline=EYE, width=max(1, round(0.07 * u)))
        _line(d, (hx - 0.06 * u, eye_y), (hx + 0.06 * u, eye_y), EYE, 0.06 * u)
    if spec.accessory == "scarf":
        _poly(d, [(cx - tw * 0.8, neck_y - 0.1 * u), (cx + tw * 0.8, neck_y - 0.1 * u),
                  (cx + tw * 0.8, neck_y + 0.45 * u), (cx - tw * 0.8, neck_y + 0.45 * u)], spec.accent)
        _poly(d, [(cx + side * tw * 0.3, neck_y + 0.3 * u), (cx + side * tw * 0.75, neck_y + 0.3 * u),
                  (cx + side * tw * 0.8, neck_y + 1.9 * u), (cx + side * tw * 0.35, neck_y + 1.9 * u)], spec.accent)
    if spec.accessory == "bowtie":
        y = neck_y + 0.2 * u
        _poly(d, [(cx, y), (cx - 0.45 * u, y - 0.25 * u), (cx - 0.45 * u, y + 0.25 * u)], spec.accent)
        _poly(d, [(cx, y), (cx + 0.45 * u, y - 0.25 * u), (cx + 0.45 * u, y + 0.25 * u)], spec.accent)

    # Hat last, over the hair.
    ht = hy - head_r  # top of the head
    c = spec.hat_c
    if spec.hat == "top":
        _poly(d, [(hx - head_r * 1.3, ht + 0.15 * u), (hx + head_r * 1.3, ht + 0.15 * u),
                  (hx + head_r * 1.3, ht - 0.05 * u), (hx - head_r * 1.3, ht - 0.05 * u)], c)
        _poly(d, [(hx - head_r * 0.75, ht), (hx + head_r * 0.75, ht), (hx + head_r * 0.75, ht - 1.45 * u),
                  (hx - head_r * 0.75, ht - 1.45 * u)], c)
    elif spec.hat == "cap":
        d.pieslice([_pt(hx - head_r * 1.05, ht - head_r * 0.2), _pt(hx + head_r * 1.05, ht + head_r * 1.3)],
                   180, 360, fill=c)
        _poly(d, [(hx + side * head_r * 0.2, hy - head_r * 0.3), (hx + side * head_r * 1.9, hy - head_r * 0.3),
                  (hx + side * head_r * 1.9, hy - head_r * 0.12), (hx + side * head_r * 0.2, hy - head_r * 0.12)], c)
    elif spec.hat == "beanie":
        d.pieslice([_pt(hx - head_r * 1.08, ht - head_r * 0.35), _pt(hx + head_r * 1.08, ht + head_r * 1.4)],
                   180, 360, fill=c)
        _ellipse(d, hx, ht - head_r * 0.4, head_r * 0.3, head_r * 0.3, spec.accent)
    elif spec.hat == "crown":
        _poly(d, [(hx - head_r * 0.9, ht + 0.2 * u), (hx - head_r * 0.9, ht - 0.9 * u),
                  (hx - head_r * 0.45, ht - 0.4 * u), (hx, ht - 1.0 * u), (hx + head_r * 0.45, ht - 0.4 * u),
                  (hx + head_r * 0.9, ht - 0.9 * u), (hx + head_r * 0.9, ht + 0.2 * u)], c)
    elif spec.hat == "wizard":
        _poly(d, [(hx - head_r * 1.3, ht + 0.2 * u), (hx + head_r * 1.3, ht + 0.2 * u),
                  (hx + side * 0.5 * u, ht - 1.6 * u)], c)


# --- scene hints: props chosen from words of the scene text and the prompt ---

_PROP_WORDS = {
    "trees": ("forest", "tree", "park", "garden", "woods", "jungle", "orchard"),
    "city": ("city", "street", "town", "building", "rooftop", "downtown", "village", "shop"),
    "water": ("sea", "beach", "lake", "river", "harbor", "harbour", "ocean", "pond", "shore", "boat"),
    "mountains": ("mountain", "hill", "valley", "cliff", "peak"),
    "room": ("room", "kitchen", "interior", "house", "office", "inside", "bedroom", "library", "classroom", "cafe"),
    "road": ("road", "path", "bridge", "track"),
    "market": ("market", "stall", "fair", "bazaar"),
}


def scene_props(text: str) -> list[str]:
    # Words match at their start ("trees", "hills"), never inside another word ("street" has no tree).
    found = set(re.findall(r"[a-z]+", text.lower()))
    return [prop for prop, words in _PROP_WORDS.items() if any(f.startswith(w) for w in words for f in found)]


def draw_scene(d: ImageDraw.ImageDraw, w: int, h: int, text: str, palette: list[RGB], sky: RGB,
               ground: RGB) -> float:
    """Sky, ground and props for the shot; returns the horizon's y. Props depend on the shot, not the seed."""
    rnd = Rand("scene", text)
    props = scene_props(text)
    others = [c for c in palette if c not in (sky, ground)] or [darken(ground, 0.7), darken(sky, 0.8)]

    def pick(k: int) -> RGB:
        return others[k % len(others)]

    if "room" in props:
        floor_y = h * rnd.u(0.6, 0.7)
        d.rectangle([0, 0, w, round(floor_y)], fill=sky)
        d.rectangle([0, round(floor_y), w, h], fill=ground)
        wx = w * rnd.u(0.1, 0.6)
        d.rectangle([_pt(wx, h * 0.12), _pt(wx + w * 0.22, h * 0.4)], fill=pick(0))
        d.rectangle([_pt(wx + w * 0.015, h * 0.14), _pt(wx + w * 0.205, h * 0.38)], fill=darken(pick(1), 1.0))
        d.line([_pt(wx + w * 0.11, h * 0.14), _pt(wx + w * 0.11, h * 0.38)], fill=pick(0), width=max(1, w // 200))
        tx = w * rnd.u(0.05, 0.75)
        d.rectangle([_pt(tx, floor_y - h * 0.14), _pt(tx + w * 0.2, floor_y - h * 0.11)], fill=pick(2))
        for lx in (tx + w * 0.02, tx + w * 0.17):
            d.rectangle([_pt(lx, floor_y - h * 0.11), _pt(lx + w * 0.012, floor_y + h * 0.05)], fill=pick(2))
        return floor_y

    horizon = h * rnd.u(0.5, 0.66)
    d.rectangle([0, 0, w, h], fill=sky)
    if "mountains" in props or not props:
        # A shot with no recognised words still gets its own skyline, so shots differ at a glance.
        n = 2 + rnd.i(3)
        for k in range(n):
            px, ph = w * rnd.u(0.0, 1.0), h * rnd.u(0.2, 0.38 if props else 0.25)
            half = w * rnd.u(0.15, 0.3)
            _poly(d, [(px - half, horizon), (px, horizon - ph), (px + half, horizon)], pick(k))
            if props:  # snowy caps on real mountains
                cap_y = horizon - ph * 0.78
                _poly(d, [(px - half * 0.22, cap_y), (px, horizon - ph), (px + half * 0.22, cap_y)], (245, 245, 245))
    if "city" in props:
        x = -w * rnd.u(0.0, 0.05)
        k = 0
        while x < w:
            bw_, bh = w * rnd.u(0.07, 0.14), h * rnd.u(0.15, 0.4)
            colour = pick(k)
            d.rectangle([_pt(x, horizon - bh), _pt(x + bw_, horizon)], fill=colour)
            win = darken(colour, 0.6) if sum(colour) > 300 else (250, 230, 150)
            step = max(4.0, w * 0.025)
            wy = horizon - bh + step * 0.6
            while wy < horizon - step:
                wx = x + step * 0.5
                while wx < x + bw_ - step * 0.6:
                    d.rectangle([_pt(wx, wy), _pt(wx + step * 0.4, wy + step * 0.5)], fill=win)
                    wx += step
                wy += step
            x += bw_ + w * rnd.u(0.0, 0.02)
            k += 1
    d.rectangle([0, round(horizon), w, h], fill=ground)
    if "water" in props:
        bluest = max(others, key=lambda c: c[2] - c[0])
        water = bluest if bluest[2] - bluest[0] >= 20 else (70, 130, 180)
        top = horizon
        d.rectangle([0, round(top), w, round(top + (h - top) * 0.35)], fill=water)
        for k in range(8):
            y = top + (h - top) * 0.35 * (k + 0.5) / 8
            x0 = w * rnd.u(0.0, 0.8)
            d.line([_pt(x0, y), _pt(x0 + w * 0.12, y)], fill=darken(water, 1.25 if sum(water) < 500 else 0.8),
                   width=max(1, h // 150))
    if "road" in props:
        _poly(d, [(w * 0.42, horizon), (w * 0.58, horizon), (w * 0.85, h), (w * 0.15, h)], darken(ground, 0.75))
    if "trees" in props:
        n = 3 + rnd.i(4)
        for k in range(n):
            tx, th = w * (k + rnd.u(0.1, 0.9)) / n, h * rnd.u(0.22, 0.35)
            base = horizon + h * rnd.u(0.0, 0.04)
            d.rectangle([_pt(tx - w * 0.008, base - th * 0.45), _pt(tx + w * 0.008, base)], fill=(100, 70, 45))
            _ellipse(d, tx, base - th * 0.65, th * 0.28, th * 0.35, pick(k + 1))
    if "market" in props:
        for k in range(3):
            sx = w * (0.08 + 0.32 * k)
            d.rectangle([_pt(sx, horizon - h * 0.12), _pt(sx + w * 0.2, horizon + h * 0.02)], fill=darken(pick(k), 0.8))
            for j in range(5):
                colour = pick(k) if j % 2 else (245, 245, 240)
                d.rectangle([_pt(sx + w * 0.04 * j, horizon - h * 0.18),
                             _pt(sx + w * 0.04 * (j + 1), horizon - h * 0.12)], fill=colour)
    return horizon
