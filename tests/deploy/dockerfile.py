"""A reader of the project's Dockerfile and .dockerignore, enough for the deployment tests (no Docker engine here).

It knows the instructions the Dockerfile uses: stages and their bases, ENV, COPY, RUN, USER, EXPOSE, STOPSIGNAL,
HEALTHCHECK and the exec forms of ENTRYPOINT and CMD, with what a stage inherits from the stage it is built on.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

FLAG = re.compile(r"--([a-z-]+)=(\S+)\s+")


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, leading ``--flag=value`` options, and the rest of its text."""

    keyword: str
    flags: dict[str, str]
    value: str


@dataclass(frozen=True)
class Copy:
    """A COPY: sources (in the build context, or in another stage with ``--from``) and a destination."""

    sources: tuple[str, ...]
    destination: str
    stage: str | None


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def copies(self) -> list[Copy]:
        return [copy_of(instruction) for instruction in self.all("COPY")]


def copy_of(instruction: Instruction) -> Copy:
    *sources, destination = shlex.split(instruction.value)
    return Copy(tuple(sources), destination, instruction.flags.get("from"))


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def parse_instruction(line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    flags: dict[str, str] = {}
    rest = rest.strip() + " "
    while match := FLAG.match(rest):
        flags[match[1]] = match[2]
        rest = rest[match.end() :]
    return Instruction(keyword.upper(), flags, rest.strip())


def parse_env(value: str) -> dict[str, str]:
    pairs = shlex.split(value)
    assert all("=" in pair for pair in pairs), f"ENV in the legacy 'KEY value' form: {value}"
    return dict(pair.split("=", 1) for pair in pairs)


class Dockerfile:
    """The stages of a Dockerfile, with the global ARGs substituted into their FROM lines."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.args: dict[str, str] = {}
        self.stages: list[Stage] = []
        for line in logical_lines(text):
            instruction = parse_instruction(line)
            if instruction.keyword == "FROM":
                base, _, name = re.sub(r"\$\{(\w+)\}", lambda m: self.args[m[1]], instruction.value).partition(" AS ")
                self.stages.append(Stage(name.strip(), base.strip()))
            elif not self.stages and instruction.keyword == "ARG":
                key, _, default = instruction.value.partition("=")
                self.args[key] = default
            else:
                assert self.stages, f"{instruction.keyword} before the first FROM"
                self.stages[-1].instructions.append(instruction)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        return cls(path.read_text(encoding="utf-8"))

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def lineage(self, name: str) -> list[Stage]:
        """The stage and the stages it is built on, nearest first."""
        names = {s.name for s in self.stages}
        chain = [self.stage(name)]
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def root_image(self, name: str) -> str:
        return self.lineage(name)[-1].base

    def env(self, name: str) -> dict[str, str]:
        """The ENV a stage's containers start with (inherited ones included)."""
        result: dict[str, str] = {}
        for stage in reversed(self.lineage(name)):
            for instruction in stage.all("ENV"):
                result.update(parse_env(instruction.value))
        return result

    def last(self, name: str, keyword: str) -> Instruction | None:
        """The instruction in force for a stage: its own last one, else the one it inherits."""
        for stage in self.lineage(name):
            found = stage.all(keyword)
            if found:
                return found[-1]
        return None

    def exec_form(self, name: str, keyword: str) -> list[str]:
        instruction = self.last(name, keyword)
        assert instruction is not None, f"stage {name} has no {keyword}"
        value = json.loads(instruction.value)
        assert isinstance(value, list), f"{keyword} of {name} is not in exec form"
        return value

    def healthcheck(self, name: str) -> tuple[dict[str, str], list[str]]:
        """A stage's HEALTHCHECK options and its exec-form command."""
        instruction = self.last(name, "HEALTHCHECK")
        assert instruction is not None, f"stage {name} has no HEALTHCHECK"
        keyword, _, command = instruction.value.partition(" ")
        assert keyword == "CMD", f"HEALTHCHECK of {name} is not CMD: {instruction.value[:40]}"
        return instruction.flags, json.loads(command)


def ignore_patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or a folder above it, decides; ``!`` re-includes."""
    components = relative.split("/")
    prefixes = ["/".join(components[: i + 1]) for i in range(len(components))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def context_files(root: Path, source: str, patterns: list[str]) -> list[Path]:
    """The files of ``source`` (a file or folder in the build context) that the context really holds."""
    base = root / source
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    return [f for f in files if not is_ignored(f.relative_to(root).as_posix(), patterns)]
