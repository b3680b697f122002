"""Plot what a trained MASAN's entmax learned: the distribution of α and the sparsity of the weights.

    python -m masan_recbole.analysis.masan_attention --checkpoint saved/MASAN-....pth --out alpha.png

Runs :meth:`MASAN.explain` (eval mode) over the test batches and writes one PNG: a
histogram of α per layer (one value per sequence, or per position with
``alpha_scope: query``) and, per layer, the fraction of item-importance weights that
are exactly zero. Only the weights of real items count (padding positions are left
out of the fraction), and α of padding positions is left out too.
"""

import argparse

import torch

from masan_recbole.analysis import pyplot
from masan_recbole.quick_start import load_data_and_model


def attention_summary(model, data, max_batches=None):
    """Per layer: all α values (1-D tensor) and the fraction of exact zeros among real items' weights."""
    model.eval()
    alphas, zeros, counts = None, None, None
    for index, batch in enumerate(data):
        if max_batches is not None and index >= max_batches:
            break
        interaction = batch[0].to(model.device)
        item_seq, item_seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        layers = model.explain(item_seq, item_seq_len)
        valid = torch.arange(item_seq.size(1), device=item_seq.device) < item_seq_len[:, None]  # [B,L]
        if alphas is None:
            alphas, zeros, counts = [[] for _ in layers], [0] * len(layers), [0] * len(layers)
        for i, layer in enumerate(layers):
            alpha = layer["alpha"]  # [B,1] or [B,L]
            alphas[i].append(alpha[valid] if alpha.shape == valid.shape else alpha[:, 0])
            weights = layer["weights"].transpose(1, 2)[valid]  # [positions, h, k]
            zeros[i] += int((weights == 0).sum())
            counts[i] += weights.numel()
    if alphas is None:
        raise ValueError("no batches to analyse")
    return [
        {"alpha": torch.cat(a).cpu(), "zero_fraction": z / c}
        for a, z, c in zip(alphas, zeros, counts)
    ]


def plot_summary(summary, out, title=""):
    plt = pyplot()
    fig, (ax_alpha, ax_zero) = plt.subplots(1, 2, figsize=(10, 4))
    for i, layer in enumerate(summary):
        ax_alpha.hist(layer["alpha"].numpy(), bins=40, range=(1.0, 2.0), alpha=0.6, label=f"layer {i}")
    ax_alpha.set(xlabel="alpha (1 = softmax, 1.5 = entmax15, 2 = sparsemax)", ylabel="count",
                 title="entmax alpha")
    ax_alpha.legend()
    layers = range(len(summary))
    bars = ax_zero.bar(layers, [layer["zero_fraction"] for layer in summary])
    ax_zero.bar_label(bars, fmt="%.3f")
    ax_zero.set(xticks=list(layers), xlabel="layer", ylabel="fraction of exact zeros", ylim=(0, 1),
                title="sparsity of the item-importance weights")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def analyse(checkpoint, out, max_batches=None):
    """Load ``checkpoint``, summarise the test batches, write the PNG to ``out``; returns the summary."""
    config, model, _, _, _, test_data = load_data_and_model(checkpoint)
    if not hasattr(model, "explain"):
        raise ValueError(f"{checkpoint} holds a {config['model']} model; this analysis needs MASAN")
    summary = attention_summary(model, test_data, max_batches)
    plot_summary(summary, out, title=f"{config['model']} on {config['dataset']} ({config['entmax_mode']})")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a MASAN checkpoint (saved/MASAN-*.pth)")
    parser.add_argument("--out", default="masan_attention.png", help="PNG file to write")
    parser.add_argument("--max_batches", type=int, default=None, help="analyse only the first test batches")
    args = parser.parse_args(argv)
    try:
        pyplot()
    except ImportError as e:
        parser.exit(2, f"error: {e}\n")
    summary = analyse(args.checkpoint, args.out, args.max_batches)
    for i, layer in enumerate(summary):
        alpha = layer["alpha"]
        print(f"layer {i}: alpha mean {alpha.mean():.4f} [min {alpha.min():.4f}, max {alpha.max():.4f}], "
              f"exact zeros {layer['zero_fraction']:.4f}")
    print(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
