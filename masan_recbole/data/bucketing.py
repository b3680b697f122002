"""Length bucketing: batches of sequences of similar length, each cut to its longest.

RecBole pads every sequence to L = ``MAX_ITEM_LIST_LENGTH`` and batches them at random,
so a batch costs L positions per sequence however short its sequences are. With
``length_bucketing: true`` (sequential models only; others ignore the key):

* training: the samples are sorted by length, ties broken at random, and cut into
  batches of ``train_batch_size``; the batches are drawn in a random order. Both draws
  come from the loader's own ``generator`` (RecBole seeds it from ``seed``; the exact
  resume saves and restores it), so a run is reproducible and resumes exactly, and every
  epoch has a new order. Every sample appears once per epoch. The one short batch (when
  the batch size does not divide the sample count) is cut at a random place of the sorted
  order and comes last, as RecBole's short batch does: torch's ``DataLoader`` cuts the
  flat index list every ``batch_size``.
* full-sort evaluation (sequential models: one row per user or session): the rows are
  sorted by length (stable) and batched in that fixed order. Each row is scored on its
  own and the metrics are averages over rows, so the order changes no metric; code that
  reads the test batches itself sees the shortest sequences first.
* every batch's sequence fields (the item list, every other ``<field>_list`` beside its
  ``<field>``, the all-position targets) are cut to the batch's longest sequence.
* sampled evaluation (``mode: uniNNN``/``popNNN``, RecBole's ``NegSampleEvalDataLoader``)
  stays RecBole's: padded, in its own order.

A model may run on cut batches only if its scores do not depend on the padding after a
sequence: :meth:`~masan_recbole.model.base.ItemScoringRecommender.padding_dependence`
returns None. Otherwise (ASRec; MASAN with ``attn_padding_mask: false``; any model that
does not declare it, such as RecBole's own) :func:`check_model` refuses before training:
the patch ``length_bucketing`` calls it when RecBole's ``AbstractTrainer`` is built, the
first place that holds both the config and the model.

Multi-process training (DDP). RecBole gives each of the W ranks a ``DistributedSampler``
and a batch of ``train_batch_size // W``. Here every rank computes the same global order
(the loader generators are seeded with ``seed`` alike on every rank and drawn from
alike), cuts it into groups of W batches and deals each group out, rank r taking the
group's r-th, (r+W)-th, ... samples: in each step all ranks hold similar lengths, so no
rank waits long for another. A last group that is not a multiple of W is padded with
repeats of its own samples (at most W-1 per epoch, as ``DistributedSampler`` pads), so
every rank runs the same number of steps. Evaluation is dealt out the same way.
"""

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.utils import ModelType

from masan_recbole.fields import targets_field


def enabled(config):
    """Whether ``config`` asks for length bucketing and its model reads sequences."""
    return bool(config["length_bucketing"]) and config["MODEL_TYPE"] == ModelType.SEQUENTIAL


def bucket_batches(lengths, batch_size, generator=None, shuffle=False, rank=0, world_size=1):
    """Rank ``rank``'s batches of one epoch (index arrays, in order) over samples of ``lengths``.

    Sorted by length (``shuffle``: ties at random, groups in random order, all drawn from
    ``generator``); groups of ``batch_size * world_size`` consecutive samples, each dealt
    out to the ranks (see the module doc). Every batch holds ``batch_size`` samples but
    the last, which holds at most that many."""
    lengths = np.asarray(lengths)
    n, group = len(lengths), batch_size * world_size
    if shuffle:
        perm = torch.randperm(n, generator=generator).numpy()
        order = perm[np.argsort(lengths[perm], kind="stable")]
    else:
        order = np.argsort(lengths, kind="stable")
    n_full, rest = divmod(n, group)
    sizes = [group] * n_full
    short_at = n_full  # where the short group is cut from: the long end, or at random
    if rest:
        if shuffle:
            short_at = int(torch.randint(n_full + 1, (1,), generator=generator))
        sizes.insert(short_at, rest)
    bounds = np.cumsum([0, *sizes])
    groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    short = groups.pop(short_at) if rest else None
    if shuffle:
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    if short is not None:
        if len(short) % world_size:
            short = np.concatenate([short, np.resize(short, world_size - len(short) % world_size)])
        groups.append(short)
    return [g[rank::world_size] for g in groups]


class LengthBucketSampler(torch.utils.data.Sampler):
    """This rank's sample indices, batch after batch (:func:`bucket_batches`); the
    ``DataLoader`` cuts them every ``batch_size``. A new order each pass when ``shuffle``."""

    def __init__(self, lengths, batch_size, generator=None, shuffle=False, rank=0, world_size=1):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.generator, self.shuffle = batch_size, generator, shuffle
        self.rank, self.world_size = rank, world_size

    def batches(self):
        return bucket_batches(self.lengths, self.batch_size, self.generator, self.shuffle,
                              self.rank, self.world_size)

    def __iter__(self):
        for batch in self.batches():
            yield from batch.tolist()

    def __len__(self):
        n_full, rest = divmod(len(self.lengths), self.batch_size * self.world_size)
        return n_full * self.batch_size + -(-rest // self.world_size)

    def set_epoch(self, epoch):
        """Called by RecBole's trainer under DDP for its ``DistributedSampler``; nothing to
        do: the order comes from the loader's generator, which advances every epoch."""


class LengthBucketedIndices(torch.utils.data.DataLoader):
    """Sits between RecBole's ``AbstractDataLoader`` and torch's ``DataLoader`` in the
    bucketed loaders' MRO: RecBole's constructor asks torch for shuffled (or, under DDP,
    ``DistributedSampler``) indices; this hands torch a :class:`LengthBucketSampler` over
    the same indices instead, with the DDP rank and world size of RecBole's sampler."""

    def __init__(self, *args, sampler=None, shuffle=False, generator=None, **kwargs):
        rank, world_size = (sampler.rank, sampler.num_replicas) if sampler is not None else (0, 1)
        lengths = self._dataset.inter_feat[self.config["ITEM_LIST_LENGTH_FIELD"]].numpy()
        bucket_sampler = LengthBucketSampler(lengths, kwargs["batch_size"], generator,
                                             shuffle=self.shuffle, rank=rank, world_size=world_size)
        super().__init__(*args, sampler=bucket_sampler, shuffle=False, generator=generator, **kwargs)


def sequence_fields(interaction, config):
    """The [N,L,...] fields of a batch that follow the item positions."""
    suffix, columns = config["LIST_SUFFIX"], set(interaction.columns)
    item_list, targets = config["ITEM_ID_FIELD"] + suffix, targets_field(config)
    return [
        f for f in interaction.columns
        if f in (item_list, targets) or (f.endswith(suffix) and f[: -len(suffix)] in columns)
    ]


def trim(interaction, config):
    """``interaction`` with its sequence fields cut to its longest sequence (padding is on the right)."""
    lengths = interaction[config["ITEM_LIST_LENGTH_FIELD"]]
    if len(lengths) == 0:
        return interaction
    longest = max(int(lengths.max()), 1)
    for field in sequence_fields(interaction, config):
        values = interaction[field]
        if values.dim() >= 2 and values.size(1) > longest:
            interaction.interaction[field] = values[:, :longest].contiguous()
    return interaction


class BucketedTrainDataLoader(TrainDataLoader, LengthBucketedIndices):
    """RecBole's training loader over length buckets, each batch cut to its longest sequence."""

    def collate_fn(self, index):
        return trim(super().collate_fn(index), self.config)


class BucketedFullSortEvalDataLoader(FullSortEvalDataLoader, LengthBucketedIndices):
    """RecBole's full-sort loader (sequential models) in length order, each batch cut to its longest."""

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        return trim(interaction, self.config), history_index, positive_u, positive_i


BUCKETED = {TrainDataLoader: BucketedTrainDataLoader, FullSortEvalDataLoader: BucketedFullSortEvalDataLoader}


def get_dataloader(original, config, phase):
    """RecBole's ``get_dataloader``; with ``length_bucketing`` the bucketed training and
    full-sort loaders of a sequential model instead of RecBole's."""
    loader = original(config, phase)
    return BUCKETED.get(loader, loader) if enabled(config) else loader


# RecBole's own models whose scores do not depend on the padding after a sequence (checked by
# tests/test_bucketing.py): SASRec's mask hides padded keys from every query (-10000 before the
# softmax, an exact zero after it), its positions count from the first item and it reads the last one.
PADDING_FREE_BUILTINS = {"recbole.model.sequential_recommender.sasrec.SASRec"}


def check_model(config, model):
    """Refuse ``length_bucketing`` for a model whose scores depend on the padding after a sequence."""
    if not enabled(config):
        return
    name = config["model"]
    declared = getattr(model, "padding_dependence", None)
    if declared is not None:
        reason = declared()
    elif type(model).__module__ + "." + type(model).__qualname__ in PADDING_FREE_BUILTINS:
        reason = None
    else:
        reason = "it does not declare that they do not (it has no padding_dependence())"
    if reason:
        source = "" if "length_bucketing" in config.external_config_dict else (
            f" (length_bucketing: true is {name}'s default, from the plugin's config files)")
        raise ValueError(
            f"length_bucketing: true cuts every batch to its longest sequence, which needs a model whose "
            f"scores do not depend on the padding after a sequence; {name}'s do: {reason}. "
            f"Set length_bucketing: false for {name} (--length_bucketing=false){source}."
        )


def refuse_padding_dependent_models(original_init, trainer, config, model, *args, **kwargs):
    """RecBole's ``AbstractTrainer.__init__``, after :func:`check_model`."""
    check_model(config, model)
    original_init(trainer, config, model, *args, **kwargs)
