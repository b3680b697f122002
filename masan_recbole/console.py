"""What a run prints on the console: its progress and its results, not its inventory.

RecBole logs the whole config, the dataset, the model and the environment table before and
after training, about 170 lines that bury the epoch lines on a terminal. The patch
``quiet_console`` keeps all of it in the log file and filters it from the console handler;
:func:`results_table` is the final table ``run_recbole.py`` prints.
"""

import logging

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
    """``run_recbole``'s result as a small table: one row per metric, one column per k."""
    rows, ks = {}, []
    for key, value in (result.get("test_result") or {}).items():
        name, _, k = key.partition("@")
        rows.setdefault(name, {})[k] = float(value)
        if k not in ks:
            ks.append(k)
    lines = [f"test result (model of the best validation score, {float(result['best_valid_score']):.4f}):",
             f"  {'metric':<10}" + "".join(f"{'@' + k if k else '':>9}" for k in ks)]
    for name, values in rows.items():
        lines.append(f"  {name:<10}" + "".join(f"{values[k]:>9.4f}" if k in values else f"{'':>9}" for k in ks))
    return "\n".join(lines)
