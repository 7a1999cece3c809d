"""The evaluation plot, drawn with cv2 (no matplotlib dependency): recall vs K and vs time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cv2
import numpy as np

W, H = 560, 420  # one panel
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 20, 50, 55
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, GREY = (30, 30, 30), (200, 200, 200)
COLOURS = {"topk": (200, 90, 20), "tiles": (40, 40, 200), "global": (40, 150, 40)}  # BGR


class _Axes:
    """Maps data coordinates into one panel's pixel box."""

    def __init__(self, img: np.ndarray, x0: int, xlim: tuple[float, float], log_x: bool) -> None:
        self.img, self.x0, self.log_x = img, x0, log_x
        self.xlim = tuple(np.log10(v) for v in xlim) if log_x else xlim
        self.ylim = (0.0, 1.0)

    def px(self, x: float, y: float) -> tuple[int, int]:
        xv = np.log10(max(x, 1e-9)) if self.log_x else x
        fx = (xv - self.xlim[0]) / max(1e-9, self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        px = self.x0 + MARGIN_L + fx * (W - MARGIN_L - MARGIN_R)
        py = MARGIN_T + (1 - fy) * (H - MARGIN_T - MARGIN_B)
        return round(px), round(py)

    def frame(self, title: str, xlabel: str, xticks: list[float]) -> None:
        img = self.img
        for yt in np.linspace(0, 1, 6):
            p1, p2 = self.px(self._xmin(), yt), self.px(self._xmax(), yt)
            cv2.line(img, p1, p2, GREY, 1)
            cv2.putText(img, f"{yt:.1f}", (p1[0] - 35, p1[1] + 4), FONT, 0.4, BLACK, 1)
        for xt in xticks:
            p = self.px(xt, 0)
            cv2.line(img, p, (p[0], p[1] + 5), BLACK, 1)
            label = f"{xt:g}"
            cv2.putText(img, label, (p[0] - 4 * len(label), p[1] + 18), FONT, 0.4, BLACK, 1)
        o, xe, yt_ = self.px(self._xmin(), 0), self.px(self._xmax(), 0), self.px(self._xmin(), 1)
        cv2.line(img, o, xe, BLACK, 1)
        cv2.line(img, o, yt_, BLACK, 1)
        cv2.putText(img, title, (self.x0 + MARGIN_L, 20), FONT, 0.55, BLACK, 1, cv2.LINE_AA)
        cv2.putText(img, xlabel, (self.x0 + W // 2 - 60, H - 12), FONT, 0.45, BLACK, 1)
        cv2.putText(img, "recall@0.5", (self.x0 + 5, MARGIN_T - 8), FONT, 0.4, BLACK, 1)

    def _xmin(self) -> float:
        return 10 ** self.xlim[0] if self.log_x else self.xlim[0]

    def _xmax(self) -> float:
        return 10 ** self.xlim[1] if self.log_x else self.xlim[1]


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Two panels: recall@0.5 vs K (top-K, with tiles/global as reference lines) and recall vs
    mean ms per frame for every mode (the speed/accuracy trade-off)."""
    modes = report["modes"]
    img = np.full((H, 2 * W, 3), 255, np.uint8)
    # left: recall vs K
    topk = sorted(
        ((m["top_k"], m["recall50"]) for m in modes.values() if m["mode"] == "topk"),
        key=lambda t: t[0],
    )
    ks = [k for k, _ in topk] or [1, 8]
    ax = _Axes(img, 0, (0.5, max(ks) + 0.5), log_x=False)
    ax.frame("recall vs K (top-K crops)", "K (crops per frame)", [float(k) for k in ks])
    for name, m in modes.items():
        if m["mode"] == "topk":
            continue
        y = m["recall50"]
        p1, p2 = ax.px(0.5, y), ax.px(max(ks) + 0.5, y)
        colour = COLOURS.get(m["mode"], BLACK)
        for x in range(p1[0], p2[0], 12):  # dashed
            cv2.line(img, (x, p1[1]), (min(x + 6, p2[0]), p1[1]), colour, 1)
        cv2.putText(img, name, (p2[0] - 110, p1[1] - 4), FONT, 0.4, colour, 1, cv2.LINE_AA)
    pts = [ax.px(k, r) for k, r in topk]
    for a, b in itertools.pairwise(pts):
        cv2.line(img, a, b, COLOURS["topk"], 2, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, p, 4, COLOURS["topk"], -1, cv2.LINE_AA)
    # right: recall vs time
    ms = [m["ms_per_frame"] for m in modes.values()]
    lo, hi = max(1.0, min(ms) / 1.5), max(ms) * 2.5  # room for the labels on the right
    ax2 = _Axes(img, W, (lo, hi), log_x=True)
    ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if lo <= t <= hi]
    ax2.frame("recall vs time per frame", "ms per frame (log)", [float(t) for t in ticks])
    for name, m in modes.items():
        p = ax2.px(m["ms_per_frame"], m["recall50"])
        colour = COLOURS.get(m["mode"], BLACK)
        cv2.circle(img, p, 5, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (p[0] + 7, p[1] + 4), FONT, 0.4, colour, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write plot {path}")
    return path
