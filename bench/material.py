"""Tries real Catalyst 20.x experiments and MLComp's example DAGs with mlcomp, as a new user would.

    python bench/material.py --catalyst DIR --mlcomp DIR [--tags v20.02,v20.05,...] [--only PATTERN]
                             [--json OUT] [--md OUT] [--timeout S] [--dag-timeout S] [--keep DIR]
                             [--extra-path DIR] [--list]
    python bench/material.py --from-json OUT [--md MD]     # re-render the report of a run

It is not one of the Makefile's BENCHMARKS: it needs the two checkouts. ``--only`` takes an
fnmatch pattern or a substring of ``TAG:SCRIPT#N COMMAND`` (``v20.12:check_dl_cv.sh#3 *``) or
``mlcomp:EXAMPLE`` (``mlcomp:digit-recognizer/train.yml``); a case may need the cases before it in
its script (a resumed or inferring run reads the logdir of the one before). ``--keep DIR`` keeps
each case's ``script.sh`` (exactly what ran), ``output.txt`` and ``case.err`` (mlcomp's stderr).
``--extra-path DIR`` puts optional packages a user would install on the runs' ``PYTHONPATH``
(``pip install --target DIR albumentations opencv-python-headless pandas``, leaving the project's
environment as it is): the albumentations extra of the README, pandas and cv2 for MLComp's examples.

``DIR`` is a git directory (a bare mirror, or a checkout's ``.git``) or a plain checkout. From a git
directory each tag (``--tags``, default the five 20.x tags; MLComp: ``HEAD``) is extracted into a
temporary folder, blob by blob (a mirror with missing objects loses only those files, which are
listed); a plain checkout is copied and used as it is (one "tag" named ``checkout``).

**Catalyst.** Every ``bin/tests/*.sh`` of a tag is read; each ``catalyst-dl run`` /
``python catalyst/dl/scripts/run.py`` (and ``tune``) command is one case. It is run as
``mlcomp run`` (``mlcomp tune``) with the same flags and environment prefix (``PYTHONPATH=...``), the
script's shell variables (``EXPDIR``, ``LOGDIR``, ...) and functions (``check_num_files``, ...) in
effect, from the tag's root, in the script's order (a later case may use an earlier one's logdir,
as in CI), with a per-case timeout. The tag's own ``catalyst/`` package is removed from the
extracted copy, so ``.`` on ``PYTHONPATH`` does not bring Catalyst back: ``catalyst.*`` must come
from mlcomp's compat hook. A case "ran unchanged" when the command exits 0; the CI script's lines
that follow it up to the next case (``_metrics.json`` checks, file and line counts, ``trace``)
then run with ``set -e`` and are reported separately ("checks"). Their ``python -c`` snippets get
``bench/material_standin/assertshim`` (``catalyst.utils.load_config``, ``safitty``) on their path
only; ``pip`` lines do nothing; ``trace.py`` becomes ``mlcomp trace``; a command the script runs in
the background and kills after ``sleep 30`` (the LR finder) runs 30 s and passes if it was still
running or exited 0. Commands under ``if [[ $REQUIREMENTS == latest ]]`` run too (noted).
Skipped, with the reason listed: RL scripts (``catalyst-rl``, gym), NLP (downloaded transformers
models), the docs build, scripts with no run/tune command (settings, contrib data), and cases
whose data the CI downloaded (ISBI, segmentation).

**MLComp.** Every DAG file (a YAML with ``info:`` and ``executors:`` or ``pipes:``) under
``examples/`` is submitted with ``mlcomp dag submit FILE --wait --gpus 0,1`` (the DAGs ask for
``gpu: 1`` or ``2-4``: two GPU slots are declared, the runner uses the CPU) from its folder, in a
fresh ``MLCOMP_ROOT`` (SQLite, embedded local worker) with a timeout. Task processes inherit the
submitting process's environment, so the torchvision stand-in reaches them through ``PYTHONPATH``.
Kaggle's digit-recognizer files do not exist here: a synthetic ``train.csv`` (``label``,
``pixel0``..``pixel783``), ``test.csv``, ``sample_submission.csv`` and ``fold.csv`` are written to
the project's data folder (``$MLCOMP_ROOT/data/examples``) and to ``data/`` next to the DAG file.

Everything runs with ``bench/material_standin`` on ``PYTHONPATH``: a torchvision stand-in that
serves random images, since nothing downloads here (see its README).

Output: a table (case, tag or example, command, result), the counts, the failures grouped by their
first error line; ``--json OUT`` writes every case as JSON, ``--md OUT`` the report as Markdown
(rewritten after every case, so a long run can be read while it goes).
"""
from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "material_standin"
ASSERT_SHIM = STANDIN / "assertshim"
TAGS = ["v20.02", "v20.05", "v20.08", "v20.10", "v20.12"]

RUN_RE = re.compile(r"(?:python3?\s+(?:\./)?catalyst/dl/scripts/(run|tune)\.py|catalyst-dl\s+(run|tune))(?=\s|$)")
TRACE_RE = re.compile(r"(?:python3?\s+(?:\./)?catalyst/dl/scripts/trace\.py|catalyst-dl\s+trace)(?=\s|$)")
OTHER_SCRIPT_RE = re.compile(r"python3?\s+(?:\./)?catalyst/dl/scripts/(quantize|swa)\.py")
ASSIGN_RE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S*)$")
SCRIPT_SKIPS = [  # (pattern on the script's name or text, reason)
    (r"check_(ddpg|dqn|ppo|reinforce|sac|td3)\.sh$", "RL (catalyst-rl, gym): not part of mlcomp"),
    (r"nlp", "NLP: needs transformers models downloaded from Hugging Face (distilbert, bert-base-uncased)"),
    (r"check_docs\.sh$", "docs build (sphinx), not an experiment"),
]
DATA_SKIPS = [  # (pattern on a case's expanded command, reason)
    (r"segmentation", "needs the segmentation dataset the CI downloaded (download-gdrive) and "
                      "segmentation_models_pytorch (smp.Unet, resnext50_32x4d encoder); nothing downloads here"),
    (r"isbi", "needs the ISBI dataset the CI downloaded (wget), nothing downloads here"),
]


# ----------------------------------------------------------------------------------- extraction
def git_dir_of(path: Path) -> Path | None:
    for cand in (path, path / ".git"):
        if (cand / "HEAD").is_file() and (cand / "objects").is_dir():
            return cand
    return None


def extract(gitdir: Path, rev: str, dest: Path) -> list[str]:
    """Writes ``rev``'s tree into ``dest`` blob by blob; returns the paths whose objects are missing."""
    ls = subprocess.run(["git", "--git-dir", str(gitdir), "ls-tree", "-r", "-z", rev],
                        check=True, capture_output=True).stdout.decode()
    entries = []
    for item in ls.split("\0"):
        if not item:
            continue
        meta, path = item.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob":
            entries.append((mode, sha, path))
    out = subprocess.run(["git", "--git-dir", str(gitdir), "cat-file", "--batch"], check=True,
                         input="".join(f"{sha}\n" for _, sha, _ in entries).encode(),
                         capture_output=True).stdout
    missing, pos = [], 0
    for mode, sha, path in entries:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].decode().split()
        pos = nl + 1
        if header[-1] == "missing":
            missing.append(path)
            continue
        size = int(header[2])
        data, pos = out[pos:pos + size], pos + size + 1
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            try:
                os.symlink(data.decode(), target)
            except OSError:
                pass
            continue
        target.write_bytes(data)
        if mode == "100755":
            target.chmod(0o755)
    return missing


def materialize(src: Path, rev: str, dest: Path) -> tuple[Path, list[str]]:
    gitdir = git_dir_of(src)
    dest.mkdir(parents=True, exist_ok=True)
    if gitdir is not None:
        return dest, extract(gitdir, rev, dest)
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    return dest, []


# ---------------------------------------------------------------------------- shell statements
def statements(text: str) -> list[tuple[int, int, str]]:
    """(first line, last line + 1, joined text) per statement: backslash continuations joined,
    ``\"\"\"`` blocks and heredocs kept whole."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        start, parts = i, [lines[i]]
        while True:
            cur = "\n".join(parts)
            if parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
                continue
            if cur.count('"""') % 2 == 1 and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
                continue
            m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", parts[0])
            if m and len(parts) == 1:
                end = m.group(1)
                while i + 1 < len(lines):
                    i += 1
                    parts.append(lines[i])
                    if lines[i].strip() == end:
                        break
            break
        joined = re.sub(r"\\\n\s*", " ", "\n".join(parts))
        out.append((start, i + 1, joined))
        i += 1
    return out


def stripped(stmt: str) -> str:
    return stmt.strip().split("#", 1)[0].strip() if not stmt.strip().startswith("#") else ""


def opens_if(s: str) -> bool:
    s = stripped(s)
    return bool(re.match(r"if\s", s)) and not re.search(r"(^|;)\s*fi\s*$", s)


def closes_if(s: str) -> bool:
    return stripped(s) == "fi"


def expand(value: str, env: dict) -> str:
    def sub(m):
        return env.get(m.group(1) or m.group(2), "")
    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", sub, value)


def unquote(v: str) -> str:
    try:
        parts = shlex.split(v)
        return parts[0] if len(parts) == 1 else v
    except ValueError:
        return v


# ------------------------------------------------------------------------------ catalyst cases
def catalyst_cases(root: Path, tag: str) -> tuple[list[dict], list[dict]]:
    """The cases of every bin/tests/*.sh of ``root``, and the skipped scripts."""
    cases, skipped_scripts = [], []
    for script in sorted((root / "bin" / "tests").glob("*.sh")):
        text = script.read_text(errors="replace")
        stmts = statements(text)
        idx = [k for k, (_, _, s) in enumerate(stmts) if RUN_RE.search(stripped(s) or "")]
        reason = next((r for pat, r in SCRIPT_SKIPS if re.search(pat, script.name)), None)
        if not idx:
            skipped_scripts.append({"tag": tag, "script": script.name,
                                    "reason": reason or "no run/tune command ("
                                    + ("pip/settings checks" if "pip" in text else "runs the others")
                                    + ")"})
            continue
        env: dict = {"PYTHONPATH": ""}  # the script's variables, to show each command expanded
        depth_at = []  # `if` nesting before each statement
        depth = 0
        k_prev = 0
        for _, _, s in stmts:
            depth_at.append(depth)
            if opens_if(s):
                depth += 1
            elif closes_if(s):
                depth -= 1
        # functions and assignments, in order, with the statement index they appear at
        defs: list[tuple[int, str]] = []
        k = 0
        while k < len(stmts):
            s = stmts[k][2]
            st = stripped(s)
            if re.match(r"(function\s+\w+\s*(\(\))?\s*\{?|\w+\s*\(\)\s*\{?)$", st):
                body = [s]
                j = k + 1
                while j < len(stmts) and not stripped(stmts[j][2]).startswith("}"):
                    body.append(stmts[j][2])
                    j += 1
                body.append("}")
                defs.append((k, "\n".join(body)))
                k = j + 1
                continue
            if ASSIGN_RE.match(st) and "$(" not in st and "`" not in st:
                defs.append((k, st))
            k += 1
        # a case inside a `{ ...; } || { ...; }` group (the CI's try/catch) starts its segment at the `{`
        anchor, opened, caught = {}, None, {}
        for j, (_, _, sj) in enumerate(stmts):
            st = stripped(sj)
            if st == "{":
                opened = j
            elif st.startswith("}") and opened is not None:
                for kk in idx:
                    if opened < kk < j:
                        anchor[kk] = opened
                        caught[kk] = bool(re.match(r"\}\s*\|\|", st))
                opened = None
        # a section header ("#### pipeline 03 ####", "# SEGMENTATION") ends the checks of the case before it
        headers = [j for j, (_, _, sj) in enumerate(stmts)
                   if re.match(r"#{4,}|#+\s*(pipeline\b|[A-Z]{3,}\b)", sj.strip())]
        for n, k in enumerate(idx):
            end = anchor.get(idx[n + 1], idx[n + 1]) if n + 1 < len(idx) else len(stmts)
            end = min([end] + [j for j in headers if j > k])
            s = stmts[k][2]
            for dk, d in defs:
                if k_prev <= dk < k and ASSIGN_RE.match(d):
                    m = ASSIGN_RE.match(d)
                    env[m.group(1)] = expand(unquote(m.group(2)), env)
            k_prev = k
            kind = RUN_RE.search(s)
            verb = kind.group(1) or kind.group(2)
            cmd = " ".join(stripped(s).split())
            shown = expand(cmd, env)
            shown = RUN_RE.sub(lambda m: f"mlcomp {m.group(1) or m.group(2)}", shown)
            background = cmd.endswith("&")
            conds = [stripped(stmts[j][2]) for j in range(k) if opens_if(stmts[j][2])
                     and depth_at[j] < depth_at[k] and all(depth_at[x] > depth_at[j] for x in range(j + 1, k))]
            prelude = "\n".join(d for dk, d in defs if dk < k)
            seg = []
            d = 0
            for j in range(anchor.get(k, k), end):
                sj = stmts[j][2]
                if closes_if(sj):
                    if d == 0:
                        continue
                    d -= 1
                elif opens_if(sj):
                    d += 1
                seg.append(sj)
            if d:  # the next case is inside an `if` opened here: close it (a body can't be empty)
                seg += ["true"] + ["fi"] * d
            case = {"tag": tag, "script": script.name, "n": n + 1, "verb": verb, "command": shown,
                    "background": background, "conditions": conds, "prelude": prelude,
                    "segment": "\n".join(seg), "line": stmts[k][0] + 1, "caught": caught.get(k, False)}
            m = re.search(r"--expdir[= ](\S+)", shown) or re.search(r"args\.expdir=(\S+)", shown)
            if reason:
                case["skip"] = reason
            elif m and not (root / m.group(1)).exists():
                case["skip"] = f"its expdir {m.group(1)} is not in the tag's tree (the CI script is stale)"
            else:
                for pat, r in DATA_SKIPS:
                    if re.search(pat, shown):
                        case["skip"] = r
                        break
            cases.append(case)
    return cases, skipped_scripts


HARNESS_PRELUDE = r'''
set +e
__case_rc_file="$__WORK/case.rc"; __case_err="$__WORK/case.err"
python() {
  if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "[material] skipped: pip ${*:3}"; return 0; fi
  PYTHONPATH="$__ASSERT_SHIM${PYTHONPATH:+:$PYTHONPATH}" "$__PY" "$@"
}
python3() { python "$@"; }
pip() { echo "[material] skipped: pip $*"; return 0; }
__mlcomp_case() {
  local rc=0
  timeout -k 5 "$__CASE_TIMEOUT" "$__MLCOMP" "$@" 2>"$__case_err" || rc=$?
  cat "$__case_err" >&2
  echo "$rc" > "$__case_rc_file"
  return $rc
}
__mlcomp_case_bg() {
  local rc=0
  timeout -k 5 30 "$__MLCOMP" "$@" 2>"$__case_err" || rc=$?
  cat "$__case_err" >&2
  if [ "$rc" = 124 ]; then echo "[material] still running after 30 s: stopped, as the CI script does"; rc=0; echo bg > "$__WORK/case.bg"; fi
  echo "$rc" > "$__case_rc_file"
  return $rc
}
__mlcomp_aux() { "$__MLCOMP" "$@"; }
__unsupported() { echo "[material] not run: catalyst/dl/scripts/$1.py (no mlcomp counterpart checked here)"; return 0; }
'''


def case_script(case: dict) -> str:
    seg = case["segment"]
    fn = "__mlcomp_case_bg" if case["background"] else "__mlcomp_case"
    seg = RUN_RE.sub(lambda m: f"{fn} {m.group(1) or m.group(2)}", seg, count=1)
    seg = RUN_RE.sub(lambda m: f"__mlcomp_aux {m.group(1) or m.group(2)}", seg)
    seg = TRACE_RE.sub("__mlcomp_aux trace", seg)
    seg = OTHER_SCRIPT_RE.sub(lambda m: f"__unsupported {m.group(1)}", seg)
    if case["background"]:
        seg = re.sub(r"\s*&\s*$", "", seg, count=1, flags=re.M)
        seg = re.sub(r"^\s*(sleep\s+\d+|kill\s+%\d+)\s*$", ":", seg, flags=re.M)
    # set -e after the prelude: a failing case or check ends the segment, as in CI
    return HARNESS_PRELUDE + "\n" + case["prelude"] + "\nset -eo pipefail\n" + seg + "\n"


def first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("--- ")]
    for pat in (r"^(\w+\.)*\w*(Error|Exception)\b.*", r"^Error:.*", r".*\berror\b.*", r".*(fail|Traceback).*"):
        hits = [ln for ln in lines if re.match(pat, ln, re.I if pat.startswith(".*") else 0)]
        if hits:
            return hits[-1][:300]
    return (lines[-1] if lines else "(no output)")[:300]


def run_catalyst_case(case: dict, root: Path, args, env_base: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"case-{case['tag']}-{case['script'][:-3]}-{case['n']}-", dir=args.work))
    (work / "script.sh").write_text(case_script(case))
    env = dict(env_base, __WORK=str(work), __CASE_TIMEOUT=str(args.timeout),
               MLCOMP_ROOT=str(work / "mlcomp-root"))
    t0 = time.time()
    try:
        p = subprocess.run(["bash", str(work / "script.sh")], cwd=root, env=env, capture_output=True,
                           text=True, timeout=args.timeout + 120)
        out, rc_seg, seg_out, seg_err = p.stdout + p.stderr, p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc_seg, seg_out, seg_err = "timeout", out, ""
    case["seconds"] = round(time.time() - t0, 1)
    (work / "output.txt").write_text(out)
    case["log"] = str(work / "output.txt")
    rc_file = work / "case.rc"
    err = (work / "case.err").read_text(errors="replace") if (work / "case.err").exists() else ""

    def checks_why():
        """What failed after the command: an error the checks wrote to stderr (not mlcomp's), else
        the last line they printed (the CI's own messages, "There is no ...")."""
        if rc_seg == "timeout":
            return "timed out"
        own_err = seg_err.replace(err, "") if err else seg_err
        if re.search(r"Error|error|Traceback", own_err):
            return first_error(own_err)
        lines = [ln for ln in seg_out.splitlines() if ln.strip() and not ln.startswith("[material]")]
        return (lines[-1] if lines else first_error(own_err))[:300]
    if not rc_file.exists():
        case.update(result="failed", reason=f"the command did not run (script lines before it failed: {first_error(out)})",
                    checks="n/a")
        return
    rc = int(rc_file.read_text().strip())
    if case.get("caught"):
        # the CI runs it in `{ ...; } || { echo caught; }`: an error is allowed, the checks decide
        case["note"] = f"the CI script catches an error of this run (exit {rc}); judged by its checks"
        if rc_seg == 0:
            case.update(result="ok", checks="ok")
        else:
            why = checks_why()
            case.update(result="failed", checks="failed", checks_reason=why,
                        reason=f"exit {rc}" + (f": {first_error(err)}" if rc else "") + f"; checks: {why}")
        return
    if rc == 0:
        case["result"] = "ok"
        if (work / "case.bg").exists():
            case["note"] = "background run stopped after 30 s, as the CI script does"
        if rc_seg == 0:
            case["checks"] = "ok"
        else:
            case["checks"] = "failed"
            case["checks_reason"] = checks_why()
    else:
        case["result"] = "failed"
        case["reason"] = (f"timed out after {args.timeout} s" if rc in (124, 137)
                          else f"exit {rc}: {first_error(err or out)}")
        case["checks"] = "n/a"


# ------------------------------------------------------------------------------ mlcomp examples
def is_dag_file(path: Path) -> bool:
    import yaml
    try:
        doc = yaml.safe_load(path.read_text())
    except Exception:
        return False
    return isinstance(doc, dict) and "info" in doc and ("executors" in doc or "pipes" in doc)


def trains(path: Path) -> bool:
    import yaml
    doc = yaml.safe_load(path.read_text())
    execs = list((doc.get("executors") or {}).values())
    for pipe in (doc.get("pipes") or {}).values():
        execs += list((pipe or {}).values())
    return any(isinstance(e, dict) and e.get("type") in ("catalyst", "train") for e in execs)


def write_digits_csv(folder: Path, n_train=1200, n_test=300) -> list[str]:
    """Synthetic Kaggle digit-recognizer files (same columns as Kaggle's)."""
    import numpy as np
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pix = [f"pixel{i}" for i in range(784)]

    def images(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 96, (n, 28, 28))
        for c in range(10):
            r, q = divmod(c, 4)
            x[y == c, r * 7:(r + 1) * 7, q * 7:(q + 1) * 7] += 128
        return y, x.reshape(n, 784)

    y, x = images(n_train)
    with open(folder / "train.csv", "w") as f:
        f.write("label," + ",".join(pix) + "\n")
        for yi, xi in zip(y, x):
            f.write(f"{yi}," + ",".join(map(str, xi)) + "\n")
    _, xt = images(n_test)
    with open(folder / "test.csv", "w") as f:
        f.write(",".join(pix) + "\n")
        for xi in xt:
            f.write(",".join(map(str, xi)) + "\n")
    with open(folder / "sample_submission.csv", "w") as f:
        f.write("ImageId,Label\n" + "".join(f"{i + 1},0\n" for i in range(n_test)))
    with open(folder / "fold.csv", "w") as f:
        f.write("fold\n" + "".join(f"{i % 5}\n" for i in range(n_train)))
    return ["train.csv", "test.csv", "sample_submission.csv", "fold.csv"]


def mlcomp_cases(root: Path) -> tuple[list[dict], list[dict]]:
    cases, others = [], []
    for path in sorted((root / "examples").rglob("*.yml")):
        rel = str(path.relative_to(root / "examples"))
        if is_dag_file(path):
            cases.append({"tag": "mlcomp", "example": rel, "path": str(path), "trains": trains(path),
                          "command": f"mlcomp dag submit {path.name} --wait --gpus 0,1",
                          "expect_fail": rel == "bash/config_error.yml"})
        else:
            others.append({"example": rel, "reason": "not a DAG file (a runner config or a Kaggle submit config)"})
    return cases, others


def run_dag_case(case: dict, args, env_base: dict) -> None:
    path = Path(case["path"])
    work = Path(tempfile.mkdtemp(prefix="dag-" + case["example"].replace("/", "-")[:-4] + "-", dir=args.work))
    # a fresh copy of the example's folder per case, so a run leaves nothing for the next
    src = path.parent
    copy = work / "example"
    shutil.copytree(src, copy)
    mroot = work / "mlcomp-root"
    notes = []
    if "digit-recognizer" in case["example"]:
        write_digits_csv(mroot / "data" / "examples")
        write_digits_csv(copy / "data")
        notes.append("synthetic digit-recognizer train.csv/test.csv/sample_submission.csv/fold.csv "
                     "(Kaggle's columns, random pixels with a label-placed patch)")
    env = dict(env_base, MLCOMP_ROOT=str(mroot))
    env.pop("MLCOMP_DB_URL", None)
    env.pop("MLCOMP_BROKER_URL", None)
    cmd = [args.mlcomp_bin, "dag", "submit", path.name, "--wait", "--gpus", "0,1"]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                           timeout=args.dag_timeout, start_new_session=True)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = "timeout"
    case["seconds"] = round(time.time() - t0, 1)
    # the task logs say why a task failed; collect them for the reason
    logs = ""
    for f in sorted(mroot.glob("tasks/*/attempts/*/std*")):
        try:
            logs += f"\n--- {f.relative_to(mroot)}\n" + f.read_text(errors="replace")[-4000:]
        except OSError:
            pass
    (work / "output.txt").write_text(out + logs)
    case["log"] = str(work / "output.txt")
    if notes:
        case["note"] = "; ".join(notes)
    if rc == 0:
        case["result"] = "ok" if not case["expect_fail"] else "failed"
        if case["expect_fail"]:
            case["reason"] = "the example's task raises on purpose, but the DAG succeeded"
    elif rc == "timeout":
        case["result"] = "failed"
        case["reason"] = f"timed out after {args.dag_timeout} s: {first_error(out)}"
    else:
        if case["expect_fail"] and "Exception" in (out + logs):
            case["result"] = "ok"
            case["note"] = "fails as the example intends (its task raises Exception)"
        else:
            case["result"] = "failed"
            status = re.search(r"^task \d+ '([^']*)': failed \((.*)\)$", out, re.M)
            why = (f"task '{status.group(1)}' failed: {status.group(2)}" if status
                   else first_error(logs) if logs.strip() else first_error(out))
            case["reason"] = f"exit {rc}: {why[:400]}"


# ------------------------------------------------------------------------------------ reporting
def config_key(command: str) -> str:
    """The config file(s) a case runs: ``--config=X``, ``--configs X Y`` or hydra's ``--config-name``."""
    m = re.search(r"--configs?[= ]((?:[^-\s]\S*\s*)+)", command)
    if m:
        return " ".join(m.group(1).split())
    m = re.search(r"--config-dir\s+(\S+)\s+--config-name\s+(\S+)", command)
    return f"{m.group(1)}/{m.group(2)}" if m else command


def group_key(reason: str) -> str:
    """A failure's first error with what differs per case (files, lines, task names, paths) removed."""
    key = re.sub(r"^exit \d+: ", "", reason)
    key = re.sub(r"^Error: ", "", key)
    key = re.sub(r"^[\w./-]+\.ya?ml:\d+: task '[^']*', key '[^']*': ", "", key)
    key = re.sub(r"^[\w./-]+\.ya?ml: ", "", key)
    key = re.sub(r"/tmp/\S+", "…", key)
    key = re.sub(r"\b(stages|args|model_params|runner_params)\.[\w.\[\]-]+", r"\1.…", key)
    key = re.sub(r"config \S+\.ya?ml", "config …", key)
    return key.split("; ")[0][:200]


def report(cat_cases, skipped_scripts, dag_cases, others, meta) -> str:
    lines = ["# mlcomp on real Catalyst 20.x and MLComp material", "",
             f"Run {meta['started']} – {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
             f"{' (in progress)' if meta.get('running') else ''}; command: `{meta['command']}`", "",
             "Optional packages on the runs' path: " + (", ".join(meta.get("extra_packages", [])) or "none")
             + " (besides the torchvision stand-in).", ""]
    ran = [c for c in cat_cases if "skip" not in c and "result" in c]
    ok = [c for c in ran if c["result"] == "ok"]
    chk = [c for c in ok if c.get("checks") == "ok"]
    todo = [c for c in cat_cases if "skip" not in c]
    skipped = [c for c in cat_cases if "skip" in c]
    uniq = {(c["tag"], c["command"]) for c in todo}
    dags = [c for c in dag_cases if "result" in c]
    dok = [c for c in dags if c["result"] == "ok"]
    tr = [c for c in dag_cases if c["trains"]]
    trok = [c for c in tr if c.get("result") == "ok"]
    by_cfg = collections.OrderedDict()
    for c in cat_cases:
        by_cfg.setdefault(config_key(c["command"]), []).append(c)
    cfg_run = {k: v for k, v in by_cfg.items() if any("skip" not in c for c in v)}
    cfg_ok = [k for k, v in cfg_run.items() if all(c.get("result") == "ok" for c in v if "skip" not in c)]
    cfg_chk = [k for k in cfg_ok if all(c.get("checks") == "ok" for c in by_cfg[k] if "skip" not in c)]
    lines += ["## Counts", "",
              f"- **{len(cfg_ok)} of {len(by_cfg)} Catalyst configs ran unchanged** (a config = a distinct "
              f"`--config` path over all tags, the issue's count; ran unchanged = every case of it, in every tag, "
              f"exited 0); {len(by_cfg) - len(cfg_run)} configs are only in skipped cases, so "
              f"{len(cfg_ok)} of {len(cfg_run)} runnable; with the CI's checks too: {len(cfg_chk)}.",
              f"- **{len(ok)} of {len(todo)} Catalyst cases ran unchanged** (exit 0; {len(ran)} run so far); "
              f"the CI script's checks after them passed for {len(chk)} of those {len(ok)}.",
              f"- {len(cat_cases)} run/tune commands found in the CI scripts of {', '.join(meta['tags'])}; "
              f"{len(skipped)} skipped (reasons below); {len(uniq)} distinct commands among those run.",
              f"- **{len(dok)} of {len(dag_cases)} MLComp DAG files** ran ({len(dags)} run so far); "
              f"**{len(trok)} of the {len(tr)} that train** (a `catalyst`/`train` executor; "
              f"bash/config_error.yml counts as ok when its task fails, as the example intends).", ""]
    groups = collections.OrderedDict()
    for c in cat_cases + dag_cases:
        if c.get("result") == "failed":
            groups.setdefault(group_key(c["reason"]), []).append(c)
        elif c.get("checks") == "failed":
            key = re.sub(r"expected \d+|is \d+|'\S+' does not exist|\d+(\.\d+)?", lambda m: re.sub(r"\d+", "N", m.group(0)),
                         group_key(c.get("checks_reason", "")))
            groups.setdefault("[checks] " + key, []).append(c)
    lines += ["## Failures grouped by first error", ""]
    for key, cs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        names = ", ".join(f"{c['tag']}:{c.get('script', c.get('example'))}#{c.get('n', '')}".rstrip("#") for c in cs)
        lines.append(f"- **{len(cs)}×** `{key}` — {names}")
    lines += ["", "## Catalyst cases", "",
              "| case | tag | command | result | checks |", "|---|---|---|---|---|"]
    for c in cat_cases:
        res = (f"skipped: {c['skip']}" if "skip" in c else c.get("result", "not run")
               + (f": {c['reason']}" if c.get("reason") else "") + (f" ({c['note']})" if c.get("note") else ""))
        cond = f" [under `{'; '.join(c['conditions'])}`]" if c.get("conditions") else ""
        chk_s = c.get("checks", "") + (f": {c['checks_reason']}" if c.get("checks_reason") else "")
        res, chk_s = res.replace("|", "\\|"), chk_s.replace("|", "\\|")
        lines.append(f"| {c['script']}#{c['n']} | {c['tag']} | `{c['command']}`{cond} | {res} | {chk_s} |".replace("\n", " "))
    lines += ["", "Scripts without cases:", ""]
    lines += [f"- {s['tag']} {s['script']}: {s['reason']}" for s in skipped_scripts]
    lines += ["", "## MLComp example DAGs", "", "| example | trains | command | result |", "|---|---|---|---|"]
    for c in dag_cases:
        res = c.get("result", "not run") + (f": {c['reason']}" if c.get("reason") else "") + (
            f" ({c['note']})" if c.get("note") else "")
        res = res.replace("|", "\\|")
        lines.append(f"| {c['example']} | {'yes' if c['trains'] else 'no'} | `{c['command']}` | {res} |".replace("\n", " "))
    lines += ["", "Not DAG files: " + ", ".join(o["example"] for o in others), ""]
    if meta.get("missing"):
        lines += ["Files missing from the mirrors (objects absent): " + "; ".join(
            f"{k}: {len(v)} ({', '.join(v[:5])}{'…' if len(v) > 5 else ''})" for k, v in meta["missing"].items() if v), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalyst", type=Path, help="Catalyst git dir or checkout")
    ap.add_argument("--mlcomp", type=Path, help="MLComp git dir or checkout")
    ap.add_argument("--tags", default=",".join(TAGS))
    ap.add_argument("--only", help="fnmatch pattern on 'tag:script#n command' or 'mlcomp:example'")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path, help="write the Markdown report here (after every case)")
    ap.add_argument("--timeout", type=int, default=120, help="per Catalyst case (s)")
    ap.add_argument("--dag-timeout", type=int, default=180, help="per DAG file (s)")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    ap.add_argument("--list", action="store_true", help="list the cases, run nothing")
    ap.add_argument("--extra-path", action="append", default=[], type=Path,
                    help="a folder of optional packages put on the runs' PYTHONPATH (after the stand-in), "
                         "e.g. one made with `pip install --target DIR albumentations opencv-python-headless pandas`")
    ap.add_argument("--from-json", type=Path, help="re-render the report of an earlier --json, run nothing")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="with --from-json: a later --json (an --only rerun) whose cases replace the same cases")
    ap.add_argument("--mlcomp-bin", default=shutil.which("mlcomp") or str(Path(sys.executable).parent / "mlcomp"))
    args = ap.parse_args(argv)
    if args.from_json:
        d = json.loads(args.from_json.read_text())
        d["meta"]["running"] = False
        for extra in args.merge:
            e = json.loads(extra.read_text())
            newer = {(c["tag"], c.get("script", c.get("example")), c.get("n")): c
                     for c in e["catalyst"] + e["mlcomp"] if "result" in c}
            for part in ("catalyst", "mlcomp"):
                d[part] = [dict(newer[k], rerun=e["meta"]["started"]) if k in newer else c for c in d[part]
                           for k in [(c["tag"], c.get("script", c.get("example")), c.get("n"))]]
            d["meta"]["command"] += f"; cases rerun by: `{e['meta']['command']}` ({len(newer)} cases, {e['meta']['started']})"
        text = report(d["catalyst"], d["catalyst_scripts_skipped"], d["mlcomp"], d["not_dag_files"], d["meta"])
        if args.md:
            args.md.write_text(text)
        print(text)
        return 0
    if not args.catalyst and not args.mlcomp:
        ap.error("give --catalyst and/or --mlcomp")
    work = args.keep or Path(tempfile.mkdtemp(prefix="material-"))
    work.mkdir(parents=True, exist_ok=True)
    args.work = work
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "missing": {},
            "command": " ".join(["python", "bench/material.py"] + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
            "tags": [], "running": True}
    cat_cases, skipped_scripts, dag_cases, others, roots = [], [], [], [], {}
    if args.catalyst:
        tags = args.tags.split(",") if git_dir_of(args.catalyst) else ["checkout"]
        meta["tags"] = tags
        for tag in tags:
            root, missing = materialize(args.catalyst, tag, work / f"catalyst-{tag}")
            meta["missing"][f"catalyst {tag}"] = missing
            cs, ss = catalyst_cases(root, tag)
            shutil.rmtree(root / "catalyst", ignore_errors=True)  # catalyst is NOT installed
            roots[tag] = root
            cat_cases += cs
            skipped_scripts += ss
    if args.mlcomp:
        root, missing = materialize(args.mlcomp, "HEAD", work / "mlcomp")
        meta["missing"]["mlcomp HEAD"] = missing
        dag_cases, others = mlcomp_cases(root)
    if args.only:
        def sel(c):
            name = f"{c['tag']}:{c.get('script', c.get('example'))}#{c.get('n', '')} {c['command']}"
            return fnmatch.fnmatch(name, args.only) or args.only in name
        cat_cases = [c for c in cat_cases if sel(c)]
        dag_cases = [c for c in dag_cases if sel(c)]
    if args.list:
        for c in cat_cases:
            print(f"{c['tag']}:{c['script']}#{c['n']}\t{c.get('skip', '')}\t{c['command']}")
        for c in dag_cases:
            print(f"mlcomp:{c['example']}\t{c['command']}")
        return 0
    env_base = dict(os.environ)
    env_base["PATH"] = str(Path(args.mlcomp_bin).parent) + os.pathsep + env_base.get("PATH", "")
    env_base["PYTHONPATH"] = os.pathsep.join([str(STANDIN)] + [str(p.resolve()) for p in args.extra_path]
                                             + ([env_base["PYTHONPATH"]] if env_base.get("PYTHONPATH") else []))
    meta["extra_path"] = [str(p) for p in args.extra_path]
    if args.extra_path:
        meta["extra_packages"] = sorted({d.name.split("-")[0] for p in args.extra_path for d in p.glob("*.dist-info")})
    env_base.update(__PY=sys.executable, __MLCOMP=args.mlcomp_bin, __ASSERT_SHIM=str(ASSERT_SHIM))
    env_base.setdefault("OMP_NUM_THREADS", "1")

    def save():
        text = report(cat_cases, skipped_scripts, dag_cases, others, meta)
        if args.md:
            args.md.parent.mkdir(parents=True, exist_ok=True)
            args.md.write_text(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            keep = lambda c: {k: v for k, v in c.items() if k not in ("prelude", "segment", "path")}  # noqa: E731
            args.json.write_text(json.dumps({"meta": meta, "catalyst": [keep(c) for c in cat_cases],
                                             "catalyst_scripts_skipped": skipped_scripts,
                                             "mlcomp": [keep(c) for c in dag_cases], "not_dag_files": others},
                                            indent=1))
        return text

    for c in dag_cases:
        print(f"[{time.strftime('%H:%M:%S')}] mlcomp {c['example']}", flush=True)
        run_dag_case(c, args, env_base)
        print(f"    -> {c['result']} {c.get('reason', '')} ({c['seconds']} s)", flush=True)
        save()
    for c in cat_cases:
        if "skip" in c:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {c['tag']} {c['script']}#{c['n']}: {c['command'][:140]}", flush=True)
        run_catalyst_case(c, roots[c["tag"]], args, env_base)
        print(f"    -> {c['result']} {c.get('reason', '')} checks={c.get('checks')} "
              f"{c.get('checks_reason', '')} ({c['seconds']} s)", flush=True)
        save()
    meta["running"] = False
    print(save())
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
