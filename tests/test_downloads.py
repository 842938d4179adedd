"""Weights downloads and the weights cache against a real HTTP server on 127.0.0.1: a body cut
short is rejected with or without a sha256 and nothing is cached; a cached file with the wrong
checksum is fetched again; a corrupt converted-weights cache entry is rebuilt."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

from facesieve.weights.cache import WeightsError, cached_state_dict, download

BODY = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/good: the whole body. /short: announces the whole body, sends 1,000 bytes and closes.
    /chunked-short: chunked transfer cut after one chunk. /other: different bytes."""

    hits: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        if self.path.startswith("/chunked-short"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % 1000 + BODY[:1000] + b"\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        body = b"x" * len(BODY) if self.path.startswith("/other") else BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:1000] if self.path.startswith("/short") else body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESIEVE_CACHE", str(tmp_path / "cache"))
    _Handler.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join()


def _cached_files(tmp_path) -> list[str]:
    d = tmp_path / "cache" / "downloads"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("path", ["/short/w.pth", "/chunked-short/w.pth"])
@pytest.mark.parametrize("sha", [None, SHA])
def test_a_download_cut_short_is_rejected_and_not_cached(server, tmp_path, path, sha):
    with pytest.raises(WeightsError, match="could not download") as e:
        download(server + path, sha256=sha)
    assert server + path in str(e.value)
    assert _cached_files(tmp_path) == []  # no temp file, no partial file
    # the good file then downloads and is kept whole
    p = download(server + "/good/w.pth", sha256=sha)
    assert p.read_bytes() == BODY and _cached_files(tmp_path) == [p.name]


def test_a_cached_file_with_the_wrong_checksum_is_fetched_again(server, tmp_path):
    url = server + "/good/w.pth"
    p = download(url, sha256=SHA)
    assert _Handler.hits == ["/good/w.pth"]
    assert download(url, sha256=SHA) == p and _Handler.hits == ["/good/w.pth"]  # reused, no request
    p.write_bytes(BODY[:-1] + b"\0")  # corrupted on disk
    assert download(url, sha256=SHA) == p and p.read_bytes() == BODY
    assert _Handler.hits == ["/good/w.pth"] * 2
    # a server now serving other bytes: rejected, the good cached copy is left alone
    with pytest.raises(WeightsError, match="checksum mismatch"):
        download(server + "/other/w.pth", sha256=SHA)
    assert p.read_bytes() == BODY


def test_a_corrupt_converted_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESIEVE_CACHE", str(tmp_path / "cache"))
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(6.0).reshape(2, 3)}

    first = cached_state_dict("k-v1", build)
    path = tmp_path / "cache" / "converted" / "k-v1.pt"
    assert path.is_file() and len(calls) == 1
    assert torch.equal(cached_state_dict("k-v1", build)["w"], first["w"]) and len(calls) == 1  # from the cache
    for junk in (b"", path.read_bytes()[:50], b"not a torch file"):
        path.write_bytes(junk)
        again = cached_state_dict("k-v1", build)
        assert torch.equal(again["w"], first["w"])
        assert torch.equal(torch.load(path, weights_only=True)["w"], first["w"])  # rewritten whole
    assert len(calls) == 4
