"""The plugin's models, registered with RecBole under their names."""

from masan_recbole.model.sasrec import SASRec
from masan_recbole.registry import register_model

register_model(SASRec)

__all__ = ["SASRec"]
