#!/usr/bin/env python3
"""Saves the whole screen of $DISPLAY as a PNG (the installed app's window under Xvfb, for scripts/test-app).

    python3 src-tauri/ui-tests/screenshot.py OUT.png      (python3-gi with Gdk 3)

Exits 1 when the screen cannot be read or is one flat colour (nothing drawn).
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gdk", "3.0")
from gi.repository import Gdk  # noqa: E402


def main() -> int:
    root = Gdk.get_default_root_window() if Gdk.init_check(sys.argv) else None
    if root is None:
        print("screenshot: cannot open the display", file=sys.stderr)
        return 1
    pixbuf = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    if pixbuf is None:
        print("screenshot: cannot read the screen", file=sys.stderr)
        return 1
    pixels = pixbuf.get_pixels()
    step = pixbuf.get_n_channels()
    if len({pixels[i:i + 3] for i in range(0, len(pixels), step * 97)}) < 3:
        print("screenshot: the screen is blank", file=sys.stderr)
        return 1
    pixbuf.savev(sys.argv[1], "png", [], [])
    print(f"screenshot: {sys.argv[1]} ({pixbuf.get_width()}x{pixbuf.get_height()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
