"""A pg_receivewal that keeps failing is never reported as streaming (a real tmpfs, really full).

The spool is a 40 MB tmpfs (room for two segments, see docs/wal.md) and a ballast writer keeps it full (as another process filling the
disk would): pg_receivewal cannot pre-allocate the next 16 MB segment and exits. The streamer's
state, `pgdr wal status` (exit 1), `pgdr status` (degraded) and the incident store say so with
the cause; once the disk is grown, pg_receivewal resumes from the slot, the error clears, the
incident resolves and the archive has no gap.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.wal import WalEnv
from pgdr.core.incidents import IncidentStore
from test_wal_stream import segments, streaming, switch

FREE_LEFT = 256 * 1024


def fill(spool: Path, stop: threading.Event) -> None:
    """Keep the file system of ``spool`` all but full (what another process might do)."""
    with (spool / "ballast").open("ab") as ballast:
        while not stop.is_set():
            st = os.statvfs(spool)
            free = st.f_bavail * st.f_frsize
            if free > 2 * FREE_LEFT:
                with contextlib.suppress(OSError):
                    ballast.write(b"\1" * (free - FREE_LEFT))
                    ballast.flush()
            stop.wait(0.02)


def wal_status(w: WalEnv) -> tuple[int, dict[str, object]]:
    result = run_cli("wal", "status", "--json", env=w.env)
    return result.code, json.loads(result.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_spool_is_a_receiver_error_until_it_streams_again(
    walenv18: WalEnv, tmp_path: Path
) -> None:
    w = walenv18
    home = Path(w.env["PGDR_HOME"])
    spool = tmp_path / "spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(spool)], check=True)
    stop_filling = threading.Event()
    filler = threading.Thread(target=fill, args=(spool, stop_filling), daemon=True)
    proc = w.start_stream("--spool", str(spool))
    try:
        w.wait_for(lambda: streaming(w), what="the streamer to connect")
        assert w.cli("backup").code == 0
        first = switch(w)
        w.wait_for(lambda: first in segments(w), what=first)
        filler.start()
        # more than the spool holds: the next segment cannot be pre-allocated
        full = [switch(w) for _ in range(2)]
        w.insert(5)

        def failing() -> bool:
            code, report = wal_status(w)
            streamer = report["streamer"]
            assert isinstance(streamer, dict)
            return code == 1 and bool(streamer.get("receiver_error"))

        w.wait_for(failing, what="the receiver error in wal status")
        code, report = wal_status(w)
        streamer = report["streamer"]
        assert isinstance(streamer, dict)
        assert streamer["state"] != "streaming"
        assert "No space left on device" in str(streamer["receiver_error"])
        assert any("receiver is failing" in str(p) for p in report["problems"])  # type: ignore[attr-defined]
        status = run_cli("status", "--json", env=w.env)
        assert status.code == 1, status.stdout + status.stderr
        db = json.loads(status.stdout)["databases"]["default"]
        assert db["state"] == "degraded"
        assert "No space left on device" in db["wal"]["receiver_error"]
        assert any("No space left on device" in r for r in db["reasons"])
        incident = IncidentStore.at_home(home).current("wal_receiver")
        assert incident is not None and incident.severity == "P1"
        assert "No space left on device" in incident.message
        # the disk grows: pg_receivewal resumes from the slot, nothing was lost
        stop_filling.set()
        filler.join()
        subprocess.run(["mount", "-o", "remount,size=100m", str(spool)], check=True)

        def recovered() -> bool:
            code, report = wal_status(w)
            streamer = report["streamer"]
            assert isinstance(streamer, dict)
            return code == 0 and streamer["receiver_error"] is None

        w.wait_for(recovered, what="the receiver to stream again")
        assert IncidentStore.at_home(home).current("wal_receiver") is None
        last = switch(w)
        w.wait_for(lambda: set(full) | {last} <= segments(w), what="the WAL written meanwhile")
        code, report = wal_status(w)
        assert code == 0 and report["gaps"] == []
        assert (report["streamer"] or {})["state"] == "streaming"  # type: ignore[index]
    except AssertionError:
        print(json.dumps(wal_status(w), indent=1), os.listdir(spool))  # what the streamer said
        raise
    finally:
        stop_filling.set()
        w.stop_stream(proc)
        subprocess.run(["umount", "-l", str(spool)], check=False)
