"""The MASAN paper's datasets as RecBole ships them: configs/dataset/{yelp,amazon-books,ml-1m}.yaml
load files with the exact headers of RecBole's conversion code (RUCAIBox/RecSysDatasets,
conversion_tools/src/extended_dataset.py: YELPDataset, AmazonBooksDataset, ML1MDataset), and
their filters and split decide the counts."""

import pytest
from recbole.config import Config
from recbole.data import create_dataset, data_preparation

YELP_HEADER = ("review_id:token", "user_id:token", "business_id:token", "stars:float", "useful:float",
               "funny:float", "cool:float", "date:float")
RATING_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")


def rows(kept_users, kept_items, per_user, low_rated, rare_item_users, light_users, light_per_user):
    """(user, item, value, time): ``kept_users`` users rate items 0..kept_items-1 ``per_user``
    times with 4 (kept); each of them also rates ``low_rated`` items 2 (the value filter drops
    them); ``rare_item_users`` of them rate one more item, too rarely rated to keep; and
    ``light_users`` users with ``light_per_user`` ratings each are too light to keep."""
    out = []
    for u in range(kept_users):
        for k in range(per_user):
            out.append((f"u{u}", f"i{(u + k) % kept_items}", 4, 1_000_000 + u * 1000 + k))
        for k in range(low_rated):
            out.append((f"u{u}", f"low{k}", 2, 1_000_500 + u * 1000 + k))
        if u < rare_item_users:
            out.append((f"u{u}", "rare", 5, 1_000_900 + u * 1000))
    for u in range(light_users):
        for k in range(light_per_user):
            out.append((f"light{u}", f"i{k}", 5, 2_000_000 + u * 1000 + k))
    return out


def write(tmp_path, name, header, lines):
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"{name}.inter").write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, line)) + "\n"
                                                                            for line in lines))


def yelp_lines(data):
    return [(f"r{n}", user, item, value, 0, 1, 0, time) for n, (user, item, value, time) in enumerate(data)]


# name, header, row maker, filters as the YAML states them -> (users, items, interactions) kept
CASES = {
    # stars >= 3, users >= 15, items >= 5
    "yelp": (YELP_HEADER, yelp_lines, dict(kept_users=30, kept_items=20, per_user=16, low_rated=3,
                                            rare_item_users=4, light_users=5, light_per_user=10), (30, 20, 30 * 16)),
    # rating >= 3, users >= 35, items >= 10
    "amazon-books": (RATING_HEADER, list, dict(kept_users=40, kept_items=50, per_user=36, low_rated=5,
                                               rare_item_users=9, light_users=6, light_per_user=30), (40, 50, 40 * 36)),
    # rating >= 3 only: the light users and the rare item stay
    "ml-1m": (RATING_HEADER, list, dict(kept_users=20, kept_items=30, per_user=12, low_rated=4,
                                        rare_item_users=3, light_users=5, light_per_user=6),
              (25, 31, 20 * 12 + 3 + 5 * 6)),
}


@pytest.mark.parametrize("name", CASES)
def test_recboles_own_file_loads_and_is_filtered_as_the_config_says(name, tmp_path):
    header, make, shape, (users, items, interactions) = CASES[name]
    write(tmp_path, name, header, make(rows(**shape)))
    config = Config(model="MASAN", dataset=name, config_dict={"data_path": str(tmp_path), "state": "ERROR",
                                                              "show_progress": False})
    dataset = create_dataset(config)
    # RecBole's counts hold the padding id 0
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (users, items, interactions)
    rating = config["RATING_FIELD"]
    assert dataset.inter_feat[rating].min() >= 3
    train, valid, test = data_preparation(config, dataset)
    # leave-one-out by time: one validation and one test target per user
    assert len(valid.dataset) == len(test.dataset) == users
    # training samples: one per prefix, each user's first item has none
    assert len(train.dataset) == interactions - 3 * users
