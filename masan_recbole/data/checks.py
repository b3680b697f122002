"""Dataset checks that RecBole leaves to a crash deep inside training or evaluation."""


def prepare_checked(original, config, dataset):
    """RecBole's ``data_preparation`` after checking that the dataset can fill its splits and its
    top-k lists; an empty split otherwise surfaces as torch's "num_samples=0"."""
    name = config["dataset"]
    if len(dataset.inter_feat) == 0:
        raise ValueError(
            f"dataset {name} has no samples left after loading and filtering"
            + (" (a sequential model needs users with at least 2 interactions; 3 for a leave-one-out split)"
               if hasattr(dataset, "item_list_length_field") else "")
            + ": check the filters (user_inter_num_interval, item_inter_num_interval, val_interval) and the data"
        )
    n_items = dataset.item_num - 1  # id 0 is padding
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    if config["topk"] is not None and max(topk) > n_items:
        raise ValueError(f"topk {max(topk)} is more than the {n_items} items of dataset {name}; "
                         f"set topk to at most {n_items}")
    try:
        return original(config, dataset)
    except ValueError as e:
        if "num_samples=0" not in str(e):
            raise
        raise ValueError(
            f"a split of dataset {name} is empty (no training samples): with eval_args "
            f"{config['eval_args']} every user needs more interactions than the split takes "
            "(leave-one-out: at least 3); filter short users out (user_inter_num_interval) or use more data"
        ) from None
