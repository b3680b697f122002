"""ASRec's claim in one picture: what the smoothing learned, and which frequencies survive.

    python -m masan_recbole.analysis.asrec_spectrum --checkpoint saved/ASRec-....pth --out spectrum.png

Left: the learned moving-average kernel of the Fourier smoothing, (1−a)·a^j for the
item j steps back, with a = σ(w) and the mixing strength A. Right: the spectrum along
the sequence axis (mean |FFT| over test sequences and hidden units, each curve scaled
to sum 1) of the embeddings, of the smoothed embeddings that enter the hybrid
layers, and of the last hybrid layer's output. Padded positions are zeroed first.
"""

import argparse

import torch

from masan_recbole.analysis import pyplot
from masan_recbole.quick_start import load_data_and_model


def collect_sequences(model, test_data, limit):
    """Up to ``limit`` item sequences [n,L] of the test split, in loader order."""
    seqs = []
    for batch in test_data:
        seqs.append(batch[0][model.ITEM_SEQ])
        if sum(len(s) for s in seqs) >= limit:
            break
    return torch.cat(seqs)[:limit]


def mean_spectrum(states, item_seq):
    """Mean |rFFT| over the sequence axis [L//2+1], scaled to sum 1; padding zeroed."""
    states = states * (item_seq != 0)[..., None]
    magnitude = torch.fft.rfft(states.float(), dim=1).abs().mean(dim=(0, 2))
    return magnitude / magnitude.sum()


@torch.no_grad()
def spectra(model, item_seq):
    model.eval()
    item_seq_len = (item_seq != 0).sum(1)
    embedded = model.embed(item_seq)
    return {
        "embeddings": mean_spectrum(embedded, item_seq),
        "smoothed (input of the hybrid layers)": mean_spectrum(model.fourier_smoothing(embedded), item_seq),
        "output of the hybrid layers": mean_spectrum(model.encode(item_seq, item_seq_len), item_seq),
    }


def plot(model, curves, out, title):
    a = model.fourier_smoothing.smoothing_factor().item()
    strength = model.fourier_smoothing.strength
    lags = torch.arange(model.max_seq_length, dtype=torch.float64)
    kernel = (1 - a) * a**lags
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(lags.numpy(), kernel.numpy(), width=0.8)
    left.set(xlabel="items back (j)", ylabel="weight (1−a)·aʲ",
             title=f"learned smoothing: a = σ(w) = {a:.3f}, A = {strength:g}")
    frequencies = torch.arange(model.max_seq_length // 2 + 1) / model.max_seq_length
    for label, curve in curves.items():
        right.plot(frequencies.numpy(), curve.cpu().numpy(), marker=".", label=label)
    right.set(xlabel="frequency (cycles per position)", ylabel="share of mean |FFT|", yscale="log",
              title="spectrum along the sequence")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an ASRec checkpoint (saved/ASRec-*.pth)")
    parser.add_argument("--out", default="asrec_spectrum.png", help="PNG to write")
    parser.add_argument("--sequences", type=int, default=1024, help="test sequences to average over")
    args = parser.parse_args(argv)
    try:
        pyplot()
    except ImportError as e:
        parser.exit(2, f"error: {e}\n")
    config, model, _, _, _, test_data = load_data_and_model(args.checkpoint)
    if not hasattr(model, "fourier_smoothing"):
        parser.error(f"{args.checkpoint} holds a {config['model']} model, not ASRec")
    item_seq = collect_sequences(model, test_data, args.sequences).to(model.device)
    curves = spectra(model, item_seq)
    plot(model, curves, args.out, f"ASRec on {config['dataset']} ({len(item_seq)} test sequences)")
    print(f"wrote {args.out}: a = {model.fourier_smoothing.smoothing_factor().item():.4f}, "
          f"A = {model.fourier_smoothing.strength:g}")
    return args.out


if __name__ == "__main__":
    main()
