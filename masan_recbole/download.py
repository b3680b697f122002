"""Datasets RecBole downloads, downloaded with more care than RecBole 1.2.1 takes.

RecBole fetches a missing dataset named in its ``properties/dataset/url.yaml`` (about 150 names:
yelp, ml-1m, amazon-books, ...). This module does the same from the same file, and:

* writes the zip to ``<name>.zip.part`` and renames it only when its size matches Content-Length;
  a download that was killed or cut resumes with an HTTP Range request on the next run;
* never asks where nobody can answer: the ``download`` key (``auto``: as RecBole, ask on a
  terminal above 1 GB and stop with a one-line error without one; ``yes``; ``no``; ``ask``);
* says the size before it starts, and shows a progress bar;
* checks the zip (CRC of every member) and keeps every member inside the dataset folder before
  extracting, since data from the network is untrusted; then renames the atomic files as
  RecBole does (``Amazon_Books.inter`` -> ``amazon-books.inter``);
* offline, on an HTTP error or a stalled server: a one-line error within 30 s naming the URL, the
  size where known, and the folder to unzip the files into by hand.

``download_url`` (a config key) replaces the url.yaml entry for one run, e.g. for a mirror.
"""

import os
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

import yaml

TIMEOUT = 20  # seconds a connection or a read may wait: errors come within 30 s
ASK_ABOVE = 1 << 30  # RecBole asks before downloads above 1 GB
CHUNK = 1 << 20
DOWNLOAD_CHOICES = ("auto", "yes", "no", "ask")


class DownloadError(OSError):
    """A dataset could not be downloaded; the message says what to do instead."""


def recbole_url_file():
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")


def dataset_url(name, url_file=None):
    """The URL RecBole's url.yaml gives for dataset ``name``, or None."""
    with open(url_file or recbole_url_file()) as f:
        urls = yaml.safe_load(f) or {}
    url = urls.get(name)
    return str(url) if url else None


def _size(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _by_hand(url, folder, total=None):
    size = f" ({_size(total)})" if total else ""
    return f"download {url}{size} yourself and unzip it into {os.path.abspath(folder)}/"


def decide(choice, total, name, ask=input, interactive=None):
    """Whether to download ``total`` bytes under the ``download`` setting ``choice``."""
    if choice not in DOWNLOAD_CHOICES:
        raise ValueError(f"download: {choice!r} is not one of {', '.join(DOWNLOAD_CHOICES)}")
    if choice == "yes" or (choice == "auto" and total is not None and total < ASK_ABOVE):
        return True
    if choice == "no":
        return False
    interactive = sys.stdin.isatty() if interactive is None else interactive
    size = _size(total) if total else "of unknown size"
    if not interactive:
        raise DownloadError(f"dataset {name} is {size} to download and there is no terminal to ask: "
                            "set download: yes (--download=yes) to download it, or download: no to stop here")
    answer = ask(f"Dataset {name} is {size} to download. Download it? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def fetch(url, path, choice="auto", name=None, ask=input, interactive=None, timeout=TIMEOUT, progress=True):
    """Downloads ``url`` to ``path`` through ``path + '.part'``, resuming a part left by an
    earlier run. Returns False where the user declined."""
    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    total = None
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is already whole: the server has nothing past it
            os.replace(part, path)
            return True
        raise DownloadError(f"could not download {name or url}: HTTP {e.code} {e.reason} from {url}; "
                            f"{_by_hand(url, os.path.dirname(path))}") from None
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not download {name or url}: {reason} ({url}); "
                            f"{_by_hand(url, os.path.dirname(path))}") from None
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            start, _, whole = (response.headers.get("Content-Range") or "").rpartition(" ")[2].partition("/")
            if not start.startswith(f"{have}-"):
                have = 0  # a range we did not ask for: start again
            total = int(whole) if whole.isdigit() else (have + int(length) if length else None)
        else:
            have = 0  # the server sends the whole file
            total = int(length) if length else None
        if have == 0 and not decide(choice, total, name or url, ask, interactive):
            return False
        action = f"resuming at {_size(have)} of" if have else "downloading"
        print(f"{name or 'dataset'}: {action} {url} ({_size(total) if total else 'size unknown'})", file=sys.stderr)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=name or "download")
        try:
            with open(part, "ab" if have else "wb") as f:
                while True:
                    try:
                        chunk = response.read1(CHUNK)  # what has arrived, so the part grows as it comes
                    except (socket.timeout, TimeoutError, OSError) as e:
                        raise DownloadError(f"download of {name or url} stopped at {_size(f.tell())}"
                                            f"{' of ' + _size(total) if total else ''}: {e or 'timed out'}; "
                                            "run again to resume it, or " + _by_hand(url, os.path.dirname(path), total)
                                            ) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    f.flush()
                    if bar:
                        bar.update(len(chunk))
        finally:
            if bar:
                bar.close()
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise DownloadError(f"download of {name or url} ended at {_size(got)} of {_size(total)} ({got} of {total} "
                            f"bytes); run again to resume it, or {_by_hand(url, os.path.dirname(path), total)}")
    os.replace(part, path)
    return True


def safe_extract(zip_path, folder):
    """Extracts a checked zip into ``folder``: every member's CRC verified and every member kept
    inside ``folder`` (no absolute path, no ``..``, no link). Returns the extracted names."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise DownloadError(f"{zip_path}: member {bad} is corrupt (CRC mismatch)")
            root = os.path.realpath(folder)
            for info in archive.infolist():
                target = os.path.realpath(os.path.join(root, info.filename))
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if os.path.isabs(info.filename) or os.path.commonpath([root, target]) != root or is_link:
                    raise DownloadError(f"{zip_path}: member {info.filename!r} would be written outside "
                                        f"{folder}; refused (data from the network is untrusted)")
            with tempfile.TemporaryDirectory(dir=folder, prefix=".unzip-") as staging:
                archive.extractall(staging)
                names = []
                for entry in os.listdir(staging):
                    shutil.move(os.path.join(staging, entry), os.path.join(folder, entry))
                    names.append(entry)
            return names
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{zip_path} is not a zip file ({e})") from None


def download_dataset(name, folder, choice="auto", url=None, ask=input, interactive=None, timeout=TIMEOUT,
                     logger=None):
    """Downloads and extracts dataset ``name`` into ``folder`` from ``url`` (default: RecBole's
    url.yaml). Returns False where the user declined."""
    from recbole.utils.url import rename_atomic_files

    url = url or dataset_url(name)
    if url is None:
        raise DownloadError(f"dataset {name} has no download URL in {recbole_url_file()}")
    os.makedirs(folder, exist_ok=True)
    zip_path = os.path.join(folder, url.rpartition("/")[2].split("?")[0] or f"{name}.zip")
    if not os.path.exists(zip_path):
        if not fetch(url, zip_path, choice, name, ask, interactive, timeout):
            return False
    try:
        names = safe_extract(zip_path, folder)
    except DownloadError as e:
        os.unlink(zip_path)  # a whole but broken file: the next run downloads it again
        raise DownloadError(f"{e}; it was deleted: run again to download it afresh, or "
                            f"{_by_hand(url, folder)}") from None
    os.unlink(zip_path)
    rename_atomic_files(folder, os.path.splitext(os.path.basename(zip_path))[0], name)
    if logger:
        logger.info(f"dataset {name}: extracted {', '.join(sorted(names))} into {folder}")
    return True


def _incomplete(folder):
    """A dataset folder this module started and did not finish: a part file and no atomic file."""
    names = os.listdir(folder)
    return any(n.endswith(".part") for n in names) and not any(n.endswith(".inter") for n in names)


def load_data_downloading(original, dataset, token, dataset_path):
    """RecBole's ``Dataset._load_data``, which downloads a missing folder: also one whose
    download was cut, so that the next run resumes it."""
    if os.path.isdir(dataset_path) and _incomplete(dataset_path):
        dataset._download()
    return original(dataset, token, dataset_path)


def download_missing(dataset):
    """Stands in for RecBole's ``Dataset._download``: a name in RecBole's url.yaml (or given
    ``download_url``) is downloaded, except one the plugin converts itself (its config describes
    the converted files, not RecBole's); any other name gets the plugin's message on where the
    files go."""
    from masan_recbole.atomic import refuse_download
    from masan_recbole.data import closest_converter

    config, name = dataset.config, dataset.dataset_name
    url = config["download_url"] or dataset_url(name)
    if url is None:
        refuse_download(dataset)
    if closest_converter(name) == name and not config["download_url"]:
        refuse_download(dataset, f"RecBole's url.yaml downloads another '{name}' than the one the plugin's "
                        f"configs/dataset/{name}.yaml describes, so it is not downloaded.")
    choice = config["download"]
    # YAML reads yes/no as booleans
    choice = {True: "yes", False: "no", None: "auto"}.get(choice, str(choice).lower()) if not isinstance(choice, str) \
        else choice.lower()
    distributed = config["local_rank"] not in (None, 0)
    import torch.distributed as dist

    if not distributed:
        done = download_dataset(name, dataset.dataset_path, choice, url, logger=dataset.logger)
        if not done:
            raise DownloadError(f"dataset {name} not downloaded (download: {choice}); "
                                f"{_by_hand(url, dataset.dataset_path)}")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # other ranks wait for rank 0's files, as in RecBole
