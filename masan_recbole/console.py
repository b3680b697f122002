"""What a run prints on the console: its progress and its results, not its inventory.

RecBole logs the whole config, the dataset, the model and the environment table before and
after training, about 170 lines that bury the epoch lines on a terminal. The patch
``quiet_console`` keeps all of it in the log file and filters it from the console handler;
:func:`results_table` is the final table ``run_recbole.py`` prints.
"""

import logging

from masan_recbole.protocol import SUFFIX

# Messages whose text starts so are inventories (the log file keeps them).
INVENTORY_PREFIXES = ("The running environment", "\x1b[1;34mFLOPs", "FLOPs", "\x1b[1;34mvalid result",
                      "valid result")


class ConsoleInventoryFilter(logging.Filter):
    """Drops records that dump an object (config, dataset, model, sys.argv) or a table."""

    def filter(self, record):
        if not isinstance(record.msg, str):
            return False  # RecBole logs the Config, Dataset, model and argv objects themselves
        return not record.msg.lstrip().startswith(INVENTORY_PREFIXES)


def quiet_console_handlers(original_init_logger, config):
    """RecBole's ``init_logger``, then the inventory filter on its console handler."""
    original_init_logger(config)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(
                isinstance(f, ConsoleInventoryFilter) for f in handler.filters):
            handler.addFilter(ConsoleInventoryFilter())


def results_table(result):
    """``run_recbole``'s result as a small table: one row per metric, one column per k (and per k
    under the papers' protocol, ``eval_exclude_history: both``)."""
    rows, columns = {}, []
    for key, value in (result.get("test_result") or {}).items():
        name, _, k = key.partition("@")
        k, excluded, _ = k.partition(SUFFIX)
        column = ("@" + k if k else "") + (" excl." if excluded else "")
        rows.setdefault(name, {})[column] = float(value)
        if column not in columns:
            columns.append(column)
    width = max([9] + [len(c) + 2 for c in columns])
    lines = [f"test result (model of the best validation score, {float(result['best_valid_score']):.4f}):",
             f"  {'metric':<10}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, values in rows.items():
        lines.append(f"  {name:<10}" + "".join(f"{values[c]:>{width}.4f}" if c in values else " " * width
                                             for c in columns))
    if any(c.endswith(" excl.") for c in columns):
        lines.append("  (excl.: the user's earlier items scored 0 before ranking, eval_exclude_history)")
    return "\n".join(lines)
