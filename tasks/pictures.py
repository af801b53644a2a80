"""Pictures of predictions (Pillow): the input, the answer after each ACT segment, the truth.

A PNG puts the panels of a puzzle side by side, one line per puzzle; a GIF shows the segments
one after another. Cells that changed since the previous panel are outlined in orange; on the
truth panel, the cells the final answer got wrong are outlined in red. Each codec says
how to colour its grid (:meth:`tasks.base.TaskCodec.cells`); layout is here.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.base import Cells
from utils.paths import write_together

PAD = 10  # margin around and between panels
TITLE = 30  # height of a panel's title (two lines: what it shows, the halt confidence)
MAX_CELL, MIN_CELL, PANEL = 28, 6, 240  # cell size: as large as fits a PANEL-pixel panel, within these
LINE = 16  # height of a caption line (domino)
CHAR = 8  # width of a caption character
OUTLINE = (255, 140, 0)  # cells changed since the previous panel
WRONG = (214, 48, 49)  # truth panel: cells where the final answer differs
BACKGROUND, GRID_LINE, INK = (255, 255, 255), (197, 202, 211), (29, 36, 51)


@dataclass
class Panel:
    title: str
    cells: Cells


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def cell_size(cells: Cells) -> int:
    """Pixels per cell for a grid of this shape."""
    h, w = cells.colours.shape[:2]
    return max(MIN_CELL, min(MAX_CELL, PANEL // max(h, w, 1)))


def panel_size(panel: Panel, cell: int) -> tuple:
    """(width, height) of a panel's drawing area, title excluded (but wide enough for it)."""
    cells = panel.cells
    h, w = cells.colours.shape[:2]
    title = max(_font(12).getlength(line) for line in panel.title.split("\n"))
    width, height = max(w * cell, int(title) + 1), h * cell
    if cells.caption:
        width = max(width, CHAR * max(len(line) for line in cells.caption))
        height += LINE * len(cells.caption)
    return width, height


def changed(before: Optional[Cells], after: Cells) -> Optional[np.ndarray]:
    """Cells whose colour or text differs between two grids of the same shape (else None)."""
    if before is None or before.colours.shape != after.colours.shape or after.colours.size == 0:
        return None
    mask = (before.colours != after.colours).any(axis=-1)
    if before.text is not None and after.text is not None:
        mask |= np.array(before.text, dtype=object) != np.array(after.text, dtype=object)
    return mask


def draw_panel(image: Image.Image, x: int, y: int, panel: Panel, cell: int, outline: Optional[np.ndarray],
               outline_colour=OUTLINE) -> None:
    """Draw ``panel`` with its top-left corner (title included) at (x, y)."""
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(panel.title.split("\n")[:2]):
        draw.text((x, y + 1 + 14 * i), line, fill=INK, font=_font(12))
    y += TITLE
    cells = panel.cells
    h, w = cells.colours.shape[:2]
    font = _font(max(8, int(cell * 0.6)))
    for r in range(h):
        for c in range(w):
            box = [x + c * cell, y + r * cell, x + (c + 1) * cell - 1, y + (r + 1) * cell - 1]
            draw.rectangle(box, fill=tuple(int(v) for v in cells.colours[r, c]), outline=GRID_LINE if cell >= 10 else None)
            if cells.text is not None and cells.text[r][c]:
                ink = tuple(int(v) for v in cells.text_colours[r, c]) if cells.text_colours is not None else INK
                draw.text((x + c * cell + cell / 2, y + r * cell + cell / 2), cells.text[r][c], fill=ink, font=font, anchor="mm")
    if cells.boxes is not None and h:
        br, bc = cells.boxes
        for r in range(0, h + 1, br):
            draw.line([x, y + r * cell, x + w * cell, y + r * cell], fill=INK, width=2)
        for c in range(0, w + 1, bc):
            draw.line([x + c * cell, y, x + c * cell, y + h * cell], fill=INK, width=2)
    if outline is not None:
        for r, c in np.argwhere(outline):
            draw.rectangle([x + c * cell, y + r * cell, x + (c + 1) * cell - 1, y + (r + 1) * cell - 1], outline=outline_colour,
                           width=max(1, cell // 8))
    for i, line in enumerate(cells.caption):
        draw.text((x, y + h * cell + i * LINE + 2), line, fill=INK, font=_font(12))


def _line_layout(lines: Sequence[Sequence[Panel]]):
    """Cell size per line of panels, panel sizes, and the canvas size."""
    cells = [min(cell_size(p.cells) for p in panels) for panels in lines]  # one cell size per line
    sizes = [[panel_size(p, c) for p in panels] for panels, c in zip(lines, cells)]
    width = PAD + max(sum(w + PAD for w, _ in s) for s in sizes)
    height = PAD + sum(TITLE + max(h for _, h in s) + PAD for s in sizes)
    return cells, sizes, (width, height)


def render(lines: Sequence[Sequence[Panel]]) -> Image.Image:
    """One image: each line of panels left to right, lines top to bottom; changes outlined."""
    cells, sizes, size = _line_layout(lines)
    image = Image.new("RGB", size, BACKGROUND)
    y = PAD
    for panels, cell, line_sizes in zip(lines, cells, sizes):
        x, previous = PAD, None
        for panel, (w, _) in zip(panels, line_sizes):
            if panel.title == "truth":  # where the final answer is wrong
                draw_panel(image, x, y, panel, cell, changed(previous, panel.cells), WRONG)
            else:
                draw_panel(image, x, y, panel, cell, changed(previous, panel.cells) if panel.title.startswith("step") else None)
            previous = panel.cells
            x += w + PAD
        y += TITLE + max(h for _, h in line_sizes) + PAD
    return image


PICTURE_EXTENSIONS = (".png", ".gif")


def encode_picture(path: str, lines: Sequence[Sequence[Panel]]) -> bytes:
    """``lines`` (one list of panels per puzzle: input, steps..., [truth]) as the PNG or GIF bytes
    ``path``'s extension names.

    The GIF's frame k shows, per puzzle, the input, panel k and the truth; the last frame holds
    longer.
    """
    ext = os.path.splitext(path)[1].lower()
    buffer = io.BytesIO()
    if ext == ".png":
        render(lines).save(buffer, format="PNG", optimize=True)
    elif ext == ".gif":
        frames = gif_frames(lines)
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                       duration=[800] * (len(frames) - 1) + [2500])
    else:
        raise ValueError(f"picture={path}: expected a .png or .gif file name")
    return buffer.getvalue()


def save_picture(path: str, lines: Sequence[Sequence[Panel]]) -> None:
    """Write :func:`encode_picture` to ``path`` (a temporary name renamed: a failure leaves no partial file)."""
    write_together({path: encode_picture(path, lines)})


def gif_frames(lines: Sequence[Sequence[Panel]]) -> List[Image.Image]:
    """Frames of the animation: per puzzle [input, segment k (outlined against k-1), truth?]."""
    steps = max(sum(p.title.startswith("step") for p in panels) for panels in lines)
    frames = []
    for k in range(steps):
        frame_lines = []
        for panels in lines:
            step_panels = [p for p in panels if p.title.startswith("step")]
            others = [p for p in panels if not p.title.startswith("step")]
            shown = step_panels[min(k, len(step_panels) - 1)]
            before = step_panels[k - 1] if 0 < k < len(step_panels) else others[0]
            frame_lines.append((others[0], before, shown, others[1:]))
        frames.append(_gif_frame(frame_lines))
    return frames


def _gif_frame(frame_lines) -> Image.Image:
    lines = [[first, shown, *rest] for first, _before, shown, rest in frame_lines]
    cells, sizes, size = _line_layout(lines)
    image = Image.new("RGB", size, BACKGROUND)
    y = PAD
    for (first, before, shown, rest), cell, line_sizes in zip(frame_lines, cells, sizes):
        x = PAD
        for panel, (w, _) in zip([first, shown, *rest], line_sizes):
            if panel is shown:
                draw_panel(image, x, y, panel, cell, changed(before.cells, panel.cells))
            elif panel.title == "truth":
                draw_panel(image, x, y, panel, cell, changed(shown.cells, panel.cells), WRONG)
            else:
                draw_panel(image, x, y, panel, cell, None)
            x += w + PAD
        y += TITLE + max(h for _, h in line_sizes) + PAD
    return image.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def expected_size(lines: Sequence[Sequence[Panel]]) -> tuple:
    """(width, height) of :func:`render`'s image for these panels."""
    return _line_layout(lines)[2]
