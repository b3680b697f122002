"""Frequency-domain layers of ASRec: Fourier smoothing (FSM) and the adaptive filter (AHFF).

Both work along the sequence axis of hidden states [B,L,d]. The FSM is the reference's
FFT convolution computed as a [L,L] matrix product (same sum, faster); the AHFF keeps
real-FFT bins, with a hand-written backward pass (the filter is its own adjoint).
"""

import math

import torch
from scipy.fft import next_fast_len
from torch import nn
from torch.autograd.function import once_differentiable


class FourierSmoothing(nn.Module):
    """Learnable causal exponential smoothing (ASRec's FSM).

    With a = σ(w) (one learned scalar) and c = 1/√F::

        S_t   = c · Σ_{τ≤t} (1−a) a^{t−τ} X_τ
        Out_t = a^{t+1} · v₀ + S_t ⊙ v₁
        FSM(X) = A · Out + (1−A) · X

    The reference computes S as an FFT convolution zero-padded to F, the 5-smooth
    length ≥ 2L−1 (100 for L = 50, 400 for L = 200), which makes it a linear, causal
    convolution; the factor c is what its 'ortho'-normalised FFTs leave behind, kept
    so trained weights transfer. Here S is the same sum written as one product with
    the lower-triangular [L,L] Toeplitz matrix c(1−a)a^{t−τ}: equal to the FFT
    result up to float rounding (as close to the exact sum), and faster on a CPU, where
    the padded FFTs' backward dominated (docs/models.md).
    A (``strength``) is fixed; A = 0 returns X unchanged.
    """

    def __init__(self, hidden_size, strength):
        super().__init__()
        self.strength = strength
        self.smoothing_weight = nn.Parameter(torch.randn(1))  # w, a = σ(w)
        self.v0 = nn.Parameter(torch.empty(hidden_size))
        self.v1 = nn.Parameter(torch.empty(hidden_size))
        nn.init.trunc_normal_(self.v0, std=0.02)
        nn.init.trunc_normal_(self.v1, std=0.02)

    @staticmethod
    def fft_length(length):
        # real=True: lengths with factors 2, 3, 5 only, as scipy.fftpack's next_fast_len
        # that the reference calls (scipy.fft's complex default would allow 7 and 11).
        return next_fast_len(2 * length - 1, real=True)

    def smoothing_factor(self):
        """a = σ(w), the decay of the moving average (a scalar tensor)."""
        return torch.sigmoid(self.smoothing_weight)

    def smoothing_matrix(self, length, dtype=torch.float32, device=None):
        """[L,L] lower-triangular c(1−a)a^{t−τ} (row t, column τ ≤ t), differentiable in w."""
        a = self.smoothing_factor().to(dtype)
        positions = torch.arange(length, device=device, dtype=dtype)
        lags = positions[:, None] - positions[None, :]  # t − τ
        decay = (1 - a) * a ** lags.clamp(min=0)
        return torch.where(lags >= 0, decay, 0.0) / math.sqrt(self.fft_length(length))

    def forward(self, x):  # [B,L,d] -> [B,L,d]
        length = x.size(1)
        # At least float32 whatever the input precision (autocast would run the product in bf16).
        with torch.autocast(x.device.type, enabled=False):
            x32 = at_least_float32(x)
            a = self.smoothing_factor().to(x32.dtype)
            smoothed = torch.matmul(self.smoothing_matrix(length, x32.dtype, x.device), x32)  # [B,L,d]
            lags = torch.arange(length, device=x.device, dtype=x32.dtype)
            out = (a ** (lags + 1))[:, None] * self.v0 + smoothed * self.v1
        return self.strength * out.to(x.dtype) + (1 - self.strength) * x


def at_least_float32(x):
    """x in float32, or as it is if it is already float32 or wider (float64 for reference checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _MaskedSpectrum(torch.autograd.Function):
    """Re iFFT(spectrum ⊙ keep) along dim 1, where ``spectrum`` = rFFT(y): forward exactly
    as ``torch.fft.irfft``; backward without autograd's FFT derivatives (whose backward
    of ``rfft`` goes through a padded complex FFT and several copies, most of the AHFF's
    cost). The map y -> Re iFFT(rFFT(y) ⊙ keep) is a real circulant matrix with an even
    kernel, hence symmetric: its adjoint is itself, so the gradient is the same filter
    applied to the incoming gradient. ``keep`` passes no gradient (a comparison)."""

    @staticmethod
    def forward(ctx, y, spectrum, keep):  # y [B,L,d], spectrum [B,L//2+1,d], keep [B,L//2+1] bool
        ctx.save_for_backward(keep)
        return torch.fft.irfft(spectrum * keep[..., None], n=y.size(1), dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        length = grad.size(1)
        grad_y = torch.fft.irfft(torch.fft.rfft(grad, dim=1) * keep[..., None], n=length, dim=1)
        return grad_y, None, None


class AdaptiveHighFrequencyFilter(nn.Module):
    """Keep only the high-energy frequencies of Y along the sequence (ASRec's AHFF)::

        e_f  = Σ_c |FFT(Y)_{f,c}|²           (f = 0..L−1, energy of frequency f)
        ê_f  = e_f / (median_f e + 1e−6)
        τ    = quantile_θ(ê)                 (per sequence, or over the whole batch)
        AHFF(Y) = LN(Dropout(Re iFFT(FFT(Y) · [ê > τ])) + Y)

    ``threshold_scope``: ``sequence`` takes τ over each sequence's own L energies, so
    a sequence's output does not depend on the rest of the batch; ``batch`` takes one
    τ over all B·L energies, as the reference does (scores then change with the batch).
    θ (``quantile``) is a constant: the comparison ê > τ passes no gradient to it.

    Frequencies f and L−f of a real signal have the same energy; it is computed once
    (real FFT) and mirrored, so both are kept or dropped together and the result is
    real. (The reference's complex FFT may keep one of the pair by rounding.)
    """

    THRESHOLD_SCOPES = ("sequence", "batch")

    def __init__(self, hidden_size, quantile, dropout, layer_norm_eps, threshold_scope="sequence"):
        super().__init__()
        if threshold_scope not in self.THRESHOLD_SCOPES:
            raise ValueError(f"ahff_threshold_scope '{threshold_scope}' is not one of {self.THRESHOLD_SCOPES}")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"ahff_quantile must lie in [0, 1], got {quantile}")
        self.quantile = quantile
        self.threshold_scope = threshold_scope
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def keep_mask(self, energy, length):
        """Which of the L//2+1 real-FFT bins to keep, from their energies [B,L//2+1] -> bool."""
        mirrored = energy[:, 1:length - length // 2].flip(1)  # bins L−1 .. L//2+1
        full = torch.cat([energy, mirrored], dim=1)  # [B,L], energy of every frequency
        normalized = full / (full.median(dim=1, keepdim=True).values + 1e-6)
        if self.threshold_scope == "sequence":
            threshold = torch.quantile(normalized, self.quantile, dim=1, keepdim=True)  # [B,1]
        else:
            threshold = torch.quantile(normalized.flatten(), self.quantile)
        return normalized[:, :energy.size(1)] > threshold

    def dominant_frequencies(self, y):  # [B,L,d] -> [B,L,d], Y with the weak frequencies removed
        length = y.size(1)
        y32 = at_least_float32(y)
        with torch.no_grad():  # the filter is linear in Y; the mask passes no gradient
            spectrum = torch.fft.rfft(y32, dim=1)  # [B,L//2+1,d]
            keep = self.keep_mask(spectrum.abs().square().sum(-1), length)
        return _MaskedSpectrum.apply(y32, spectrum, keep).to(y.dtype)

    def forward(self, y):
        return self.LayerNorm(self.dropout(self.dominant_frequencies(y)) + y)
