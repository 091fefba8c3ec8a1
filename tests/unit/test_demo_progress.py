"""The demo shows its training: a line per epoch with the phase, k of N, accuracies and the time left,
and none of TensorFlow's, absl's or LiteRT's log lines (those go to the demo's log file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

AUTODETECT = str(Path(sys.executable).parent / "autodetect")
EPOCH = re.compile(r"(scratch|head|finetune)\s+epoch (\d+)/(\d+) .*acc \d\.\d{3}\s+val_acc \d\.\d{3}.*~\d+ s left")
NATIVE = re.compile(r"oneDNN|absl|XNNPACK|TensorFlow Lite|tensorflow|cuda|W0000|I0000|E0000|WARNING:|UserWarning")


def test_the_demo_shows_each_epoch_and_hides_tensorflow(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTODETECT_", "TF_"))} | {"COLUMNS": "200"}
    result = subprocess.run([AUTODETECT, "--data-dir", str(tmp_path / "data"), "demo", "--listings", "60",
                             "--models", "3", "--train-seconds", "8", "--report-dir", str(tmp_path / "report")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    epochs = [m for m in map(EPOCH.search, output.splitlines()) if m]
    histories = list((tmp_path / "data" / "demo" / "models").glob("*/history.json"))
    assert len(histories) == 1, output[-3000:]
    history = json.loads(histories[0].read_text())
    assert len(epochs) == len(history) >= 1, output[-3000:]
    assert [int(m.group(2)) for m in epochs] == [row["phase_epoch"] for row in history]
    leaked = [line for line in output.splitlines() if NATIVE.search(line)]
    assert not leaked, leaked[:10]
    log_file = tmp_path / "data" / "demo" / "demo.log"
    assert log_file.is_file() and f"logs: {log_file}" in " ".join(output.split())
