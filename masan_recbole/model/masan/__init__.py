"""MASAN and the layers only it uses: item-to-interest attention and adaptive entmax."""

from masan_recbole.model.masan.model import MASAN

__all__ = ["MASAN"]
