"""A small reader of ./Dockerfile for the image tests: stages, their instructions, and the build order.

Only what tests/deploy/test_images.py needs: line continuations, comments, ``ARG`` defaults before the
first ``FROM`` (substituted in ``FROM``), ``FROM image AS name``, ``COPY [--from=stage] [--chmod=..] src.. dst``
and the stage a target depends on (``FROM <stage>`` and ``COPY --from=<stage>``).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Instruction", "Stage", "parse_dockerfile", "stages_for"]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-case instruction name (``RUN``, ``COPY``, ...)."""
    args: str
    """Everything after the keyword, continuation lines joined with single spaces."""
    line: int
    """1-based line of the instruction's first line in the Dockerfile."""

    def words(self) -> list[str]:
        """``args`` as shell words, or the JSON (exec) form's list."""
        text = self.args.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return shlex.split(text)

    def flags(self) -> dict[str, str]:
        """``--name=value`` flags at the start of ``args`` (COPY --from=..., --chmod=...)."""
        out: dict[str, str] = {}
        for word in self.words():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    def operands(self) -> list[str]:
        """``words()`` without the leading ``--flags``."""
        words = self.words()
        while words and words[0].startswith("--"):
            words.pop(0)
        return words


@dataclass
class Stage:
    name: str
    base: str
    """The ``FROM`` image (ARG defaults substituted) or the name of an earlier stage."""
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


_ARG_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, joined text) of each instruction; comments and blank lines dropped."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        out.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        out.append((start, " ".join(pending)))
    return out


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    """The stages of ``path`` by name (unnamed stages get their index as name), in file order."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for number, line in _logical_lines(Path(path).read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            image = _ARG_REF.sub(lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=image)
            stages[name] = current
        elif current is None:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip()
        else:
            current.instructions.append(Instruction(keyword, args, number))
    return stages


def stages_for(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages building ``target`` (its own included), each after the stages it needs."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        stage = stages[name]
        needs = [stage.base] if stage.base in stages else []
        needs += [c.flags()["from"] for c in stage.all("COPY") if c.flags().get("from") in stages]
        for need in needs:
            visit(need)
        order.append(name)

    visit(target)
    return [stages[name] for name in order]
