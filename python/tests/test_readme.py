"""The README's Python runner and training loop, run as printed (only the server address rewritten)."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys

from conftest import REPO, Stubs, eventually
from runnerline.runner import default_worker_id

DEFAULT_ADDRESS = "127.0.0.1:50051"


def readme_blocks():
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Writing a runner and a training loop in Python")
    section = readme[start : readme.index("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, blocks
    return blocks


def rewrite(text: str, address: str) -> str:
    assert DEFAULT_ADDRESS in text, text
    return text.replace(DEFAULT_ADDRESS, address)


def test_the_readme_examples_are_short_and_run(server, tmp_path):
    runner_code, training_code = readme_blocks()
    assert len(runner_code.splitlines()) + len(training_code.splitlines()) < 30
    (tmp_path / "my_runner.py").write_text(rewrite(runner_code, server.address))
    (tmp_path / "train.py").write_text(rewrite(training_code, server.address))
    runner = subprocess.Popen([sys.executable, "my_runner.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        training = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert training.returncode == 0, training.stdout + training.stderr
        lines = training.stdout.splitlines()
        assert len(lines) == 8, training.stdout
        for line in lines:
            rollout_id, status, result = line.split(" ", 2)
            assert rollout_id.startswith("ro-") and status == "SUCCEEDED", line
            assert ast.literal_eval(result) == {"answer": 5, "reward": 1}, line

        stubs = Stubs(server.address)
        worker = eventually(lambda: stubs.worker(default_worker_id()), lambda w: w.connected, "the README's runner is not connected")
        assert dict(worker.labels) == {"lang": "python"} and worker.capacity == 2
        runner.send_signal(signal.SIGINT)  # Ctrl-C drains: nothing held, so it leaves at once
        assert runner.wait(20) == 0, runner.stdout.read()
        stubs.channel.close()
    finally:
        if runner.poll() is None:
            runner.kill()
