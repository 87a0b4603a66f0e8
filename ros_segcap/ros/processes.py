"""Child processes of `segcap demo`: their environment, start, watch and stop.

Each child runs in its own session with its output in a log file; Ctrl-C reaches it only
through stop_children (SIGINT, then SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping, Optional

from ros_segcap.ros.transport import use_large_frame_transport

CLEAN_EXIT_CODES = (0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT)


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what happened and what to try."""


def ros_environment(base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment for the demo's processes: a private domain, localhost discovery, SHM.

    ROS_DOMAIN_ID is drawn at random (1-100) unless set, so two demos do not talk to each
    other; the large-frame DDS profile is set as in every entry point (transport.py), unless
    the user chose one.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('PYTHONUNBUFFERED', '1')
    use_large_frame_transport(env)
    return env


@dataclass
class Child:
    """A child process whose output goes to a log file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the child's output, prefixed with its name."""
        self.log_file.flush()
        text = self.log_path.read_text(errors='replace').rstrip().splitlines()
        return '\n'.join(f'  [{self.name}] {line}' for line in text[-lines:])


def start_child(name: str, cmd: list[str], env: Mapping[str, str], out: Path) -> Child:
    """Start `cmd` in its own session (Ctrl-C reaches it only through stop_children)."""
    log_path = out / f'{name}.log'
    log_file = open(log_path, 'wb')
    process = subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return Child(name, process, log_path, log_file)


def check_children(children: list[Child]) -> None:
    """Raise DemoError with the child's output if one of them has exited."""
    for child in children:
        code = child.process.poll()
        if code is not None:
            raise DemoError(f'the {child.name} process exited with code {code} '
                            f'(log: {child.log_path}):\n{child.log_tail()}')


def stop_children(children: list[Child], timeout: float = 10.0) -> list[str]:
    """SIGINT each child, then SIGTERM / SIGKILL if needed; return problems found."""
    problems = []
    for child in children:
        process = child.process
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            process.send_signal(sig)
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        code = process.wait()
        child.log_file.close()
        if code not in CLEAN_EXIT_CODES:
            problems.append(f'the {child.name} process ended with code {code} '
                            f'(log: {child.log_path})')
    return problems
