"""The parts of ``pipeline_throughput.py``'s real stack: the model version, the pre-rendered sandbox in a
process of its own, the Celery workers, and the CPU seconds every process spends (read from ``/proc``).

``python benchmarks/pipeline_stack.py serve --listings N --models M --seed S --photos DIR`` serves the
sandbox marketplace with the photos of ``DIR`` (rendered beforehand by :func:`prerender`) and prints its
URL on the first line of its output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autodetect.sandbox.marketplace import Marketplace  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the model version ---------------------------------------------------------------------------
def ensure_bundle(work: Path, classes: list[str], backbone: str = "inception_v3", size: int = 224) -> Path:
    """``work/models/<backbone>-<size>-<n>``: the Keras model with RANDOM weights (nothing can be
    downloaded here; the cost does not depend on the weights), exported as the project exports
    (dynamic-range int8 LiteRT), and its labels. Built once, reused by later runs."""
    from autodetect.model.bundle import FILES, save_labels

    directory = work / "models" / f"{backbone}-{size}-{len(classes)}"
    if (directory / FILES["tflite"]).exists() and (directory / "labels.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    from autodetect.model.backbones import build_classifier
    from autodetect.model.export import export_tflite

    print(f"building {backbone} at {size} px, {len(classes)} classes (random weights) and exporting it ...",
          flush=True)
    keras_path = directory / FILES["keras"]
    build_classifier(backbone, len(classes), size, weights="none").save(keras_path)
    export_tflite(keras_path, directory / FILES["tflite"], quantize="dynamic")
    save_labels(directory, classes, backbone=backbone, image_size=size)
    return directory


def register_and_promote(settings, bundle: Path, name: str = "bench-v1") -> int:
    """The bundle as a registered version, promoted, as a training run registers one: its files under
    ``data_dir/models/<name>``, a candidate row, then ``registry.promote``. Returns its id."""
    from autodetect.db import session_scope
    from autodetect.model import registry
    from autodetect.model.bundle import read_bundle
    from autodetect.storage import ModelVersion, VersionStatus

    info = read_bundle(bundle)
    target = settings.data_dir / "models" / name
    target.mkdir(parents=True, exist_ok=True)
    for fmt in ("tflite", "onnx"):
        if fmt in info.files:
            shutil.copyfile(info.files[fmt], target / info.files[fmt].name)
    shutil.copyfile(bundle / "labels.json", target / "labels.json")
    with session_scope(settings) as s:
        version = ModelVersion(name=name, backbone=info.backbone, image_size=info.image_size, classes=info.classes,
                               metrics={}, status=VersionStatus.candidate.value,
                               artifacts={"dir": str(target.relative_to(settings.data_dir)), "tflite": "model.tflite"})
        s.add(version)
        s.flush()
        registry.promote(s, version)
        return version.id


# --- the sandbox, its photos rendered beforehand -------------------------------------------------
def _photo_file(directory: Path, path: str) -> Path:
    return directory / path.strip("/").replace("/", "_")


def _render(args: tuple[int, int, int, str, list[str]]) -> int:
    listings, models, seed, directory, paths = args
    market = Marketplace(listings, models, seed)
    for path in paths:
        data = market.photo_bytes(path)
        if data is not None:  # the sandbox's broken photo answers 404
            _photo_file(Path(directory), path).write_bytes(data)
    return len(paths)


def prerender(work: Path, listings: int, models: int, seed: int, per_listing: int) -> Path:
    """Every photo the crawl will queue (each listing's first ``per_listing``), rendered once into
    ``work/photos/...`` on every core; reused by later runs of the same sandbox code."""
    sandbox = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "autodetect" / "sandbox").glob("*.py"))))
    directory = work / "photos" / f"{listings}-{models}-{seed}-{per_listing}-{sandbox.hexdigest()[:12]}"
    if (directory / "complete").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    market = Marketplace(listings, models, seed)
    paths = [p.path for listing in market.listings() for p in listing.photos[:per_listing]]
    cores = len(os.sched_getaffinity(0))
    chunks = [paths[k::cores * 4] for k in range(cores * 4)]
    started = time.perf_counter()
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_render, [(listings, models, seed, str(directory), c) for c in chunks]))
    (directory / "complete").write_text(str(len(paths)))
    print(f"rendered {len(paths)} sandbox photos in {time.perf_counter() - started:.0f} s", flush=True)
    return directory


class PrerenderedMarketplace(Marketplace):
    """The sandbox marketplace whose photos come from memory: serving one costs no rendering."""

    def __init__(self, listings: int, models: int, seed: int, photos: Path):
        super().__init__(listings, models, seed)
        self._bytes = {f.name: f.read_bytes() for f in photos.glob("*.jpg")}

    def photo_bytes(self, path: str) -> bytes | None:
        return self._bytes.get(_photo_file(Path("."), urlsplit(path).path).name)


def start_sandbox(listings: int, models: int, seed: int, photos: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """The sandbox server in a process of its own (so that its CPU is counted apart); its URL."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve", "--listings", str(listings),
                             "--models", str(models), "--seed", str(seed), "--photos", str(photos)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True,  # noqa: SIM115
                            start_new_session=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        stop([proc])
        raise RuntimeError(f"the sandbox did not start: {log.read_text()[-2000:]}")
    return proc, url


def _serve(args: argparse.Namespace) -> None:
    from autodetect.sandbox.server import SandboxServer

    market = PrerenderedMarketplace(args.listings, args.models, args.seed, Path(args.photos))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for every thread
    with SandboxServer(market) as server:
        print(server.url, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})  # then the server stops


# --- workers -------------------------------------------------------------------------------------
def spawn_worker(spec, concurrency: int, env: dict, logs: Path) -> subprocess.Popen:
    """``celery -A workers worker`` for one queue, with its declared pool and prefetch."""
    args = spec.worker_args()
    args[args.index("-c") + 1] = str(concurrency)
    args[args.index("-n") + 1] = f"{spec.name}@bench"
    log = open(logs / f"{spec.name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "celery", *args, "-l", "INFO", "--without-gossip",
                             "--without-mingle", "--without-heartbeat"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(procs) -> None:
    """SIGTERM to each process (a Celery worker's warm shutdown), SIGKILL to its group after 30 s; returns
    when no process of the groups is left (a pool process may still be giving its messages back)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        while _group_alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(p.pid):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# --- CPU seconds per process group, from /proc ---------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own user + system CPU seconds) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot (iowait counted idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS, idle / CLOCK_TICKS


class CpuMeter(threading.Thread):
    """CPU seconds spent by groups of processes since it was made, sampled every ``interval`` s while
    it runs (``start``), so that a process that ends meanwhile keeps what it had spent. ``groups``:
    name -> predicate(pid, command line); a process belongs to the first group that takes it, or else
    to its parent's. A process is classified once, when first seen."""

    def __init__(self, groups: dict[str, Callable[[int, str], bool]], interval: float = 2.0):
        super().__init__(daemon=True)
        self.groups, self.interval = groups, interval
        self._owner: dict[int, str] = {}
        self._untitled: set[int] = set()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._halt = threading.Event()
        self.sample(initial=True)
        self._machine = machine_cpu()

    def sample(self, initial: bool = False) -> None:
        stats = {pid: s for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if (s := _stat(pid))}
        # New processes, and PostgreSQL backends caught before they set their title (the postmaster's
        # command line until the startup packet is read): classified when first seen as themselves.
        for pid in sorted((stats.keys() - self._owner.keys()) | (self._untitled & stats.keys())):
            command = _cmdline(pid)
            self._owner[pid] = next((g for g, test in self.groups.items() if test(pid, command)), "")
            parent = stats[pid][0]
            if not self._owner[pid] and parent in self._owner:  # parents have lower pids, mostly
                self._owner[pid] = self._owner[parent]
            untitled = not self._owner[pid] and "bin/postgres" in command
            (self._untitled.add if untitled else self._untitled.discard)(pid)
        for pid, (_, seconds) in stats.items():
            if initial:
                self._first[pid] = seconds
            elif self._owner[pid]:
                self._last[pid] = seconds

    def totals(self) -> dict[str, float]:
        """CPU seconds per group since the meter was made, as of its last sample."""
        spent = {g: 0.0 for g in self.groups}
        for pid, seconds in self._last.items():
            spent[self._owner[pid]] += seconds - self._first.get(pid, 0.0)
        return spent

    def roots(self, pids: dict[str, int]) -> dict[str, float]:
        """CPU seconds of the given processes themselves (name -> pid), without their children."""
        return {name: self._last.get(pid, 0.0) - self._first.get(pid, 0.0) for name, pid in pids.items()}

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def finish(self) -> tuple[dict[str, float], float, float]:
        """CPU seconds per group, the machine's busy seconds and its idle seconds, since the start."""
        self._halt.set()
        self.join()
        self.sample()
        busy, idle = (now - then for now, then in zip(machine_cpu(), self._machine))
        return self.totals(), busy, idle


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve the pre-rendered sandbox marketplace")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--listings", type=int, required=True)
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--photos", required=True)
    _serve(parser.parse_args())
