"""Every shell command and Python block of README.md and docs/*.md runs as written.

Each fenced ```bash / ```python block is run verbatim, in document order, in a fresh copy of the repository
(the files git tracks, as they are in the working tree) whose ``.venv`` is this test's virtual environment: a
newcomer's clone. A shell block runs line by line with bash; a Python block is written to a file and run with
``.venv/bin/python`` (``.venv/bin/chronompi mpirun`` for an MPI job). Every command has a timeout.

The shell is a new one: the README's shell commands run without ``.venv/bin`` on ``PATH`` until the README has
said ``source .venv/bin/activate`` in a block (then as after it), so a bare ``chronompi`` before that fails as it
does for a reader ("command not found"). The pages of ``docs/`` are read after the README: activated.

An HTML comment on the line before a block changes how it runs; it shows in the Markdown source:

- ``<!-- doc-test: mpirun -n N -->``: a Python block for an MPI job, run as ``chronompi mpirun -n N python FILE``;
- ``<!-- doc-test: file NAME -->``: the block is also saved as NAME (other commands of the doc run it);
- ``<!-- doc-test: skip REASON -->``: not run here, the test reports REASON (jobs for a cluster scheduler);
- ``<!-- doc-test: timeout S -->``: a longer timeout for each command of the block;
- ``<!-- doc-test: needs TOOL ... -->``: skipped with the reason when a tool is not installed (HDF5's ``h5ls``: a
  newcomer's machine may not have it; ``CHRONOMPI_REQUIRE_HDF5_TOOLS=1``, as CI sets it, makes that a failure).

Markers combine: ``<!-- doc-test: mpirun -n 4; file my_workflow.py -->``.

The Quickstart: line 2 *is* CI (``.ci/run`` runs it verbatim on a clean clone, after checking that it is
verbatim), so here it is skipped. Line 1 creates ``.venv`` and installs into it (CI's fresh clone does the same
install, with the test extra on top); here its last command, the demo run, is run with the installed venv.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import need_hdf5_tools

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LANGS = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
TIMEOUT = 300.0
MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    kind: str  # shell | python
    code: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_marker(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = part.partition(" ")
        out[key] = value.strip()
    return out


def blocks(doc: str) -> list[Block]:
    lines = (ROOT / doc).read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        kind = LANGS.get(m.group(1))
        if kind:
            marker = MARKER.match(lines[i - 1]) if i else None
            opts = parse_marker(marker.group(1)) if marker else {}
            out.append(Block(doc, i + 1, kind, "\n".join(lines[i + 1 : j]) + "\n", opts))
        i = j + 1
    return out


def test_every_block_is_found() -> None:
    """The extraction sees the blocks a reader sees (guards against a fence the parser would miss)."""
    for doc in DOCS:
        fences = [ln for ln in (ROOT / doc).read_text().splitlines() if ln.startswith("```")]
        tagged = [ln for ln in fences if ln[3:].strip() in LANGS]
        assert len(blocks(doc)) == len(tagged), doc
    assert sum(len(blocks(d)) for d in DOCS) >= 10


def checkout(dest: Path) -> None:
    """The tracked files of the repository as they are now, plus ``.venv`` -> this virtual environment."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    (dest / ".venv").symlink_to(Path(sys.prefix))


ACTIVATE = re.compile(r"^\s*(source|\.)\s+\.venv/bin/activate\s*(#.*)?$", re.MULTILINE)


def activated(b: Block) -> bool:
    """Whether ``.venv`` is active in the reader's shell when they come to block ``b`` (module docstring)."""
    if b.doc != "README.md":
        return True
    return any(e.kind == "shell" and ACTIVATE.search(e.code) for e in blocks(b.doc) if e.line < b.line)


def environment(active: bool = True) -> dict[str, str]:
    """The environment of a reader's shell: with ``.venv`` activated, or a new shell without it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHRONOMPI_", "PYTEST_", "SLURM_"))}
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [d for d in env.get("PATH", "").split(os.pathsep) if d and Path(d) != Path(venv_bin)]
    env.pop("VIRTUAL_ENV", None)
    if active:
        env["VIRTUAL_ENV"] = sys.prefix
        path.insert(0, venv_bin)
    env["PATH"] = os.pathsep.join(path)
    return env


def quickstart_command(line: str) -> str | None:
    """What of a Quickstart line runs here (see the module docstring); None: the line is CI itself."""
    if "pytest" in line:
        return None
    parts = line.split(" && ")
    assert parts[0] == "python3 -m venv .venv" and parts[1].startswith(".venv/bin/pip install"), line
    return " && ".join(parts[2:])


def shell_lines(code: str) -> list[str]:
    """Commands of a shell block: one a line, ``\\`` continuations joined, comment-only lines left out."""
    out, cur = [], ""
    for raw in code.splitlines():
        cur += raw
        if cur.endswith("\\"):
            cur = cur[:-1]
            continue
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur)
        cur = ""
    return out


def run(cmd: list[str], cwd: Path, timeout: float, what: str, active: bool = True) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, env=environment(active), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: no end after {timeout} s\n{exc.stdout}\n{exc.stderr}")
    assert r.returncode == 0, (
        f"{what}: exit status {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    )


def run_block(b: Block, cwd: Path) -> None:
    """Run one block in ``cwd``; pytest.skip with the doc's reason for a block marked skip."""
    if "skip" in b.options:
        pytest.skip(f"{b.id}: {b.options['skip'] or 'marked skip'}")
    need_hdf5_tools(b.options.get("needs", "").split(), f"{b.id}: ")
    timeout = float(b.options.get("timeout", TIMEOUT))
    if "file" in b.options:
        (cwd / b.options["file"]).write_text(b.code)
    if b.kind == "python":
        script = cwd / (b.options.get("file") or f"doc_block_{b.line}.py")
        script.write_text(b.code)
        if "mpirun" in b.options:
            cmd = [".venv/bin/chronompi", "mpirun", *shlex.split(b.options["mpirun"]), "--", "python", script.name]
        else:
            cmd = [".venv/bin/python", script.name]
        run(cmd, cwd, timeout, f"{b.id} (python block)", activated(b))
        return
    quick = b.doc == "README.md" and "Quickstart" in _heading(b) and b.line == _first_block_line(b)
    for line in shell_lines(b.code):
        command = quickstart_command(line) if quick else line
        if command is not None:
            run(["bash", "-c", command], cwd, timeout, f"{b.id}: {command}", activated(b))


def _first_block_line(b: Block) -> int:
    """The line of the first block under ``b``'s heading (the Quickstart's two lines; a block after them runs as
    written)."""
    return min(e.line for e in blocks(b.doc) if _heading(e) == _heading(b))


def _heading(b: Block) -> str:
    lines = (ROOT / b.doc).read_text().splitlines()[: b.line]
    return next((ln for ln in reversed(lines) if ln.startswith("#")), "")


def bare_chronompi(line: str) -> bool:
    """A shell line that runs ``chronompi`` found on ``PATH`` (not ``.venv/bin/chronompi``, not an argument of
    ``chronompi mpirun``, not inside quotes)."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "''", line)
    return re.search(r"(^|[;&|(]|\b(time|do|then|exec)\s)\s*chronompi\b", unquoted) is not None


def test_bare_chronompi_only_after_the_readme_activates_the_venv() -> None:
    """Quickstart installs into .venv without activating it; a new shell then said ``chronompi: command not
    found`` at the README's later commands. (Static: the same as running them, in a second.)"""
    readme = [b for b in blocks("README.md") if b.kind == "shell" and "skip" not in b.options]
    bare = [(b.id, ln) for b in readme for ln in shell_lines(b.code) if bare_chronompi(ln)]
    assert bare, "the check finds nothing to check"
    before = [(i, ln) for i, ln in bare if not activated(next(b for b in readme if b.id == i))]
    assert before == [], "a bare chronompi before the README says source .venv/bin/activate"
    assert bare_chronompi("chronompi ls s") and bare_chronompi("t=$(chronompi ls s)")
    assert not bare_chronompi(".venv/bin/chronompi mpirun -n 8 chronompi run") and not bare_chronompi('x="chronompi"')


ISO_TIME = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d")


def test_examples_take_their_times_from_the_store_they_read() -> None:
    """An example that replays a fixed date range finds nothing in the reader's own store, and says nothing
    (exit 0): every time range of a block that runs comes from the store it reads."""
    fixed = [(b.id, m.group(0)) for b in ALL if "skip" not in b.options for m in ISO_TIME.finditer(b.code)]
    assert fixed == []


ALL = [b for doc in DOCS for b in blocks(doc)]
# Blocks known not to run yet, by (document, heading): each an expected failure (strict: once fixed, the entry
# must go), named so that the owner of that section sees it.
KNOWN: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fresh copy of the repository per document; its blocks run there in order (a later block may use
    what an earlier one made, as a reader following the page does)."""
    out = {}
    for doc in DOCS:
        out[doc] = tmp_path_factory.mktemp("clone")
        checkout(out[doc])
    return out


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_doc_block_runs_as_written(block: Block, clones: dict[str, Path], request: pytest.FixtureRequest) -> None:
    known = KNOWN.get((block.doc, _heading(block)))
    if known:
        request.applymarker(pytest.mark.xfail(reason=f"{block.id}: {known}", strict=True))
    run_block(block, clones[block.doc])


def test_readme_names_every_extra_every_marker_it_uses_and_no_test_count() -> None:
    """The README's list of extras omitted ``mpich`` and ``perf``; its selections of tests must be markers that
    exist; a count of tests goes stale with the next test (it said 589 while pytest selected 597)."""
    import configparser
    import tomllib

    readme = (ROOT / "README.md").read_text()
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    extras = set(setup["options.extras_require"])
    listed = re.search(r"^Extras: (.*?)\n\n", readme, re.MULTILINE | re.DOTALL)
    assert listed, "the README lists the extras in a paragraph that begins with 'Extras: '"
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == extras
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = {m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]}
    used = re.findall(r"pytest -m \"?([\w ]+)\"?", readme)
    assert used and {w for expr in used for w in expr.split()} - {"and", "or", "not"} <= markers, used
    assert re.findall(r"(?<![-\w])\d[\d,]* (?:tests|passed)\b", readme) == []  # (not "kill -9 tests")
