"""mlcomp's one YAML reader: bounds checked on the composed node graph before anything is built,
errors as ``FILE:LINE:`` naming the key (and alias), and the line of every key."""
import pytest

from mlcomp.errors import ConfigError, DagError
from mlcomp.runner.config_io import load_config
from mlcomp.settings import Settings
from mlcomp.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_NODES, parse_yaml, read_yaml

LAUGHS = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS


@pytest.mark.parametrize("text, message", [
    (LAUGHS, f"f.yml:5: key 'e': the document expands to more than {MAX_NODES} YAML nodes with aliases expanded "
             f"(through alias *d)"),
    ("top:\n  x: &x [1, *x]\n", "f.yml:2: key 'top.x': an alias refers to a node that contains it (recursive) "
                                "(through alias *x)"),
    ("top:\n  deep: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",
     f"f.yml:2: key 'top.deep': the YAML nests deeper than {MAX_DEPTH} levels"),
    ("n: [" + "0," * MAX_NODES + "0]\n", f"f.yml:1: key 'n': the document expands to more than {MAX_NODES}"),
    ("a:\n  b: 18446744073709551616\n", "f.yml:2: key 'a.b': the integer 18446744073709551616 is out of range"),
    ("a: [1, -.inf]\n", "f.yml:1: key 'a.1': the number -.inf is out of range; allowed: a finite number"),
    ("a: .nan\n", "f.yml:1: key 'a': the number .nan is out of range"),
    ("a: 1\nb:\n  c: 2\n  c: 3\n", "f.yml:4: duplicate key 'c' in b"),
    ("a: [1,\n", "f.yml:2:1: YAML syntax error"),
])
def test_hostile_documents_are_refused_at_the_key(text, message):
    with pytest.raises(DagError) as info:
        parse_yaml(text, "f.yml", DagError)
    assert str(info.value).startswith(message), str(info.value)


def test_shared_aliases_within_bounds_and_lines():
    document = parse_yaml("base: &b {lr: 0.1, when: 2020-01-01}\nrun:\n  <<: *b\n  lr: 0.2\nbig: 9223372036854775807\n",
                          "f.yml", ConfigError)
    assert document.data["run"] == {"lr": 0.2, "when": "2020-01-01"}  # merge keys; dates stay strings
    assert document.lines(("run", "lr")) == 4 and document.lines(("run", "missing")) == 2
    assert document.lines(("base", "when")) == 1 and document.data["big"] == 2 ** 63 - 1


def test_files_over_the_size_limit_are_not_read(tmp_path):
    path = tmp_path / "big.yml"
    path.write_text("# " + "x" * MAX_BYTES)
    with pytest.raises(ConfigError, match=rf"big.yml:1: the config is larger than {MAX_BYTES} bytes"):
        read_yaml(path, ConfigError, "config")
    with pytest.raises(ConfigError, match="big.yml:1: cannot read the config"):
        read_yaml(tmp_path / "missing" / "big.yml", ConfigError, "config")


def test_runner_configs_and_settings_use_the_same_reader(tmp_path):
    (tmp_path / "c.yml").write_text("args: {seed: 1}\n" + LAUGHS)
    with pytest.raises(ConfigError, match=r"c.yml:6: key 'e': the document expands"):
        load_config(tmp_path / "c.yml")
    (tmp_path / "config.yml").write_text("port: 1e400\ngrid_max_cells: 99999999999999999999\n")
    with pytest.raises(ConfigError, match=r"config.yml:2: key 'grid_max_cells': the integer .* is out of range"):
        Settings.from_env({"MLCOMP_ROOT": str(tmp_path)})
