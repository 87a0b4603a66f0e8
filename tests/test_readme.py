"""The README and docs against the code: facts that must not drift.

- the README opens with exactly the two commands for a fresh machine;
- its parameter table equals the node options of ros_segcap.core.options (name, default,
  live / restart), both ways;
- the topic, service and action names it gives exist in ros_segcap/ros/*.py, and the
  ros_segcap_msgs types it names exist in msg/;
- its Layout names every top-level folder, and every folder it names exists;
- every relative link in the README, docs/*.md, the model card and engines/README.md
  points to a file (and heading) that exists;
- none of those files reads like a diary (session numbers, notes about the dev machine).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ros_segcap.core.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
CARD = ROOT / 'ros_segcap' / 'weights' / 'segcap-tiny' / 'README.md'
DOCS = sorted([README, CARD, ROOT / 'engines' / 'README.md', *(ROOT / 'docs').glob('*.md')])
FIRST_COMMANDS = [
    '```bash',
    './scripts/demo.sh     # set up (.venv, pinned), then the ROS demo: camera -> node -> '
    '"segment the red cup" -> out/demo/overlay.png',
    './scripts/test.sh     # set up (.venv, pinned), then the whole test suite',
    '```',
]
DIARY = re.compile(r'session \d|dev machine|this VM', re.IGNORECASE)
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
TICKED = re.compile(r'`([^`]+)`')


def section(text: str, title: str) -> str:
    """Return the body of the `## title` section of a markdown text."""
    match = re.search(rf'^## {re.escape(title)}\n(.*?)(?=^## |\Z)', text, re.M | re.S)
    assert match, f'README has no "## {title}" section'
    return match.group(1)


def table_rows(text: str, header: str) -> list[list[str]]:
    """Return the cells of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append([cell.strip() for cell in line.strip('|').split('|')])
    return rows


def unticked(cell: str) -> str:
    match = TICKED.fullmatch(cell)
    assert match, f'expected a `code` cell, got {cell!r}'
    return match.group(1)


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert lines[0] == '# ros_segcap'
    body = [line for line in lines[1:] if line.strip()]
    assert body[:4] == FIRST_COMMANDS


def test_parameter_table_matches_the_node_options():
    rows = table_rows(README.read_text(), '| parameter |')
    readme = {unticked(name): (default, change) for name, default, change, _ in rows}
    code = {o.name: o for o in OPTIONS if 'node' in o.scopes}
    assert sorted(readme) == sorted(code), (
        f'README parameters missing from the code: {sorted(set(readme) - set(code))}; '
        f'node options missing from the README: {sorted(set(code) - set(readme))}')
    for name, (default, change) in readme.items():
        value = yaml.safe_load(unticked(default))
        want = code[name].default
        assert (type(value), value) == (type(want), want), \
            f'{name}: README default {value!r}, code {want!r}'
        assert change == ('live' if code[name].live else 'restart'), \
            f'{name}: README says {change}, code live={code[name].live}'


def test_ros_names_exist_in_the_node():
    rows = table_rows(section(README.read_text(), 'ROS 2'), '| kind |')
    source = '\n'.join(p.read_text() for p in (ROOT / 'ros_segcap' / 'ros').glob('*.py'))
    names = [name for _, cell, _ in rows for name in TICKED.findall(cell)]
    assert {'segcap/segment', 'segcap/segment_stream', 'segcap/result'} <= set(names)
    for name in names:
        assert f"'{name}'" in source, f'README names {name}, ros_segcap/ros/*.py does not'
    kinds = {kind for kind, _, _ in rows}
    assert {'subscribes', 'publishes', 'service', 'action'} == kinds


def test_message_types_exist():
    text = README.read_text()
    types = set(re.findall(r'ros_segcap_msgs/(\w+)', text))
    assert types, 'README names no ros_segcap_msgs type'
    defined = {p.stem for p in (ROOT / 'msg').glob('*/*') if p.suffix in
               ('.msg', '.srv', '.action')}
    assert types <= defined, f'not in msg/: {sorted(types - defined)}'


def tracked_top_folders() -> set[str]:
    try:
        out = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    return {line.split('/')[0] for line in out.splitlines()
            if '/' in line and not line.startswith('.') and (ROOT / line).exists()}


def test_layout_names_every_top_level_folder():
    layout = section(README.read_text(), 'Layout')
    named = set(re.findall(r'^([\w.-]+)/', layout, re.M))
    for folder in named:
        assert (ROOT / folder).is_dir(), f'Layout names {folder}/, which does not exist'
    missing = tracked_top_folders() - named
    assert not missing, f'Layout does not name: {sorted(missing)}'


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    for target in LINK.findall(doc.read_text()):
        if re.match(r'[a-z]+:', target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition('#')
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f'{doc.name}: link to {target}, which does not exist'
        if anchor and file.suffix == '.md':
            headings = re.findall(r'^#+ (.+)$', file.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, \
                f'{doc.name}: link to {target}, {file.name} has no such heading'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_diary(doc: Path):
    hits = [line for line in doc.read_text().splitlines() if DIARY.search(line)]
    assert not hits, f'{doc.name} describes the present, not a diary: {hits}'


REPO_PATH = re.compile(r'\b((?:ros_segcap|training|benchmarks|scripts|tests|config|launch|msg)'
                       r'/[\w./-]+\.(?:py|c|sh|yaml|xml|md|msg|srv|action))\b')


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(doc: Path):
    """Every repository file a doc names in its text (not only in links) exists."""
    missing = sorted({m for m in REPO_PATH.findall(doc.read_text())
                      if not (ROOT / m).exists()})
    assert not missing, f'{doc.name} names files that do not exist: {missing}'
