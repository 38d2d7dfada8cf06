"""Code snapshots: what is kept, the size limit, deduplicated storage and materialization."""
import hashlib

import pytest

from mlcomp.dag import snapshot
from mlcomp.dag.snapshot import SnapshotCache, blob_count, collect, list_files, materialize, read_file, store
from mlcomp.db import Dag, Project, SnapshotBlob, SnapshotFile
from mlcomp.errors import DagError, NotFoundError


@pytest.fixture
def expdir(write_file, tmp_path):
    for path, text in {
        "exp/main.py": "print('v1')\n",
        "exp/pkg/model.py": "NET = 1\n",
        "exp/pkg/__pycache__/model.cpython-311.pyc": "x",
        "exp/configs/a.yml": "lr: 1\n",
        "exp/data/train.csv": "1,2\n",
        "exp/runs/a/log.txt": "log",
        "exp/logs/x.log": "log",
        "exp/.git/HEAD": "ref",
        "exp/notes.tmp": "scratch",
        "exp/keep.tmp": "kept by negation",
        "exp/weights/big.pth": "w",
        "exp/sub/data/nested.csv": "nested data folder is skipped too",
        "exp/.gitignore": "*.tmp\n!keep.tmp\n",
        "exp/.mlcompignore": "weights/\n",
    }.items():
        write_file(path, text)
    return tmp_path / "exp"


def test_collect_keeps_code_and_skips_ignored_files(expdir):
    paths = [entry.path for entry in collect(expdir)]
    assert paths == [".gitignore", ".mlcompignore", "configs/a.yml", "keep.tmp", "main.py", "pkg/model.py"]
    entry = collect(expdir)[4]
    assert entry.content == b"print('v1')\n"
    assert entry.sha256 == hashlib.sha256(b"print('v1')\n").hexdigest() and entry.size == 12


def test_size_limit_names_the_largest_files(expdir):
    (expdir / "huge.bin").write_bytes(b"0" * 30_000)
    with pytest.raises(DagError) as info:
        collect(expdir, limit_mb=0.02)
    message = str(info.value)
    assert "over the limit of 0.02 MB" in message and "snapshot_max_mb" in message
    assert message.index("huge.bin") < message.index("main.py")
    assert ".mlcompignore" in message
    assert len(collect(expdir, limit_mb=0.05)) == 7


def make_dags(session, count):
    project = Project(name="p")
    dags = [Dag(name=f"d{i}", project=project, config="") for i in range(count)]
    session.add_all(dags)
    session.flush()
    return [dag.id for dag in dags]


def test_store_deduplicates_and_materialize_is_frozen(any_store, expdir, tmp_path):
    with any_store.begin() as session:
        first, second = make_dags(session, 2)
        store(session, [first], collect(expdir))
    (expdir / "main.py").write_text("print('v2')\n")  # edited after the first submission
    with any_store.begin() as session:
        store(session, [second], collect(expdir))
        # 6 distinct contents for the first DAG; of the second's, only the edited file is new
        assert blob_count(session) == 7
        assert session.query(SnapshotFile).count() == 12
    with any_store() as session:
        assert materialize(session, first, tmp_path / "t1" / "code") == 6
        assert materialize(session, second, tmp_path / "t2" / "code") == 6
        assert list_files(session, first)[0] == (".gitignore", len("*.tmp\n!keep.tmp\n"))
        assert read_file(session, second, "pkg/model.py") == b"NET = 1\n"
        with pytest.raises(NotFoundError, match=f"DAG {first} has no file 'data/train.csv'"):
            read_file(session, first, "data/train.csv")
    assert (tmp_path / "t1/code/main.py").read_text() == "print('v1')\n"
    assert (tmp_path / "t2/code/main.py").read_text() == "print('v2')\n"
    assert (tmp_path / "t1/code/pkg/model.py").read_text() == "NET = 1\n"
    assert not (tmp_path / "t1/code/data").exists()


def test_materialize_refuses_paths_leaving_the_folder(store, tmp_path):
    with store.begin() as session:
        (dag_id,) = make_dags(session, 1)
        session.add(SnapshotBlob(sha256="0" * 64, size=1, content=b"x"))
        session.add(SnapshotFile(dag_id=dag_id, path="../evil.py", sha256="0" * 64))
    with store() as session, pytest.raises(DagError, match="leaves the task's folder"):
        materialize(session, dag_id, tmp_path / "code")
    assert not (tmp_path / "evil.py").exists()


def test_an_unreadable_file_is_a_dag_error_naming_it(expdir, monkeypatch):
    from pathlib import Path

    read_bytes = Path.read_bytes

    def refuse(self):
        if self.name == "model.py":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)  # chmod does not stop root, who may run the tests
    with pytest.raises(DagError, match=r"cannot read .*pkg/model\.py for the code snapshot: Permission denied"):
        collect(expdir)


def test_snapshot_cache_reads_a_dag_once_and_evicts_the_oldest(store, expdir, tmp_path):
    entries = collect(expdir)
    with store.begin() as session:
        first, second = make_dags(session, 2)
        snapshot.store(session, [first, second], entries)
    size = sum(entry.size for entry in entries)
    cache = SnapshotCache(max_bytes=size)  # room for one DAG's files
    with store.begin() as session:
        files = cache.files(session, first, "t1")
        assert sorted(path for path, _ in files) == sorted(entry.path for entry in entries)
        session.query(SnapshotFile).filter_by(dag_id=first).delete()
        assert cache.files(session, first, "t1") is files  # served from memory: the rows are gone
        assert cache.files(session, first, "t2") == []  # an id reused by a later DAG: read again
        assert len(cache.files(session, second, "t1")) == len(files)  # evicts first's entries
        assert cache.files(session, first, "t1") == []
    assert materialize(None, first, tmp_path / "code", files) == len(files)
    assert (tmp_path / "code/main.py").read_text() == "print('v1')\n"
