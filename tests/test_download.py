"""Downloads (resume, atomicity, checksums, failing fast without network) and safe extraction."""

from __future__ import annotations

import hashlib
import os
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from csfgan.data import download as dl
from csfgan.data.download import DataSourceError, download_file, extract_archive
from tests.realdata_fixtures import make_tar

DATA = bytes(range(256)) * 40  # 10 KiB
DATA_MD5 = hashlib.md5(DATA).hexdigest()


# ------------------------------------------------------------------ a local HTTP server with Range support


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if self.path != "/file.bin":
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.support_range:
            start = int(rng.split("=", 1)[1].rstrip("-"))
            if start >= len(srv.data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = srv.data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(srv.data) - 1}/{len(srv.data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # drop the connection mid-transfer
            self.wfile.write(body[: srv.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.data, srv.support_range, srv.cut_after, srv.ranges = DATA, True, None, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/file.bin"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ download_file


def test_file_url_download_is_verified_and_atomic(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    dest = tmp_path / "dl" / "file.bin"
    assert download_file(src.as_uri(), dest, DATA_MD5, progress=False) == dest
    assert dest.read_bytes() == DATA
    assert _leftovers(dest.parent) == ["file.bin"]
    src.unlink()  # already there and verified: no download needed
    assert download_file(src.as_uri(), dest, DATA_MD5, progress=False) == dest


def test_md5_mismatch_moves_file_aside(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    dest = tmp_path / "dl" / "file.bin"
    with pytest.raises(DataSourceError, match=r"file\.bin.*does not match.*file\.bin\.bad-md5"):
        download_file(src.as_uri(), dest, "0" * 32, progress=False)
    assert _leftovers(dest.parent) == ["file.bin.bad-md5"]
    assert (dest.parent / "file.bin.bad-md5").read_bytes() == DATA


def test_existing_corrupt_file_is_replaced(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"garbage")
    download_file(src.as_uri(), dest, DATA_MD5, progress=False)
    assert dest.read_bytes() == DATA
    assert (tmp_path / "file.bin.bad-md5").read_bytes() == b"garbage"


def test_resumes_partial_download_with_range(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(DATA[:1000])
    download_file(server.url, dest, DATA_MD5, progress=False)
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == DATA
    assert _leftovers(tmp_path) == ["file.bin"]


def test_server_without_range_support_restarts(server, tmp_path):
    server.support_range = False
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes from another file")
    download_file(server.url, dest, DATA_MD5, progress=False)
    assert dest.read_bytes() == DATA


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path):
    dest = tmp_path / "file.bin"
    server.cut_after = 3000
    with pytest.raises(DataSourceError, match=r"(interrupted|stopped).*file\.bin\.part.*resume"):
        download_file(server.url, dest, DATA_MD5, progress=False)
    assert not dest.exists()
    assert (tmp_path / "file.bin.part").read_bytes() == DATA[:3000]
    server.cut_after = None
    download_file(server.url, dest, DATA_MD5, progress=False)
    assert server.ranges[-1] == "bytes=3000-"
    assert dest.read_bytes() == DATA
    assert _leftovers(tmp_path) == ["file.bin"]


def test_complete_part_with_range_not_satisfiable(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(DATA)
    download_file(server.url, tmp_path / "file.bin", DATA_MD5, progress=False)
    assert (tmp_path / "file.bin").read_bytes() == DATA


def test_http_error_names_url(server, tmp_path):
    url = server.url.replace("file.bin", "missing.bin")
    with pytest.raises(DataSourceError, match=r"missing\.bin: HTTP 404.*mirror"):
        download_file(url, tmp_path / "x.bin", DATA_MD5, progress=False)
    assert _leftovers(tmp_path) == []


def test_no_network_fails_fast(tmp_path):
    # Port 9 (discard) is closed on a machine without such a service; also a port just freed.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    for url in ("http://127.0.0.1:9/CUB_200_2011.tgz", f"http://127.0.0.1:{free_port}/CUB_200_2011.tgz"):
        t0 = time.monotonic()
        with pytest.raises(
            DataSourceError, match=r"cannot download http://127\.0\.0\.1:\d+/CUB_200_2011\.tgz.*network"
        ):
            download_file(url, tmp_path / "CUB_200_2011.tgz", DATA_MD5, progress=False)
        assert time.monotonic() - t0 < 5
    assert _leftovers(tmp_path) == []


def test_unresponsive_server_times_out(tmp_path):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/file.bin"
        t0 = time.monotonic()
        with pytest.raises(DataSourceError, match=r"file\.bin"):
            download_file(url, tmp_path / "file.bin", DATA_MD5, timeout=1, progress=False)
        assert time.monotonic() - t0 < 5


def test_dataset_files_and_overrides():
    names = {f.name: f for f in dl.dataset_files("oxford102")}
    assert names["setid.mat"].md5 == "a5357ecc9cb78c4bef273ce3793fc85c"
    assert names["102flowers.tgz"].url == "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz"
    (cub,) = dl.dataset_files("cub", urls={"CUB_200_2011.tgz": "https://mirror.example/c.tgz"})
    assert (cub.url, cub.md5) == ("https://mirror.example/c.tgz", "97eceeb196236b17998738112f37df78")
    with pytest.raises(DataSourceError, match="unknown file"):
        dl.dataset_files("cub", urls={"CUB.tgz": "x"})
    with pytest.raises(DataSourceError, match="downloadable: cub, oxford102"):
        dl.download_dataset("coco", "/nonexistent")


# ------------------------------------------------------------------ extraction


def _good_archive(path: Path) -> Path:
    return make_tar(path, {"top/a.txt": b"a", "top/sub/b.txt": b"b", "other/c.txt": b"c"})


def test_extract_archive(tmp_path):
    archive = _good_archive(tmp_path / "good.tgz")
    dest = extract_archive(archive, tmp_path / "out" / "good")
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"b"
    assert (dest / dl.MARKER).is_file()
    assert _leftovers(tmp_path / "out") == ["good"]
    # Reused as is when the archive's MD5 matches; re-extracted when it does not.
    (dest / "top" / "a.txt").write_bytes(b"changed")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    extract_archive(archive, dest, md5=md5)
    assert (dest / "top" / "a.txt").read_bytes() == b"changed"
    extract_archive(archive, dest, md5="f" * 32)
    assert (dest / "top" / "a.txt").read_bytes() == b"a"
    assert _leftovers(tmp_path / "out") == ["good"]


def test_extract_include_filter(tmp_path):
    archive = _good_archive(tmp_path / "good.tgz")
    dest = extract_archive(archive, tmp_path / "sel", include=lambda n: n.startswith("top/sub/"))
    assert (dest / "top" / "sub" / "b.txt").is_file()
    assert not (dest / "top" / "a.txt").exists() and not (dest / "other").exists()


def test_extract_refuses_foreign_directory(tmp_path):
    archive = _good_archive(tmp_path / "good.tgz")
    (tmp_path / "dest").mkdir()
    with pytest.raises(DataSourceError, match="not made by csfgan"):
        extract_archive(archive, tmp_path / "dest")


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, size, 0o644
    return info


@pytest.mark.parametrize(
    "member, reason",
    [
        (_info("../evil.txt", size=1), r"'\.\.'"),
        (_info("top/../../evil.txt", size=1), r"'\.\.'"),
        (_info("/tmp/evil.txt", size=1), "absolute path"),
        (_info("top/link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (_info("top/link", tarfile.SYMTYPE, "../../evil.txt"), "outside"),
        (_info("top/hard", tarfile.LNKTYPE, "../evil.txt"), "outside"),
        (_info("top/dev", tarfile.CHRTYPE), "device"),
        (_info("top/fifo", tarfile.FIFOTYPE), "device or FIFO"),
    ],
)
def test_extract_refuses_unsafe_members(tmp_path, member, reason):
    archive = make_tar(tmp_path / "src" / "bad.tgz", {"top/ok.txt": b"fine"}, [member])
    out = tmp_path / "out"
    with pytest.raises(DataSourceError, match=rf"bad\.tgz: member .*{reason}.*nothing was extracted"):
        extract_archive(archive, out / "bad")
    assert _leftovers(out) == []  # neither the destination nor a partial directory
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "src" / "evil.txt").exists()


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_extract_truncated_archive(tmp_path, cut):
    good = _good_archive(tmp_path / "good.tgz").read_bytes()
    # Enough content that the cut falls inside the compressed data, not only the gzip trailer.
    big = make_tar(tmp_path / "big.tgz", {f"top/f{i}.bin": os.urandom(2000) for i in range(20)})
    data = big.read_bytes()
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(
        DataSourceError, match=r"truncated\.tgz: archive is truncated or corrupt.*nothing was extracted"
    ):
        extract_archive(truncated, tmp_path / "out" / "t")
    assert _leftovers(tmp_path / "out") == []
    assert good  # the untruncated archive is fine (sanity)


def test_extract_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"this is not a tar archive at all" * 10)
    with pytest.raises(DataSourceError, match=r"junk\.tgz: archive is truncated or corrupt"):
        extract_archive(junk, tmp_path / "out" / "j")
    assert _leftovers(tmp_path / "out") == []
