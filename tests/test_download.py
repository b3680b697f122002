"""Datasets named in RecBole's url.yaml are downloaded (masan_recbole/download.py), from an HTTP
server on 127.0.0.1 that serves zips made here from generated atomic files."""

import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from masan_recbole import download
from masan_recbole.download import DownloadError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def yelp_inter(users=60, per_user=16, items=40):
    """RecBole's yelp.inter header (RecSysDatasets' YELPDataset inter_fields): every user above
    the config's 15 interactions, every item above 5, stars 3 or more."""
    lines = ["review_id:token\tuser_id:token\tbusiness_id:token\tstars:float\tuseful:float\tfunny:float\t"
             "cool:float\tdate:float"]
    for u in range(users):
        for k in range(per_user):
            lines.append(f"r{u}_{k}\tu{u}\tb{(u * 7 + k * 3) % items}\t{3 + (u + k) % 3}\t0\t0\t0\t{1500000000 + k * 86400}")
    return "\n".join(lines) + "\n"


class Server:
    """One zip per path; ``mode`` decides how it is served: ok, cut (closes half-way),
    slow (a chunk every 0.2 s), stall (headers, then nothing), 404."""

    def __init__(self):
        self.files, self.mode, self.requests = {}, "ok", []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None or server.mode == "404":
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                rest = body[start:]
                if server.mode == "stall":
                    time.sleep(40)
                    return
                if server.mode == "cut":
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                step = 4096 if server.mode == "slow" else len(rest)
                for i in range(0, len(rest), step):
                    self.wfile.write(rest[i:i + step])
                    self.wfile.flush()
                    if server.mode == "slow":
                        time.sleep(0.2)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


ATOMIC = {"Toy_Set.inter": "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n"}


def test_a_complete_download_is_checked_extracted_and_renamed(server, tmp_path):
    server.files["/Toy_Set.zip"] = make_zip(ATOMIC)
    folder = tmp_path / "toy"
    assert download.download_dataset("toy", str(folder), url=server.url("/Toy_Set.zip"))
    assert sorted(os.listdir(folder)) == ["toy.inter"]  # RecBole's renaming; no zip or part left
    assert (folder / "toy.inter").read_text() == ATOMIC["Toy_Set.inter"]


def test_a_killed_download_resumes_on_the_next_run(server, tmp_path):
    body = make_zip({**ATOMIC, "padding.bin": os.urandom(200_000)})
    server.files["/Toy_Set.zip"] = body
    folder = tmp_path / "toy"
    server.mode = "cut"
    with pytest.raises(DownloadError, match=r"ended at .* of .*run again to resume it"):
        download.download_dataset("toy", str(folder), url=server.url("/Toy_Set.zip"))
    part = folder / "Toy_Set.zip.part"
    assert 0 < part.stat().st_size < len(body)  # kept, not mistaken for the whole zip
    assert not (folder / "Toy_Set.zip").exists()
    server.mode = "ok"
    assert download.download_dataset("toy", str(folder), url=server.url("/Toy_Set.zip"))
    assert server.requests[-1][1] == f"bytes={len(body) // 2}-"  # asked for the rest only
    assert (folder / "toy.inter").read_text() == ATOMIC["Toy_Set.inter"]


def test_a_truncated_zip_is_deleted_and_named(server, tmp_path):
    whole = make_zip(ATOMIC)
    server.files["/Toy_Set.zip"] = whole[: len(whole) - 30]  # the server itself sends a broken file
    folder = tmp_path / "toy"
    with pytest.raises(DownloadError, match=r"not a zip file.*deleted: run again"):
        download.download_dataset("toy", str(folder), url=server.url("/Toy_Set.zip"))
    assert os.listdir(folder) == []


def test_a_file_that_is_not_a_zip_is_refused(server, tmp_path):
    server.files["/Toy_Set.zip"] = b"<html>a login page</html>"
    with pytest.raises(DownloadError, match="is not a zip file"):
        download.download_dataset("toy", str(tmp_path / "toy"), url=server.url("/Toy_Set.zip"))


def test_http_404_is_one_line_naming_the_url_and_the_folder(server, tmp_path):
    with pytest.raises(DownloadError) as error:
        download.download_dataset("toy", str(tmp_path / "toy"), url=server.url("/missing.zip"))
    message = str(error.value)
    assert "HTTP 404" in message and server.url("/missing.zip") in message
    assert f"unzip it into {tmp_path / 'toy'}/" in message and "\n" not in message


def test_a_stalled_server_ends_within_30_seconds(server, tmp_path):
    server.files["/Toy_Set.zip"] = make_zip(ATOMIC)
    server.mode = "stall"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="stopped at 0.0 MB of .*run again to resume it"):
        download.download_dataset("toy", str(tmp_path / "toy"), url=server.url("/Toy_Set.zip"))
    assert time.monotonic() - start < 30


def test_no_server_at_all_ends_within_30_seconds(tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"could not download toy: .*unzip it into"):
        download.download_dataset("toy", str(tmp_path / "toy"), url="http://127.0.0.1:9/toy.zip")
    assert time.monotonic() - start < 30


def test_a_member_outside_the_folder_is_refused(server, tmp_path):
    server.files["/Toy_Set.zip"] = make_zip({**ATOMIC, "../escape.inter": "x\n"})
    folder = tmp_path / "toy"
    with pytest.raises(DownloadError, match=r"'\.\./escape\.inter' would be written outside"):
        download.download_dataset("toy", str(folder), url=server.url("/Toy_Set.zip"))
    assert not (tmp_path / "escape.inter").exists() and os.listdir(folder) == []


def test_large_downloads_ask_on_a_terminal_and_stop_without_one():
    assert download.decide("auto", 10_000, "toy")  # under 1 GB: no question
    with pytest.raises(DownloadError, match="no terminal to ask: set download: yes"):
        download.decide("auto", 2 << 30, "yelp-full", interactive=False)
    asked = []
    assert download.decide("auto", 2 << 30, "yelp-full", ask=lambda q: asked.append(q) or "y", interactive=True)
    assert "2.15 GB" in asked[0]
    assert not download.decide("no", 10, "toy") and download.decide("yes", 5 << 30, "toy")
    with pytest.raises(ValueError, match="download: 'maybe' is not one of auto, yes, no, ask"):
        download.decide("maybe", 10, "toy")


def test_the_url_comes_from_recboles_url_yaml():
    assert download.dataset_url("yelp").endswith("/Yelp/yelp.zip")
    assert download.dataset_url("ml-1m").endswith("/ml-1m.zip")
    assert download.dataset_url("no-such-dataset") is None


def test_names_without_a_url_keep_the_converter_message(tmp_path):
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset="video-games", config_dict={"data_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=r"no download for it.*\n.*masan_recbole\.data convert video-games"):
        create_dataset(config)


# run_recbole.py as a user runs it, with RecBole's url.yaml read from a copy whose yelp entry points here
WITH_URL_FILE = """
import runpy, sys
import masan_recbole.download
url_file = sys.argv[1]
masan_recbole.download.recbole_url_file = lambda: url_file
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def url_file_pointing_yelp_to(tmp_path, url):
    with open(download.recbole_url_file()) as f:
        lines = [f"yelp: {url}" if line.startswith("yelp:") else line.rstrip("\n") for line in f]
    path = tmp_path / "url.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert download.dataset_url("yelp", str(path)) == url
    return str(path)


def run_yelp(tmp_path, url, log, **kwargs):
    command = [sys.executable, "-c", WITH_URL_FILE, url_file_pointing_yelp_to(tmp_path, url),
               os.path.join(ROOT, "run_recbole.py"), "--model=MASAN", "--dataset=yelp", "--epochs=1",
               f"--data_path={tmp_path / 'data'}", "--hidden_size=8", "--inner_size=16",
               "--n_layers=1", "--MAX_ITEM_LIST_LENGTH=10", "--train_batch_size=4096", "--eval_batch_size=4096"]
    with open(tmp_path / log, "w") as out:  # a file, not a pipe: nothing blocks on a full pipe
        return subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)


@pytest.mark.slow
def test_run_recbole_downloads_yelp_resumes_after_a_kill_and_fails_fast_offline(server, tmp_path):
    body = make_zip({"yelp.inter": yelp_inter(), "padding.bin": os.urandom(300_000)})
    server.files["/yelp.zip"] = body
    url = server.url("/yelp.zip")
    # killed during the download
    server.mode = "slow"
    run = run_yelp(tmp_path, url, "killed.log", start_new_session=True)
    part = tmp_path / "data" / "yelp" / "yelp.zip.part"
    deadline = time.monotonic() + 120
    while not (part.exists() and part.stat().st_size > 20_000) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert 0 < part.stat().st_size < len(body)
    # run again: it resumes, extracts, trains and tests
    kept = part.stat().st_size
    server.mode = "ok"
    run_yelp(tmp_path, url, "resumed.log").wait(timeout=600)
    out = (tmp_path / "resumed.log").read_text()
    assert server.requests[-1][1] == f"bytes={kept}-"  # the rest only
    assert "test result (model of the best validation score" in out, out[-2000:]
    assert "resuming at" in out
    # the server gone and the files missing: one line within 30 s
    server.close()
    for name in os.listdir(tmp_path / "data" / "yelp"):
        os.unlink(tmp_path / "data" / "yelp" / name)
    os.rmdir(tmp_path / "data" / "yelp")
    start = time.monotonic()
    run_yelp(tmp_path, url, "offline.log").wait(timeout=120)
    assert time.monotonic() - start < 30
    out = (tmp_path / "offline.log").read_text()
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "could not download yelp" in error_lines[0] and url in error_lines[0]
