"""``/identify`` under a burst of heavy uploads: a real API process (uvicorn) on loopback, eight
concurrent uploads of a 16-bit PNG near the pixel limit. Decodes are bounded (503 with Retry-After
past the limit) and the process stays under 1 GiB."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from autodetect.db import upgrade
from autodetect.settings import configure
from tests.unit.test_images_decode_memory import wide_grey_png
from tests.unit.test_inference_support import register_version

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_eight_concurrent_heavy_uploads_stay_bounded(tmp_path):
    db = f"sqlite:///{tmp_path}/autodetect.db"
    settings = configure(data_dir=tmp_path, database_url=db)
    upgrade(settings)
    register_version(settings, "v1", ["red", "green", "blue"])
    png = wide_grey_png(tmp_path / "wide16.png").read_bytes()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODETECT_")}
    env.update(AUTODETECT_DATA_DIR=str(tmp_path), AUTODETECT_DATABASE_URL=db, AUTODETECT_API_MAX_CONCURRENT_DECODES="2",
               PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "autodetect.serving.app:app", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/health", timeout=2).status_code in (200, 503):
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        start = threading.Barrier(8)
        answers: list[requests.Response] = []

        def upload() -> None:
            start.wait()
            answers.append(requests.post(f"{url}/identify", files={"photo": ("wide16.png", png, "image/png")},
                                         timeout=120))

        threads = [threading.Thread(target=upload) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
    codes = sorted(r.status_code for r in answers)
    print({"codes": codes, "peak_rss_mib": round(peak)})
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    for r in answers:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1" and "busy" in r.json()["detail"]
        else:
            assert r.json()["candidates"], r.text
    assert peak < 1024, f"the API process peaked at {peak:.0f} MiB"
