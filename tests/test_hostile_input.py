"""Hostile DAG files through the real CLI in a subprocess: each is refused with exit 2 and a
``FILE:LINE:`` message naming the key, promptly and in little memory, and the store is unchanged.

Memory is the peak resident set of the ``mlcomp`` process, read by a small wrapper process whose
only child it is (``RUSAGE_CHILDREN``), so other tests' children do not count. The wall-clock
limit is only a hang guard; speed is not asserted.
"""
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MAX_RSS_MB = 200
HANG_GUARD_S = 60
MLCOMP = str(Path(sys.executable).parent / "mlcomp")

# runs ARGV, prints {"rc", "stderr", "maxrss_mb"} of that one child
WRAPPER = textwrap.dedent("""\
    import json, resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": done.returncode, "stderr": done.stderr, "maxrss_mb": peak_kb / 1024}))
""")

HEAD = "info: {name: hostile, project: p}\n"
BASH = "executors:\n  a: {type: bash, command: 'echo hi'%s}\n"
LAUGHS = HEAD + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10) if prev else ', '.join(['lol'] * 10)}]\n"
    for prev, name in zip([None, "a", "b", "c", "d", "e", "f", "g", "h"], "abcdefghi")
) + BASH % ", x: *i"

CASES = {
    # name: (text, line, fragments of the message)
    "billion laughs": (LAUGHS, 6, ["key 'e'", "100000 YAML nodes", "alias *d"]),
    "deep nesting": (HEAD + "x: " + "[" * 500 + "]" * 500 + "\n" + BASH % "", 2, ["key 'x'", "deeper"]),
    "recursive alias": (HEAD + "x: &x [1, *x]\n" + BASH % "", 2, ["key 'x'", "recursive", "*x"]),
    "huge file": (HEAD + "# " + "x" * (2 << 20) + "\n" + BASH % "", 1, ["larger than 1048576 bytes"]),
    "gpu 2^66": (HEAD + BASH % ", gpu: 99999999999999999999", 3, ["key 'executors.a.gpu'", "out of range"]),
    "gpu 1e20": (HEAD + BASH % ", gpu: 1e20", 3, ["key 'gpu'", "'1e20'"]),
    "memory inf": (HEAD + BASH % ", memory: .inf", 3, ["key 'executors.a.memory'", "finite"]),
    "grid of 10^6 cells": (HEAD + BASH % ", grid: [{i: '0-999'}, {j: '0-999'}]", 3,
                           ["key 'grid'", "1000000 cells", "at most 10000"]),
    "grid of 10^5 cells": (HEAD + BASH % ", grid: [{i: '0-99999'}]", 3, ["key 'grid'", "100000 values"]),
    "range of 10^18": (HEAD + BASH % ", grid: [{i: '0-999999999999999999'}]", 3, ["at most 10000 cells"]),
    "DAG grid times task grid": (HEAD + "grid: [{k: '1-200'}]\n" + BASH % ", grid: [{i: '0-99'}]", 2,
                                 ["20000 cells", "at most 10000"]),
}


def _counts(db) -> dict:
    with sqlite3.connect(db) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    """A root whose store holds one submitted DAG, and the environment to reach it."""
    root = tmp_path_factory.mktemp("hostile")
    env = {**os.environ, "MLCOMP_ROOT": str(root)}
    env.pop("MLCOMP_DB_URL", None)
    good = root / "good.yml"
    good.write_text(HEAD + BASH % "")
    done = subprocess.run([MLCOMP, "dag", "submit", str(good)], env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    return root, env


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_dag_file_is_refused_quickly_in_little_memory(cli_root, case):
    root, env = cli_root
    text, line, fragments = CASES[case]
    path = root / "hostile.yml"
    path.write_text(text)
    before = _counts(root / "mlcomp.db")
    done = subprocess.run([sys.executable, "-c", WRAPPER, MLCOMP, "dag", "submit", str(path)], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    result = json.loads(done.stdout)
    message = result["stderr"].strip()
    assert result["rc"] == 2, message
    assert message.startswith(f"Error: {path}:{line}:"), message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert result["maxrss_mb"] < MAX_RSS_MB, result
    assert _counts(root / "mlcomp.db") == before
