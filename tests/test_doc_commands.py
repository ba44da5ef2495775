"""Every command shown in README.md, DATASETS.md and docs/*.md parses, so a reader who copies one
never meets ``unrecognized arguments`` or a script's usage line.

What counts as a shown command: each line of a ``` fence (not a ```python or ```yaml one; a
trailing ``\\`` joins lines, ``&&``, ``;`` and ``|`` separate commands, ``#`` starts a comment), and
each inline `code` span, whose first word (after ``VAR=value`` prefixes and ``do``) is ``python``,
``bash`` or a ``scripts/`` path with arguments.

How each is checked, without running it:

* ``python FILE ...`` and ``python -m MODULE ...`` are executed in this process as Python would
  (``runpy``), with argparse's ``parse_args`` (and a direct ``parse_known_args``, whose leftovers
  then count as unrecognized) replaced by one that stops right after a successful parse (``--help``
  stops the same way). Nothing after the parse runs, and nothing about an entry point's structure
  is assumed beyond "it parses its arguments with argparse before doing work"; the few that read
  ``sys.argv`` themselves have a rule in NO_ARGPARSE. As a safety net, a file written (outside the
  temporary folder) or a process started while a command runs stops it and fails the check. The
  trailing ``KEY VALUE`` pairs of ``train.py`` must name config keys.
* ``bash scripts/X.sh ...``: the script exists, its own usage line (``usage: $0 DATASET SEED
  [SHOTS] [KEY VALUE ...]``) is met: every positional is given, a DATASET is a file stem of
  ``configs/datasets/``, a SEED or SHOTS is a number, and the rest are ``KEY VALUE`` pairs of config
  keys. ``bash bench/gpu.sh`` takes ``--check``/``--check-only`` and then the flags of
  ``bench/bench_mmlop.py``.

Skipped, by rule: commands of other tools (``pip``, ``python -m pytest``, Slurm's), ``python -c``,
commands with a placeholder (``<...>``, ``[SHOTS]``, ``...``/``…``, an all-capitals word that is not a
trainer name and so stands for a value, as in ``DATASET SEED``, a ``$VARIABLE`` that neither its
fence sets before it nor is one of the scripts' DATA, SEED, OUTPUT and SHOTS), and commands that
use the trainer docs/ADDING_A_METHOD.md has you write (tests/test_trainer_methods.py runs those
with it). The TRAINER and CFG a script command sets must name a config folder and file.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import re
import runpy
import shlex
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_docs import NOT_IN_A_CLONE, PAGES, REPO

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")
PLACEHOLDER = re.compile(r"<[^>]*>|\[[A-Z][A-Z0-9_ .]*\]|\.\.\.|…")     # [SHOTS] is one, [0.5, 0.5] is not
CAPITALS = re.compile(r"^[A-Z][A-Z0-9_]*$")
NOT_OURS = ("pytest", "pip", "venv", "http.server", "submitit")    # python -m of another project
TRAINER_NAMES = {folder.name for folder in (REPO / "configs" / "trainers").iterdir()}
# Trainers that exist only once a reader follows docs/ADDING_A_METHOD.md (their configs are paths
# "not in a clone"); tests/test_trainer_methods.py runs that guide's commands with such a trainer.
GUIDE_TRAINERS = {path.split("/")[2] for path in NOT_IN_A_CLONE if path.startswith("configs/trainers/")}
# The scripts' variables, which a reader has set (pages use `--root $DATA` without an `export`).
SHELL_VALUES = {"DATA": "/path/to/datasets", "SEED": "1", "OUTPUT": "output", "SHOTS": "16"}


@dataclass(frozen=True)
class Shown:
    page: str
    line: int
    text: str          # the command as shown (one simple command)
    argv: tuple        # its words, as written
    variables: tuple = ()   # (name, value) set before it in its fence (`NAME=...`, `for SEED in 1 2`)

    def __str__(self):
        return f"{self.page}:{self.line}: {self.text}"


def _logical_lines(block: str, first_line: int):
    """(line number, text) of a fence's lines, continuations joined."""
    pending, start = "", first_line
    for offset, line in enumerate(block.splitlines()):
        if not pending:
            start = first_line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _simple_commands(line: str):
    """The simple commands of one shell line: split at ``&&``, ``||``, ``;``, ``|``; comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    try:
        for token in lexer:
            if token and set(token) <= set(";&|"):
                if words:
                    yield words
                words = []
            else:
                words.append(token)
    except ValueError:              # an unbalanced quote: not a shell command
        return
    if words:
        yield words


def _raw_words(text: str):
    """The words as written (variables not expanded), to recognize placeholders."""
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def _program(words):
    """Index of the program word after ``VAR=value`` prefixes and a loop's ``do``; None if none."""
    for i, word in enumerate(words):
        if ASSIGNMENT.match(word) or word in ("do", "then"):
            continue
        return i
    return None


def _is_ours(words) -> bool:
    i = _program(words)
    if i is None:
        return False
    program = words[i]
    if program == "python":
        return not (len(words) > i + 2 and words[i + 1] == "-m" and words[i + 2].split(".")[0] in NOT_OURS)
    if program == "bash":
        return True
    return program.startswith("scripts/") and not program.endswith("/") and len(words) > i + 1


def _shown_in(page: Path):
    """Every command of ours shown on ``page``, in fences and inline, with its line number."""
    text = page.read_text()
    name = str(page.relative_to(REPO))
    for match in FENCE.finditer(text):
        if match.group(1) in ("python", "yaml", "json", "text"):
            continue
        first = text.count("\n", 0, match.start(2)) + 1
        variables = {}
        for number, line in _logical_lines(match.group(2), first):
            yield from _commands(name, number, line, variables)
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)      # same line numbers
    for match in INLINE.finditer(prose):
        chunk = " ".join(match.group(1).split())                          # a span may wrap
        words = _raw_words(chunk)
        i = _program(words)
        if i is not None and (words[i] in ("python", "bash") or words[i].startswith("scripts/")):
            yield from _commands(name, prose.count("\n", 0, match.start()) + 1, chunk, {})


def _commands(page: str, number: int, line: str, variables: dict):
    """The commands of ours on one shell line; ``variables`` collects what the line sets."""
    for raw in _simple_commands(line.strip().removeprefix("$ ")):
        words = raw[1:] if raw[0] == "export" else raw
        if all(ASSIGNMENT.match(word) for word in words):
            variables.update(word.split("=", 1) for word in words)
        elif raw[0] == "for" and len(raw) > 3 and raw[2] == "in":
            variables[raw[1]] = raw[3]
        elif _is_ours(raw):
            yield Shown(page, number, shlex.join(raw), tuple(raw), tuple(variables.items()))


@functools.cache
def shown_commands() -> tuple:
    return tuple(command for page in PAGES for command in _shown_in(page))


def placeholder(command: Shown):
    """Why a command cannot be checked as shown (a placeholder stands in it), or None."""
    for word in command.argv:
        for trainer in GUIDE_TRAINERS:
            if re.search(rf"\b{trainer}\b", word, re.I):
                return f"{trainer} is the trainer the method guide has you write"
    words = command.argv[_program(command.argv):]
    if words[:2] == ("python", "-c"):
        return "python -c runs code, not an entry point"
    found = PLACEHOLDER.search(" ".join(words[1:]))        # across words: <cell folder>
    if found:
        return f"placeholder {found.group(0)!r}"
    for word in words[1:]:
        if CAPITALS.match(word) and word not in TRAINER_NAMES:
            return f"placeholder {word!r}"
        for variable in VARIABLE.findall(word):
            if variable not in SHELL_VALUES and variable not in dict(command.variables):
                return f"unset variable ${variable}"
    return None


def _expand(word: str, variables=()) -> str:
    values = {**SHELL_VALUES, **dict(variables)}
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), word)


# --- Python entry points: run up to their argument parsing, no further ---------------------------

class _Parsed(BaseException):
    """Raised by the patched ``parse_args`` once the arguments parsed: the command goes no further
    (a BaseException, so that an entry point's ``except Exception`` does not take it for a failure)."""

    def __init__(self, namespace):
        super().__init__("parsed")
        self.namespace = namespace


class _DidWork(BaseException):
    """Raised when a shown command writes a file or starts a process before its arguments parsed."""


_GUARD = []          # non-empty while a shown command runs
_WRITE_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree")
_PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork")


def _scratch(path) -> bool:
    """Writes Python itself makes while importing (bytecode caches) and temporary files."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        return True                                        # a file descriptor
    path = os.path.abspath(os.fsdecode(path))
    in_repo = path.startswith(str(REPO) + os.sep)         # a clone may itself lie in the temporary folder
    return "__pycache__" in path or path.startswith(tempfile.gettempdir()) and not in_repo


def _audit(event: str, args) -> None:
    """The safety net of the parse-only runs: an entry point that would do work before (or without)
    parsing with argparse is stopped at its first write or process instead of doing it."""
    if not _GUARD:
        return
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else \
            bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writes and not _scratch(path):
            raise _DidWork(f"writes {path} before its arguments are parsed")
    elif event in _WRITE_EVENTS and not _scratch(args[0]):
        raise _DidWork(f"{event} {args[0]} before its arguments are parsed")
    elif event in _PROCESS_EVENTS:
        raise _DidWork(f"starts a process ({event}) before its arguments are parsed")


sys.addaudithook(_audit)


# Scripts that replace themselves with ``python -m MODULE`` (os.execv) before parsing: checked as
# that module. ``scripts/sweep.py`` is named like the ``sweep`` package, so it cannot import it.
HANDED_OVER = {"scripts/sweep.py": "sweep.cli"}


def _entry(words):
    """(how Python would run it, the argv after it): ("path", file) or ("module", name)."""
    if words[0] == "-m":
        return ("module", words[1]), list(words[2:])
    if words[0] in HANDED_OVER:
        module = HANDED_OVER[words[0]]
        assert f'"-m", "{module}"' in (REPO / words[0]).read_text(), f"{words[0]} no longer runs {module}"
        return ("module", module), list(words[1:])
    return ("path", words[0]), list(words[1:])


def _run_until_parsed(entry, argv):
    """Run ``entry`` as ``python`` would with ``argv``, stopping after its argparse parse.
    Returns (namespace or None, error message or None)."""
    kind, target = entry
    parser_class = argparse.ArgumentParser
    original, original_known = parser_class.parse_args, parser_class.parse_known_args
    inside = []                      # non-empty while parse_args runs (it calls parse_known_args)

    def parse_args(self, args=None, namespace=None):
        inside.append(self)
        try:
            namespace = original(self, args, namespace)
        finally:
            inside.pop()
        raise _Parsed(namespace)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = original_known(self, args, namespace)
        if inside:
            return namespace, extras
        if extras:                   # an entry point that takes no unknown flags from the docs' commands
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise _Parsed(namespace)

    path = REPO / target
    if kind == "path" and not path.is_file():
        return None, f"{target} does not exist"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [target, *argv])
        patch.setattr(parser_class, "parse_args", parse_args)
        patch.setattr(parser_class, "parse_known_args", parse_known_args)
        if kind == "path":
            patch.syspath_prepend(str(path.parent))      # as `python FILE` does
        _GUARD.append(target)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if kind == "path":
                    runpy.run_path(str(path), run_name="__main__")
                else:      # a module other tests imported already: runpy warns, harmless for a parse
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
                        runpy.run_module(target, run_name="__main__", alter_sys=True)
        except _Parsed as parsed:
            return parsed.namespace, None
        except _DidWork as work:
            return None, str(work)
        except ImportError as exc:
            return None, f"cannot be run: {exc}"
        except SystemExit as stop:
            if stop.code in (0, None):                     # --help, or a listing
                return None, None
            said = (err.getvalue() or out.getvalue()).strip().splitlines() or [f"exit code {stop.code}"]
            return None, next((line for line in reversed(said) if "error" in line), said[-1])
        finally:
            _GUARD.pop()
    return None, "returned without parsing its arguments with argparse: give it a rule in NO_ARGPARSE"


@functools.cache
def _default_config():
    import trainers  # noqa: F401  (registers every trainer's TRAINER.<NODE> keys)
    from dassl.config import get_cfg_default

    return get_cfg_default()


def _bad_config_pairs(pairs) -> list:
    """What is wrong with trailing ``KEY VALUE`` pairs: an odd count, or a key the config lacks."""
    pairs = list(pairs)
    if len(pairs) % 2:
        return [f"KEY VALUE pairs expected, got an odd number of words: {pairs}"]
    problems = []
    for key in pairs[::2]:
        node = _default_config()
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                problems.append(f"{key} is not a config key")
                break
            node = node[part]
    return problems


def _published_tree(argv) -> list:
    """tests/published_tree.py reads ``sys.argv`` itself: ``ROOT`` or ``--example DIR``."""
    ok = len(argv) == 1 and not argv[0].startswith("-") or len(argv) == 2 and argv[0] == "--example"
    return [] if ok else [f"usage: tests/published_tree.py ROOT | --example DIR, got {argv}"]


NO_ARGPARSE = {("path", "tests/published_tree.py"): _published_tree}


def check_python(words) -> list:
    entry, argv = _entry(words)
    if entry in NO_ARGPARSE:
        return NO_ARGPARSE[entry](argv)
    namespace, error = _run_until_parsed(entry, argv)
    if error:
        return [error]
    if entry == ("path", "train.py") and namespace is not None:
        return _bad_config_pairs(namespace.opts or [])
    return []


# --- bash scripts: their usage line -----------------------------------------------------------------

USAGE = re.compile(r'usage: \$0 ([^"]*)"')


def _positional_problem(name: str, value: str):
    if name == "DATASET" and not (REPO / "configs" / "datasets" / f"{value}.yaml").is_file():
        return f"DATASET {value!r} is not a file stem of configs/datasets/"
    if name in ("SEED", "SHOTS") and not value.isdigit():
        return f"{name} {value!r} is not a number"
    return None


def _environment_problems(assignments: dict) -> list:
    trainer, cfg = assignments.get("TRAINER"), assignments.get("CFG")
    folder = REPO / "configs" / "trainers" / (trainer or "MMLoP")
    if trainer and not folder.is_dir():
        return [f"TRAINER={trainer}: no configs/trainers/{trainer}/"]
    if cfg and not (folder / f"{cfg}.yaml").is_file():
        return [f"CFG={cfg}: no {folder.relative_to(REPO)}/{cfg}.yaml"]
    return []


def check_bash(words, assignments) -> list:
    script, argv = words[0], list(words[1:])
    path = REPO / script
    if not path.is_file():
        return [f"{script} does not exist"]
    if script == "bench/gpu.sh":                            # --check/--check-only, then bench_mmlop.py's flags
        if argv[:1] in (["--check"], ["--check-only"]):
            argv = argv[1:]
        return check_python(["bench/bench_mmlop.py", "--device", "cuda", *argv])
    usage = USAGE.findall(path.read_text())
    if not usage:
        return [f"{script} has no usage line to check its arguments against"]
    problems = _environment_problems(assignments)
    names = usage[0].split()
    for name in names:
        if name.startswith("[KEY"):
            break
        optional = name.startswith("[")
        name = name.strip("[]")
        if not argv or optional and not argv[0].isdigit():
            if not optional:
                problems.append(f"missing {name} (usage: {script} {usage[0]})")
            continue
        problem = _positional_problem(name, argv[0])
        if problem:
            problems.append(problem)
        argv.pop(0)
    return problems + _bad_config_pairs(argv)


def check(command: Shown) -> list:
    """What is wrong with a shown command (empty when it parses)."""
    i = _program(command.argv)
    assignments = dict(word.split("=", 1) for word in command.argv[:i] if "=" in word)
    words = [_expand(word, command.variables) for word in command.argv[i:]]
    if words[0] == "python":
        return check_python(words[1:])
    if words[0] == "bash":
        return check_bash(words[1:], assignments)
    if words[0].endswith(".py"):                            # scripts/X.py run directly
        return check_python(words)
    return check_bash(words, assignments)     # scripts/X.sh run directly


# --- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shown_command_parses(page):
    name = str(page.relative_to(REPO))
    broken = []
    for command in shown_commands():
        if command.page == name and not placeholder(command):
            broken += [f"{command}\n    -> {problem}" for problem in check(command)]
    assert not broken, "commands that would not run as shown:\n" + "\n".join(broken)


def _one(line: str) -> Shown:
    (command,) = _commands("example.md", 1, line, {})
    return command


@pytest.mark.parametrize("line, expected", [
    ("python train.py --root data --trainerr MMLoP", "unrecognized arguments: --trainerr"),
    ("python train.py --root data --seed one", "--seed: invalid int value: 'one'"),
    ("python train.py --root data --trainer MMLoP DATASET.NUM_SHOT 16", "DATASET.NUM_SHOT is not a config key"),
    ("python scripts/sweep.py --protocol base2new --gpu-list 0,1", "unrecognized arguments: --gpu-list"),
    ("python bench/bench_pipeline.py --rounds 3 --nn 5", "unrecognized arguments: --nn"),
    ("python -m mmlop sweeps --status", "unknown command 'sweeps'"),
    ("python tools/make_splits.py --root data", "tools/make_splits.py does not exist"),
    ("python -m clip.modelz --help", "cannot be run: No module named clip.modelz"),
    ("bash scripts/base2new_train.sh dtd", "missing SEED"),
    ("bash scripts/base2new_train.sh textures 1", "DATASET 'textures' is not a file stem of configs/datasets/"),
    ("bash scripts/few_shot.sh dtd 1 16 TRAINER.PROMPTSRC.GPA_MEANS 45.0", "GPA_MEANS is not a config key"),
    ("TRAINER=IVLP CFG=vit_b16_ep5 bash scripts/base2new_train.sh dtd 1", "CFG=vit_b16_ep5: no configs/trainers/IVLP"),
    ("bash bench/gpu.sh --check --repz 50", "unrecognized arguments: --repz"),
])
def test_a_typo_in_a_shown_command_is_caught(line, expected):
    problems = check(_one(line))
    assert any(expected in problem for problem in problems), problems


def test_correct_commands_pass_and_help_counts_as_parsed():
    for line in ("python train.py --help", "python -m mmlop --help", "python -m clip.models",
                 "TRAINER=PromptSRC bash scripts/few_shot.sh dtd 1 16 TRAINER.PROMPTSRC.GPA_MEAN 45.0",
                 "bash scripts/xd_train.sh 1", "python scripts/sweep.py --table output --compare published"):
        assert check(_one(line)) == [], line


@pytest.mark.parametrize("line, reason", [
    ("python train.py ... --eval-only", "placeholder '...'"),
    ("bash scripts/base2new_train.sh DATASET SEED", "placeholder 'DATASET'"),
    ("python -m mmlop <command>", "placeholder '<command>'"),
    ("python parse_test_res.py <cell folder> --test-log", "placeholder '<cell folder>'"),
    ("python scripts/sweep.py --table [ROOT]", "placeholder '[ROOT]'"),
    ("bash scripts/base2new_train.sh dtd 1 MODEL.BACKBONE.NAME $NAME", "unset variable $NAME"),
    ("TRAINER=ToyPrompt bash scripts/base2new_train.sh dtd 1", "ToyPrompt is the trainer the method guide"),
])
def test_placeholders_are_skipped_by_the_stated_rule(line, reason):
    assert reason in (placeholder(_one(line)) or "")


def test_commands_are_found_in_fences_loops_chains_and_inline_code():
    lines = list(_logical_lines("for S in 7 8; do\n  bash scripts/xd_train.sh ${S}  # train\ndone\nexport ROOT=/d\n"
                                "python train.py --root $ROOT \\\n  --seed 1 && python parse_test_res.py out\n", 10))
    variables = {}
    commands = [command for number, line in lines for command in _commands("x.md", number, line, variables)]
    assert [(c.line, c.argv) for c in commands] == [
        (11, ("bash", "scripts/xd_train.sh", "${S}")),
        (14, ("python", "train.py", "--root", "$ROOT", "--seed", "1")),
        (14, ("python", "parse_test_res.py", "out"))]
    assert [_expand(word, commands[0].variables) for word in commands[0].argv] == ["bash", "scripts/xd_train.sh", "7"]
    assert _expand(commands[1].argv[3], commands[1].variables) == "/d" and not placeholder(commands[1])
    assert placeholder(_one("python train.py --root $ROOT")) == "unset variable $ROOT"
    checked = [c for c in shown_commands() if not placeholder(c)]
    programs = {c.argv[_program(c.argv) + 1] for c in checked}
    assert len(checked) >= 60 and {"train.py", "scripts/sweep.py", "scripts/base2new_train.sh", "demo.py",
                                   "bench/bench_mmlop.py", "bench/gpu.sh"} <= programs, sorted(programs)


def test_a_command_that_would_work_before_parsing_is_stopped_not_run(tmp_path):
    probe = REPO / "output_doc_commands_probe"
    script = tmp_path / "eager.py"
    script.write_text(f"import subprocess, sys\nif sys.argv[1:] == ['--spawn']:\n    subprocess.run(['true'])\n"
                      f"open({str(probe)!r}, 'w').write('ran')\n")
    assert check_python([str(script)]) == [f"writes {probe} before its arguments are parsed"]
    assert not probe.exists()
    assert check_python([str(script), "--spawn"]) == [
        "starts a process (subprocess.Popen) before its arguments are parsed"]
