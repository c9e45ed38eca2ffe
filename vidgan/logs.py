"""Scalars and sample videos of a run: a CSV file, and TensorBoard through Accelerate's tracker."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_write_text

COLUMNS = ["kimg", "clips", "step", "loss_d", "loss_g", "d_real", "d_fake", "clips_per_s", "seconds"]


class MetricsCSV:
    """`RUN/logs/metrics.csv`, one row per log interval; each row goes out in one write, so a killed
    run leaves whole rows only. A resumed run first drops the rows past its checkpoint."""

    def __init__(self, path: Path, resume_clips: int | None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_clips is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["clips"]) <= resume_clips]
            self._rewrite(rows)
        else:
            self._rewrite([])

    def _rewrite(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue(), durable=False)

    def append(self, values: dict) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, COLUMNS, lineterminator="\n", extrasaction="ignore").writerow(values)
        with open(self.path, "a") as f:
            f.write(buf.getvalue())


def gif_bytes(frames: np.ndarray, fps: int) -> bytes:
    """uint8 `[T, H, W, 3]` → an animated GIF, the encoding TensorBoard shows as a video."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / fps)), loop=0)
    return buf.getvalue()


def log_video(writer, tag: str, frames: np.ndarray, fps: int, step: int) -> None:
    """Add uint8 `[T, H, W, 3]` frames to a TensorBoard `SummaryWriter` as an animated image."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    t, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
