"""What goes wrong outside the program is one line and a documented exit code (cli.shared):
a bad variable 2, a broker or ClickHouse that does not answer 3, a refused command 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli.up import bound
from swipeloop.settings import Settings
from swipeloop.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def swipeloop(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWIPELOOP_")}
    clean.update(SWIPELOOP_DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-m", "cli.app", *args],
        env=clean,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SWIPELOOP_TOPIC_PARTITIONS": "abc"}, "SWIPELOOP_TOPIC_PARTITIONS='abc': expected an"),
        ({"SWIPELOOP_TRAIN_CORN": "0 4 * * *"}, "did you mean SWIPELOOP_TRAIN_CRON?"),
    ],
)
def test_a_bad_variable_is_one_line_and_exit_2(
    env: dict[str, str], says: str, tmp_path: Path
) -> None:
    done = swipeloop("model", "list", tmp_path=tmp_path, **env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_clickhouse_that_does_not_answer_is_one_line_and_exit_3(tmp_path: Path) -> None:
    done = swipeloop("migrate", tmp_path=tmp_path, SWIPELOOP_CLICKHOUSE_URL="http://127.0.0.1:1")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1, done.stderr
    assert "ClickHouse did not answer" in done.stderr and "Traceback" not in done.stderr


def test_a_broker_that_does_not_answer_is_one_line_and_exit_3(tmp_path: Path) -> None:
    done = swipeloop("topics", tmp_path=tmp_path, SWIPELOOP_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1, done.stderr
    assert "the broker did not answer" in done.stderr


def test_a_refused_registry_command_exits_1_either_way(tmp_path: Path) -> None:
    promote = swipeloop("model", "promote", "nope", tmp_path=tmp_path)
    rollback = swipeloop("model", "rollback", tmp_path=tmp_path)
    assert (promote.returncode, rollback.returncode) == (1, 1)
    assert "no model version 'nope'" in promote.stderr
    assert "roll back" in rollback.stderr


def test_up_and_api_take_their_address_from_the_settings() -> None:
    settings = Settings.from_env({"SWIPELOOP_API_HOST": "0.0.0.0", "SWIPELOOP_API_PORT": "9001"})
    assert (bound(settings, None, None).api_host, bound(settings, None, None).api_port) == (
        "0.0.0.0",
        9001,
    )
    assert bound(settings, "127.0.0.2", 9002).api_port == 9002  # an option wins


def test_the_embedded_broker_dies_with_its_parent(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from swipeloop.broker import EmbeddedBroker\n"
            "broker = EmbeddedBroker().start()\n"
            "print(broker.pid, flush=True)\n"
            "time.sleep(300)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    pid = int(starter.stdout.readline())
    assert _alive(pid)
    starter.send_signal(signal.SIGKILL)  # no chance to stop it
    starter.wait()
    assert wait_for(lambda: not _alive(pid), 10.0), f"the broker {pid} outlived its parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")  # a zombie is gone
