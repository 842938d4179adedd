"""The video job on a two-node Ray cluster on this machine (``ray start --head`` plus a
second ``ray start --address``, 1 CPU each, started and stopped here), joined through
``--ray-address``: one worker per node, outputs identical to the local engine."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


from test_ray_video import CLIPS, assert_same_outputs, assert_same_summary, worker_env

ray = pytest.importorskip("ray", reason='the Ray engine tests need Ray: pip install "facesieve[ray]"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    """``ray start --block ...`` in its own process group (ended by its id in teardown)."""
    ray_bin = Path(sys.executable).with_name("ray")
    # The drivers here (this process) read RAY_AUTH_MODE when ray was imported (default:
    # disabled); the nodes must use the same mode or every connection is refused.
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    with open(log, "wb") as f:
        return subprocess.Popen([str(ray_bin), "start", "--block", "--disable-usage-stats", "--num-cpus", "1",
                                 "--object-store-memory", str(150 * 2**20), "--node-ip-address", "127.0.0.1", *args],
                                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # `ray start --block` stops its node's processes on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a second node (``ray start``), 1 CPU each; yields the head's address."""
    worker_env()  # both nodes' raylets (and so their workers) import the checkout under test
    logs = tmp_path_factory.mktemp("ray_logs")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = [_ray_start(["--head", "--port", str(port), "--include-dashboard", "false"], logs / "head.log")]
    try:
        deadline = time.monotonic() + 120
        while True:  # the head's GCS accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert procs[0].poll() is None and time.monotonic() < deadline, (logs / "head.log").read_text()[-3000:]
                time.sleep(0.5)
        procs.append(_ray_start(["--address", address], logs / "node2.log"))
        while len(ray_nodes(address)) < 2:
            assert procs[1].poll() is None and time.monotonic() < deadline, (logs / "node2.log").read_text()[-3000:]
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_two_node_cluster_same_outputs_as_local_engine(two_nodes, tmp_path, videos_dir):
    from facesieve.cli import main

    clips = [str(videos_dir / c) for c in CLIPS]
    args = ["video", *clips, "--frames", "3", "--fallback", "none", "-q"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert not ray.is_initialized()
    out = tmp_path / "ray"
    assert main(args + ["--out", str(out), "--engine", "ray", "--ray-address", two_nodes]) == 0
    assert not ray.is_initialized()  # the job disconnected; the cluster is still up
    assert_same_outputs(tmp_path / "local", out)
    d = assert_same_summary(tmp_path / "local", out)
    workers = d["ray"]["per_worker"]
    assert d["ray"]["workers"] == 2  # default: one per CPU of the cluster (2 nodes x 1)
    nodes = {n["NodeID"] for n in ray_nodes(two_nodes)}
    assert len(nodes) == 2 and {w["node_ids"][0] for w in workers} == nodes  # one worker on each node
    assert sum(w["videos"] for w in workers) == len(clips) and all(w["videos"] >= 1 for w in workers)


def ray_nodes(address: str) -> list[dict]:
    """The cluster's live nodes, read by a short-lived driver connection."""
    ray.init(address=address, log_to_driver=False)
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()


def test_unreachable_cluster_is_a_usage_error(tmp_path, videos_dir, capsys):
    from facesieve.cli import main

    rc = main(["video", str(videos_dir / CLIPS[0]), "--out", str(tmp_path), "--engine", "ray",
               "--ray-address", "127.0.0.1:1", "-q"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "cannot reach the Ray cluster at '127.0.0.1:1'" in err[-1]
