"""The plugin's models, registered with RecBole under their names."""

from masan_recbole.model.asrec import ASRec
from masan_recbole.model.masan import MASAN
from masan_recbole.model.sasrec import SASRec
from masan_recbole.model.srsan import SRSAN
from masan_recbole.registry import register_model

register_model(ASRec)
register_model(MASAN)
register_model(SASRec)
register_model(SRSAN, name="SR-SAN", aliases=("SRSAN",))

__all__ = ["ASRec", "MASAN", "SASRec", "SRSAN"]
