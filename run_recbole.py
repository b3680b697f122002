"""Train and test a model: python run_recbole.py --model=MASAN --dataset=ml-100k [--key=value ...]"""

import masan_recbole.quick_start

if __name__ == "__main__":
    masan_recbole.quick_start.main_run()
