"""Small file and error helpers shared by every layer: one-line errors, JSON objects read with
a one-line reason, and atomic writes whose files get the umask's mode."""
from __future__ import annotations

import json
import os
from pathlib import Path
import secrets
import stat
from typing import Any, Callable


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, at most `limit` characters."""
    lines = [ln.strip() for ln in str(exc).strip('"').splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path`; ValueError ('is not readable JSON (...)' or 'must hold a
    JSON object, not a list') for anything else. Callers put the file's name in front."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f'is not readable JSON ({one_line(exc)})') from None
    if not isinstance(data, dict):
        raise ValueError(f'must hold a JSON object, not a {type(data).__name__}')
    return data


def atomic_write(target: str | Path, write: Callable[[str], Any]) -> None:
    """write(tmp_path) next to target, then rename over it, so readers never see half a file.

    The file gets the umask's mode (0644 under umask 022), not the 0600 of mkstemp or
    safetensors, so a node running as another user can read it.
    """
    target = Path(target)
    tmp = _new_file(target)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what os.open(0o666) got from the umask
    try:
        write(str(tmp))
        os.chmod(tmp, mode)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file(target: Path) -> Path:
    """A new empty file next to target, created with mode 0666 minus the umask."""
    for _ in range(100):
        tmp = target.parent / f'.{target.name}.{secrets.token_hex(4)}'
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f'cannot create a temporary file next to {target}')
