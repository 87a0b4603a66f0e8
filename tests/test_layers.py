"""The layer rules hold (.importlinter, checked by import-linter) and the checker bites."""
from __future__ import annotations

from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parent.parent


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    exe = shutil.which('lint-imports', path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail('lint-imports is missing: pip install -r requirements.txt (import-linter)')
    return subprocess.run([exe, '--config', str(config), '--no-cache'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_layer_contracts_hold() -> None:
    proc = lint_imports(REPO / '.importlinter')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert 'Contracts: 5 kept, 0 broken.' in proc.stdout


def test_a_broken_contract_fails(tmp_path: Path) -> None:
    """The same tool on a rule the code breaks (the runtime opens engines) reports it."""
    config = tmp_path / 'broken.ini'
    config.write_text('[importlinter]\nroot_packages =\n    ros_segcap\n\n'
                      '[importlinter:contract:x]\nname = runtime without backends\n'
                      'type = forbidden\nsource_modules =\n    ros_segcap.runtime\n'
                      'forbidden_modules =\n    ros_segcap.backends\n')
    proc = lint_imports(config)
    assert proc.returncode != 0
    assert 'ros_segcap.runtime -> ros_segcap.backends' in proc.stdout
