"""docs/tutorial.md works as written: its files are written where it says and each of its bash
commands runs from the project folder, as a user would type it."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
BLOCK = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


def blocks():
    return [(m["file"], m["lang"], m["body"]) for m in BLOCK.finditer(TUTORIAL.read_text())]


def test_every_file_and_command_of_the_tutorial_works(tmp_path):
    project = tmp_path / "blobs"
    project.mkdir()
    env = {**os.environ, "MLCOMP_ROOT": str(tmp_path / "root"), "MLCOMP_STOP_GRACE": "3"}
    env.pop("MLCOMP_DB_URL", None)
    bin_dir = Path(sys.executable).parent
    commands = 0
    for file, lang, body in blocks():
        if file:
            (project / file).parent.mkdir(parents=True, exist_ok=True)
            (project / file).write_text(body)
        elif lang == "bash":
            for line in filter(None, map(str.strip, body.splitlines())):
                argv = shlex.split(line)
                assert argv[0] == "mlcomp", line
                done = subprocess.run([str(bin_dir / "mlcomp"), *argv[1:]], cwd=project, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                commands += 1
                if argv[1:3] == ["dag", "show"]:
                    for task in ("train", "grid", "search", "report"):
                        assert re.search(rf"\b{task}\b.*success", done.stdout), done.stdout
    assert commands == 4
    assert (project / "runs/first/checkpoints/best.pth").is_file()
    assert (project / "runs/first/trace/traced-best-eval.pth").is_file()
