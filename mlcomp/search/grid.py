"""Grid expansion: a ``grid:`` value → the list of its cells (MLComp's grid format).

A grid is a list of rows (a mapping is read as one row per key). Each row gives options:

* ``key: [v1, v2]`` — one option per value; a scalar is one option;
* ``key: "0-4"`` — the integers 0…4 inclusive (only strings of the form ``int-int``, so
  ``"resnet-34"`` stays a string);
* a list of mappings — parameters that move together, one option per mapping;
* ``_folder: dir/`` — one option per YAML file in ``dir`` (relative to the expdir), its mapping;
* ``_file: [a.yml, b.yml]`` — one option per file, its mapping.

Rows combine as a Cartesian product (``itertools.product``); a cell's name joins its options'
names (``"lr=0.1 bs=32"``) in row order.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from mlcomp.errors import DagError
from mlcomp.yamlfile import read_yaml

__all__ = ["Cell", "expand_grid", "RANGE", "MAX_CELLS"]

MAX_CELLS = 10_000
"""The default cap on a grid's cells (the ``grid_max_cells`` setting)."""
RANGE = re.compile(r"^(-?\d+)-(\d+)$")
YAML_SUFFIXES = (".yml", ".yaml")

ErrorFactory = Callable[[Sequence, str], DagError]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid cell: its display ``name`` (``"k=v k2=v2"``) and parameter ``values``."""

    name: str
    values: dict[str, Any]


def _default_error(path: Sequence, message: str) -> DagError:
    return DagError(f"grid[{']['.join(map(str, path))}]: {message}")


def expand_grid(grid: Any, expdir: str | Path | None = None, error: ErrorFactory = _default_error,
                max_cells: int = MAX_CELLS) -> list[Cell]:
    """The cells of ``grid`` in product order (the last row varies fastest).

    Args:
        grid: the ``grid:`` value from YAML; ``None`` or empty gives no cells.
        expdir: the folder ``_folder``/``_file`` paths are relative to.
        error: builds the DagError for a path inside the grid (e.g. ``(0, "lr")``) and a message;
            submission passes one that prefixes ``FILE:LINE:``.
        max_cells: the most cells allowed; counted from the rows before any cell is built, so a
            grid of 10⁹ cells costs nothing to refuse.

    Raises:
        DagError: a malformed row (not a list, an empty list, a list mixing mappings and values,
            a reversed range, an unknown ``_`` key, a missing or non-mapping file), two rows
            setting the same key, two cells with the same name, or more than ``max_cells`` cells.
    """
    if grid is None:
        return []
    rows = _rows(grid, error)
    if not rows:
        raise error((), "the grid has no rows; allowed: 'key: [values]' rows, lists of mappings, _folder, _file")
    options = [_options(path, key, value, expdir, error, max_cells) for path, key, value in rows]
    count = math.prod(len(row) for row in options)
    if count > max_cells:
        raise error((), f"the grid has {count} cells; allowed: at most {max_cells} (setting grid_max_cells)")
    keys = [set().union(*(cell.values for cell in row)) for row in options]
    for (i, a), (j, b) in itertools.combinations(enumerate(keys), 2):
        if a & b:
            raise error(rows[j][0], f"rows {i + 1} and {j + 1} both set {sorted(a & b)[0]!r}")
    cells = [Cell(" ".join(part.name for part in combo if part.name),
                  {k: v for part in combo for k, v in part.values.items()})
             for combo in itertools.product(*options)]
    seen: dict[str, int] = {}
    for i, cell in enumerate(cells):
        if cell.name in seen:
            raise error((), f"cells {seen[cell.name] + 1} and {i + 1} have the same name {cell.name!r}")
        seen[cell.name] = i
    return cells


def _rows(grid: Any, error: ErrorFactory) -> list[tuple[tuple, str | None, Any]]:
    """(path, key, value) per row; ``key`` is None for a list of mappings."""
    if isinstance(grid, dict):
        return [((key,), key, value) for key, value in grid.items()]
    if not isinstance(grid, list):
        raise error((), f"got {grid!r}; allowed: a list of rows or a mapping of key to values")
    rows = []
    for i, item in enumerate(grid):
        if isinstance(item, dict) and item:
            rows.extend(((i, key), key, value) for key, value in item.items())
        elif isinstance(item, list):
            rows.append(((i,), None, item))
        else:
            raise error((i,), f"got {item!r}; allowed: a mapping 'key: [values]' or a list of mappings")
    return rows


def _options(path: tuple, key: str | None, value: Any, expdir, error: ErrorFactory, max_cells: int) -> list[Cell]:
    if key is None:
        return _together(path, value, error)
    if not isinstance(key, str):
        raise error(path, f"grid key {key!r}: allowed: a string")
    if key == "_folder":
        return _folder(path, value, expdir, error)
    if key == "_file":
        files = [value] if isinstance(value, str) else value
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise error(path, f"_file: got {value!r}; allowed: a file name or a non-empty list of them")
        return [_file_cell(path, f, expdir, error) for f in files]
    if key.startswith("_"):
        raise error(path, f"unknown special key {key!r}; allowed: _folder, _file")
    return [Cell(f"{key}={_text(v)}", {key: v}) for v in _values(path, key, value, error, max_cells)]


def _values(path: tuple, key: str, value: Any, error: ErrorFactory, max_cells: int) -> Sequence:
    if isinstance(value, str) and RANGE.match(value):
        low, high = map(int, RANGE.match(value).groups())
        if low > high:
            raise error(path, f"{key}: range {value!r} is empty; allowed: 'low-high' with low <= high")
        if high - low + 1 > max_cells:
            raise error(path, f"{key}: range {value!r} gives {high - low + 1} values; allowed: at most "
                              f"{max_cells} cells in a grid (setting grid_max_cells)")
        return range(low, high + 1)
    if isinstance(value, list):
        if not value:
            raise error(path, f"{key}: the list of values is empty")
        return value
    if isinstance(value, dict):
        raise error(path, f"{key}: got a mapping {value!r}; allowed: a list of values, a 'low-high' range or "
                          f"one value (a list of mappings moves several keys together)")
    return [value]


def _together(path: tuple, items: list, error: ErrorFactory) -> list[Cell]:
    if not items or not all(isinstance(item, dict) and item for item in items):
        raise error(path, f"got {items!r}; allowed: a non-empty list of non-empty mappings (keys that move "
                          f"together)")
    return [Cell(" ".join(f"{k}={_text(v)}" for k, v in item.items()), dict(item)) for item in items]


def _folder(path: tuple, value: Any, expdir, error: ErrorFactory) -> list[Cell]:
    root = Path(expdir or ".")
    folder = root / str(value)
    if not isinstance(value, str) or not folder.is_dir():
        raise error(path, f"_folder: got {value!r}, which is not a folder under {root}")
    files = sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    if not files:
        raise error(path, f"_folder: {value!r} has no .yml/.yaml files")
    return [_file_cell(path, str(p.relative_to(root)), expdir, error) for p in files]


def _file_cell(path: tuple, name: str, expdir, error: ErrorFactory) -> Cell:
    file = Path(expdir or ".") / name
    try:
        data = read_yaml(file, DagError, "grid file").data
    except DagError as e:
        raise error(path, f"grid file {name!r}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise error(path, f"grid file {name!r} must hold a non-empty mapping, got {type(data).__name__}")
    return Cell(f"_file={Path(name).as_posix()}", data)


def _text(value: Any) -> str:
    """A value as written in a cell name: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
