"""Consistency checks of a ``split_zhou_*.json`` file, run by ``protocol.read_split`` before any use.

A split whose labels and class names disagree trains prompts for the wrong names (or crashes much
later with an index error), so every problem is collected over train/val/test together and raised
as one ``SplitFileError`` that names the file and lists the offending entries:

* structure: every entry is ``[relative_path (str), label (int), classname (str)]``;
* one name per label and one label per name (the majority is taken as right, the rest listed);
* labels are exactly ``0..n-1`` for ``n`` distinct labels;
* names match the dataset's canonical names when its loader knows them (``CanonicalNames``);
* coverage: every class has entries in each of train, val and test (those not empty), no image is
  listed twice in one split, and no image is in both train (or val) and test:
  a class missing from train would shift the base/new cut and leave a class untrained, a
  duplicate makes a "2-shot" subset one image twice, an overlap grades the model on what it saw.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Optional

from dassl.utils.errors import UserError

MAX_LISTED = 10
SPLIT_KEYS = ("train", "val", "test")
FIX = (
    "replace it with CoOp's published split file for this dataset (see DATASETS.md) or regenerate it with "
    "tools/make_split.py (see DATASETS.md#checks-before-training)"
)


class SplitFileError(UserError, ValueError):
    """A split file is malformed or inconsistent; the message names the file and the entries."""


@dataclass(frozen=True)
class CanonicalNames:
    """The class names a loader knows independently of the split file.

    ``by_label``: label -> name (e.g. from ``cat_to_name.json``); only labels used by the split are
    compared. ``from_folders``: an entry's name must be ``rename.get(folder, folder)`` of the first
    component of its relative path (DTD, Food101, Caltech101, EuroSAT, UCF101). ``source`` says
    where the names come from, for the message.
    """

    source: str
    by_label: Optional[Mapping[int, str]] = None
    from_folders: bool = False
    rename: Mapping[str, str] = field(default_factory=dict)


def _ref(key: str, index: int, entry) -> str:
    return f"{key}[{index}] {json.dumps(entry, ensure_ascii=False)}"


def _section(header: str, refs: list[str]) -> str:
    lines = [f"{header}:"] + [f"  {r}" for r in refs[:MAX_LISTED]]
    if len(refs) > MAX_LISTED:
        lines.append(f"  ... and {len(refs) - MAX_LISTED} more")
    return "\n".join(lines)


def _raise(filepath: str, sections: list[str]) -> None:
    body = "\n".join(sections)
    raise SplitFileError(f"Split file {filepath} is inconsistent:\n{body}\nFix: {FIX}")


def _is_label(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_structure(filepath: str, split: dict) -> None:
    """Every entry of train/val/test is ``[str, int, str]``; else one error listing the bad ones."""
    bad = []
    for key in SPLIT_KEYS:
        entries = split[key]
        if not isinstance(entries, list):
            kind = type(entries).__name__
            _raise(filepath, [f"'{key}' must be a list of [relative_path, label, classname], got {kind}"])
        for i, entry in enumerate(entries):
            ok = isinstance(entry, list) and len(entry) == 3
            if not (ok and isinstance(entry[0], str) and _is_label(entry[1]) and isinstance(entry[2], str)):
                bad.append(_ref(key, i, entry))
    if bad:
        header = f"{len(bad)} entries are not [relative_path (str), label (int), classname (str)]"
        _raise(filepath, [_section(header, bad)])


def _majority_conflicts(flat: list, key_at: int, value_at: int, header) -> list[str]:
    """Sections for keys (labels or names) seen with more than one value (names or labels).

    The most frequent value is taken as right; ``header(key, counts, main)`` titles the section.
    """
    seen: dict = defaultdict(Counter)
    for _, _, entry in flat:
        seen[entry[key_at]][entry[value_at]] += 1
    sections = []
    for key, counts in seen.items():
        if len(counts) < 2:
            continue
        main = counts.most_common(1)[0][0]
        refs = [_ref(k, i, e) for k, i, e in flat if e[key_at] == key and e[value_at] != main]
        sections.append(_section(header(key, counts, main), refs))
    return sections


def _counts(counts: Counter) -> str:
    return ", ".join(f"{v!r} x{n}" for v, n in counts.most_common())


def check_consistency(filepath: str, split: dict) -> dict[int, str]:
    """One name per label, one label per name, labels ``0..n-1``; returns label -> (majority) name."""
    flat = [(key, i, e) for key in SPLIT_KEYS for i, e in enumerate(split[key])]
    sections = _majority_conflicts(
        flat, 1, 2,
        lambda label, c, main: f"label {label} has {len(c)} class names ({_counts(c)}); entries not named {main!r}",
    )
    sections += _majority_conflicts(
        flat, 2, 1,
        lambda name, c, main: f"class name {name!r} has {len(c)} labels ({_counts(c)}); entries not labelled {main}",
    )
    labels = sorted({e[1] for _, _, e in flat})
    n = len(labels)
    if labels and (labels[0] != 0 or labels[-1] != n - 1):
        missing = sorted(set(range(max(labels[-1], 0) + 1)) - set(labels))
        refs = [_ref(k, i, e) for k, i, e in flat if not 0 <= e[1] < n]
        gap = f", missing {missing[:MAX_LISTED]}{' ...' if len(missing) > MAX_LISTED else ''}" if missing else ""
        sections.append(_section(
            f"labels must be 0..{n - 1} for {n} distinct labels, found {labels[0]}..{labels[-1]}{gap}; entries outside",
            refs,
        ))
    if sections:
        _raise(filepath, sections)
    return {e[1]: e[2] for _, _, e in flat}


def check_canonical(filepath: str, split: dict, names: dict[int, str], canonical: CanonicalNames) -> None:
    """The split's names equal ``canonical``'s; one error listing every difference."""
    diffs = []
    if canonical.by_label is not None:
        for label in sorted(names):
            expected = canonical.by_label.get(label)
            if expected != names[label]:
                shown = f"{expected!r}" if expected is not None else "no such label"
                diffs.append(f"label {label}: {names[label]!r} in the split, {shown} in {canonical.source}")
    if canonical.from_folders:
        groups: dict = {}
        for key in SPLIT_KEYS:
            for i, (relpath, _, name) in enumerate(split[key]):
                folder = relpath.replace("\\", "/").lstrip("/").split("/")[0]
                expected = canonical.rename.get(folder, folder)
                if name != expected:
                    first, count = groups.get((folder, name), (f"{key}[{i}]", 0))
                    groups[(folder, name)] = (first, count + 1)
        for (folder, name), (first, count) in groups.items():
            expected = canonical.rename.get(folder, folder)
            diffs.append(f"folder {folder!r}: {name!r} in {count} entries (first {first}), expected {expected!r}")
    if diffs:
        _raise(filepath, [_section(f"{len(diffs)} class names differ from {canonical.source}", diffs)])


def check_coverage(filepath: str, split: dict, names: dict[int, str]) -> None:
    """Every class in each split that has entries, no duplicate image within a split, no image
    shared by train or val and test; one error listing every problem."""
    sections = []
    for key in SPLIT_KEYS:
        if not split[key]:
            continue
        missing = sorted(set(names) - {e[1] for e in split[key]})
        if missing:
            sections.append(_section(f"{len(missing)} classes have no '{key}' entry",
                                     [f"label {label} {names[label]!r}" for label in missing]))
        seen: dict[str, int] = {}
        dups = []
        for i, entry in enumerate(split[key]):
            if entry[0] in seen:
                dups.append(f"{_ref(key, i, entry)} (also {key}[{seen[entry[0]]}])")
            seen.setdefault(entry[0], i)
        if dups:
            sections.append(_section(f"{len(dups)} '{key}' entries list an image already listed", dups))
    test_paths = {e[0]: i for i, e in enumerate(split["test"])}
    for key in ("train", "val"):
        shared = [f"{_ref(key, i, e)} (also test[{test_paths[e[0]]}])" for i, e in enumerate(split[key])
                  if e[0] in test_paths]
        if shared:
            sections.append(_section(f"{len(shared)} '{key}' images are also test images", shared))
    if sections:
        _raise(filepath, sections)


def check_split(filepath: str, split: dict, canonical: Optional[CanonicalNames] = None) -> None:
    """All checks of this module, in order; raises ``SplitFileError`` on the first failing group."""
    check_structure(filepath, split)
    names = check_consistency(filepath, split)
    if canonical is not None:
        check_canonical(filepath, split, names, canonical)
    check_coverage(filepath, split, names)


def folder_classnames(image_dir: str, rename: Optional[Mapping[str, str]] = None) -> CanonicalNames:
    """Canonical names of a ``<image_dir>/<class folder>/<image>`` dataset: the (renamed) folder names."""
    return CanonicalNames(source=f"the class folders of {image_dir}", from_folders=True, rename=dict(rename or {}))
