"""python -m masan_recbole.data convert NAME --from SOURCE_DIR [--to DATASET_DIR] [--valid-fraction F]
python -m masan_recbole.data list"""

import argparse
import os
import pickle
import sys

from masan_recbole.data import CONVERTERS, convert


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m masan_recbole.data",
                                     description="Convert public benchmark files to RecBole atomic files.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("convert", help="convert one data set")
    run.add_argument("name", help="data set name (see `list`); also the name of the written files")
    run.add_argument("--from", dest="source", required=True,
                     help="folder with the original files (sequential data sets: also the file itself)")
    run.add_argument("--to", default="dataset", help="RecBole data_path; files go to <to>/<name>/ (default ./dataset)")
    run.add_argument("--valid-fraction", type=float, default=0.1,
                     help="session data sets: share of the most recent training sessions used for validation "
                          "(default 0.1); sequential ones split leave-one-out in RecBole and ignore it")
    commands.add_parser("list", help="list the data sets that can be converted")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, converter in sorted(CONVERTERS.items()):
            print(f"{name:15} {converter.__doc__.splitlines()[0]}")
        return 0
    try:
        stats = convert(args.name, args.source, args.to, args.valid_fraction)
    except (ValueError, FileNotFoundError, pickle.UnpicklingError) as error:
        parser.exit(2, f"error: {error}\n")
    for key, value in stats.items():
        print(f"{key:15} {value:,}" if isinstance(value, int) else f"{key:15} {', '.join(value)}")
    folder = os.path.join(args.to, args.name)
    data_path = "" if os.path.normpath(args.to) == "dataset" else f" --data_path={args.to}"
    print(f"wrote {', '.join(sorted(os.listdir(folder)))} to {folder}/")
    print(f"next: python run_recbole.py --dataset={args.name}{data_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
