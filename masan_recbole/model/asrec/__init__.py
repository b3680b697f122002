"""ASRec and the layers only it uses: Fourier smoothing and hybrid attention."""

from masan_recbole.model.asrec.model import ASRec

__all__ = ["ASRec"]
