"""Hyper-parameter search: python run_hyper.py --model=MASAN --dataset=ml-100k --params_file=configs/hyper/MASAN.test"""

import masan_recbole
import masan_recbole.quick_start

if __name__ == "__main__":
    # the entry point's speed patches, console and dataset configs for every model (docs/usage.md)
    masan_recbole.opt_in()
    masan_recbole.quick_start.main_hyper()
