"""Names of the interaction fields that the data layer writes and the models read."""


def targets_field(config):
    """Name of the [B,L] field of all-position batches: the next item at every position, 0 = no loss."""
    return config["ITEM_ID_FIELD"] + "_targets"
