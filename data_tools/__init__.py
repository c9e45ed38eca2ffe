"""vidgan's data tools: raw videos → uint8 clips on disk (`vidgan prepare`), and back as a Dataset.

Importing this package loads neither torch nor a decoder; `ClipDataset` pulls in torch on first use.
"""

from data_tools.prepare import PrepareError, PrepareOptions, default_out, prepare
from data_tools.summary import Summary

__all__ = ["ClipDataset", "PrepareError", "PrepareOptions", "Summary", "default_out", "prepare"]


def __getattr__(name: str):
    if name == "ClipDataset":
        from data_tools.dataset import ClipDataset

        return ClipDataset
    raise AttributeError(f"module 'data_tools' has no attribute {name!r}")
