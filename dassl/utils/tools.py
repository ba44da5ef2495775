"""Small file-system and JSON helpers with Dassl's names and behaviour."""
from __future__ import annotations

import errno
import json
import os
import tempfile
import warnings
from typing import Any


def mkdir_if_missing(dirname: str) -> None:
    """Create ``dirname`` and its parents unless it already exists."""
    if not dirname:
        return
    try:
        os.makedirs(dirname, exist_ok=True)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


def check_isfile(fpath: str) -> bool:
    """Return whether ``fpath`` is a file; warn (like Dassl) when it is not."""
    isfile = os.path.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath: str) -> Any:
    """Read a JSON file."""
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj: Any, fpath: str) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file in the same folder, then rename)."""
    dirname = os.path.dirname(os.path.abspath(fpath))
    mkdir_if_missing(dirname)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=dirname)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=4, separators=(",", ": "))
        os.replace(tmp_path, fpath)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def listdir_nohidden(path: str, sort: bool = False) -> list[str]:
    """List the entries of ``path`` that do not start with a dot (sorted if ``sort``)."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def tolist_if_not(x: Any) -> list:
    """Wrap ``x`` in a list unless it already is one."""
    return x if isinstance(x, list) else [x]
