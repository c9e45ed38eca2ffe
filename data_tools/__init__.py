"""vidgan's data tools: raw videos → uint8 clips on disk (`vidgan prepare`), and back as a Dataset;
one video or image read as `prepare` makes frames (`read_video`, `read_image`: data_tools.read).

Importing this package loads neither torch nor a decoder; `ClipDataset` pulls in torch on first use.
"""

from data_tools.prepare import PrepareError, PrepareOptions, default_out, prepare
from data_tools.summary import Summary

_READ = ("Geometry", "ReadError", "open_image", "read_image", "read_video", "resize_mask")

__all__ = ["ClipDataset", "PrepareError", "PrepareOptions", "Summary", "default_out", "prepare", *_READ]


def __getattr__(name: str):
    if name == "ClipDataset":
        from data_tools.dataset import ClipDataset

        return ClipDataset
    if name in _READ:
        from data_tools import read

        return getattr(read, name)
    raise AttributeError(f"module 'data_tools' has no attribute {name!r}")
