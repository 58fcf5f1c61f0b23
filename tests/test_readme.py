"""README.md's command blocks: the runnable ones run as written, and every command and option in any block exists.

A fenced ```bash block on the line right after `<!-- runnable -->` is run in a fresh temporary folder with
`bash -e -o pipefail`, `facebatch` (and `python`) resolving to this venv's scripts, one torch thread and no
network. The first runnable block runs in the default suite; the others are slow (`-m slow`). Every bash
block, runnable or not, is also checked without running it: each `facebatch ...` names a command that
exists and only options that command has, so a renamed option cannot linger in the README.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNABLE = "<!-- runnable -->"
MIN_RUNNABLE = 8  # the workflow blocks marked today; deleting markers must not quietly shrink the check
SETUP_HEADING = "## Set up"
SETUP_COMMANDS = ["make demo", "make test"]


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    heading: str  # the nearest heading above it
    text: str
    runnable: bool

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.heading.lstrip('# ')})"


def bash_blocks(markdown: str) -> list[Block]:
    """Every fenced ```bash block, with the heading above it and whether `<!-- runnable -->` is the line before."""
    lines = markdown.splitlines()
    blocks, heading, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            assert end is not None, f"README.md:{i + 1}: a code fence is never closed"
            if line.strip() == "```bash":
                runnable = i > 0 and lines[i - 1].strip() == RUNNABLE
                blocks.append(Block(i + 1, heading, "\n".join(lines[i + 1 : end]) + "\n", runnable))
            i = end + 1
            continue
        if line.startswith("#"):
            heading = line.strip()
        i += 1
    return blocks


BLOCKS = bash_blocks(README.read_text(encoding="utf-8"))
RUN_BLOCKS = [b for b in BLOCKS if b.runnable]


def command_lines(block: Block) -> list[list[str]]:
    """The block's shell lines as tokens, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", block.text)
    out = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens:
            out.append(tokens)
    return out


def test_readme_marks_enough_runnable_blocks():
    assert len(RUN_BLOCKS) >= MIN_RUNNABLE, (
        f"README.md has {len(RUN_BLOCKS)} blocks marked {RUNNABLE}, expected at least {MIN_RUNNABLE}"
    )


def test_readme_setup_is_exactly_make_demo_and_make_test():
    setup = [b for b in BLOCKS if b.heading == SETUP_HEADING]
    assert setup, f"README.md has no bash block under {SETUP_HEADING!r}"
    commands = [" ".join(tokens) for tokens in command_lines(setup[0])]
    assert commands == SETUP_COMMANDS


def test_readme_blocks_need_no_shared_folder():
    for block in BLOCKS:
        assert "../shared" not in block.text, f"{block.name} uses ../shared, which a fresh clone does not have"


def _click_root():
    import typer

    from facebatch.cli.app import app

    return typer.main.get_command(app)


def _invocations(tokens: list[str]):
    """Each `facebatch ...` in one shell line: the words up to the next shell operator."""
    for i, token in enumerate(tokens):
        if token == "facebatch" or token.endswith("/facebatch"):
            words = []
            for word in tokens[i + 1 :]:
                if word in ("&&", "||", ";", "|") or word.startswith((">", "<")):
                    break
                words.append(word)
            yield words


def _is_number(word: str) -> bool:
    """A value such as -3 or -3,-1.5,1.5,3 (augment's strengths), not an option."""
    try:
        [float(part) for part in word.split(",")]
    except ValueError:
        return False
    return True


def test_readme_commands_and_options_exist():
    root = _click_root()
    checked = 0
    for block in BLOCKS:
        for tokens in command_lines(block):
            for words in _invocations(tokens):
                command, path, rest = root, ["facebatch"], list(words)  # groups expose .commands (typer's own click)
                while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
                    sub = command.commands.get(rest[0])
                    assert sub is not None, f"{block.name}: `{' '.join(path)} {rest[0]}` is not a command"
                    command, path, rest = sub, [*path, rest.pop(0)], rest
                known = {"-h", "--help"}
                for param in command.params:
                    known.update(getattr(param, "opts", []))
                    known.update(getattr(param, "secondary_opts", []))
                for word in rest:
                    if word.startswith("-") and not _is_number(word):
                        option = word.split("=", 1)[0]
                        assert option in known, f"{block.name}: `{' '.join(path)}` has no option {option}"
                checked += 1
    assert checked >= 20, f"only {checked} facebatch commands found in README.md's bash blocks"


def _run(block: Block, tmp_path: Path) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    assert (scripts / "facebatch").exists(), f"no facebatch console script in {scripts}: install the package first"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "FACEBATCH_"))}
    env.update(
        PATH=f"{scripts}{os.pathsep}{env.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        FACEBATCH_OFFLINE="1",
        FACEBATCH_CACHE_DIR=str(tmp_path / "cache"),
    )
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "block.sh"
    script.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"{block.name} failed with exit {result.returncode}:\n{block.text}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )


@pytest.mark.parametrize("block", RUN_BLOCKS[:1], ids=lambda b: f"line{b.line}")
def test_readme_first_runnable_block_runs(block, tmp_path):
    _run(block, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN_BLOCKS[1:], ids=lambda b: f"line{b.line}")
def test_readme_runnable_block_runs(block, tmp_path):
    _run(block, tmp_path)
