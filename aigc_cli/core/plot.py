"""Line charts as PNG bytes, drawn with Pillow (already a dependency; matplotlib would add tens of
megabytes to the install for a few polylines). Used by ``aigc runs plot`` and the curves.png that
training writes at each epoch. Light: Pillow is imported when a chart is drawn."""

from __future__ import annotations

import io
import math

# Distinct on white, in order: one per series (run).
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))

Series = dict[str, list[tuple[float, float]]]  # series label -> [(x, y), ...]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _panel(draw, box: tuple[int, int, int, int], title: str, series: Series, xlabel: str) -> None:
    """One chart in ``box`` (left, top, right, bottom): title, frame, min/max ticks, polylines."""
    left, top, right, bottom = box
    draw.text((left + 4, top + 2), title, fill=(0, 0, 0))
    plot = (left + 58, top + 18, right - 8, bottom - 22)  # room for tick labels left and below
    draw.rectangle(plot, outline=(90, 90, 90))
    points = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(y)]
    if not points:
        draw.text((plot[0] + 6, plot[1] + 6), "no values", fill=(120, 120, 120))
        return
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def at(x: float, y: float) -> tuple[float, float]:
        return (plot[0] + (x - x0) / (x1 - x0) * (plot[2] - plot[0]),
                plot[3] - (y - y0) / (y1 - y0) * (plot[3] - plot[1]))

    for frac in (0.25, 0.5, 0.75):  # light grid lines
        y = plot[1] + frac * (plot[3] - plot[1])
        draw.line((plot[0] + 1, y, plot[2] - 1, y), fill=(230, 230, 230))
    draw.text((left + 2, plot[1] - 4), _fmt(y1), fill=(60, 60, 60))
    draw.text((left + 2, plot[3] - 10), _fmt(y0), fill=(60, 60, 60))
    draw.text((plot[0], plot[3] + 4), _fmt(x0), fill=(60, 60, 60))
    draw.text((plot[2] - 40, plot[3] + 4), _fmt(x1), fill=(60, 60, 60))
    draw.text(((plot[0] + plot[2]) // 2 - 12, plot[3] + 4), xlabel, fill=(60, 60, 60))
    for i, pts in enumerate(series.values()):
        xy = [at(x, y) for x, y in pts if math.isfinite(y)]
        colour = COLOURS[i % len(COLOURS)]
        if len(xy) == 1:
            x, y = xy[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        elif xy:
            draw.line(xy, fill=colour, width=2)


def line_charts_png(panels: dict[str, Series], labels: list[str], xlabel: str = "step",
                    panel_size: tuple[int, int] = (420, 240), columns: int = 2) -> bytes:
    """PNG bytes: one panel per quantity (``panels``: title -> series), a legend of ``labels``
    (the series' names, one colour each, the same in every panel) along the top."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("nothing to plot")
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    legend = 20
    w, h = panel_size
    image = Image.new("RGB", (columns * w, legend + rows * h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x = 6
    for i, label in enumerate(labels):
        colour = COLOURS[i % len(COLOURS)]
        draw.rectangle((x, 6, x + 10, 14), fill=colour)
        draw.text((x + 14, 4), label, fill=(0, 0, 0))
        x += 24 + int(draw.textlength(label))
    for k, (title, series) in enumerate(panels.items()):
        r, c = divmod(k, columns)
        _panel(draw, (c * w, legend + r * h, (c + 1) * w, legend + (r + 1) * h), title, series, xlabel)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
