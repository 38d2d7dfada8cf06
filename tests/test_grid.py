"""Grid expansion: rows, ranges, moving-together lists, files and folders, Cartesian products."""
import pytest

from mlcomp.dag import Cell, expand_grid
from mlcomp.errors import DagError


def names(cells):
    return [cell.name for cell in cells]


def test_rows_combine_as_a_product_in_row_order():
    cells = expand_grid([{"lr": [0.1, 0.01]}, {"bs": [16, 32]}])
    assert names(cells) == ["lr=0.1 bs=16", "lr=0.1 bs=32", "lr=0.01 bs=16", "lr=0.01 bs=32"]
    assert cells[1] == Cell("lr=0.1 bs=32", {"lr": 0.1, "bs": 32})


def test_a_mapping_is_one_row_per_key():
    assert names(expand_grid({"a": [1, 2], "b": ["x"]})) == ["a=1 b=x", "a=2 b=x"]


def test_integer_ranges_are_inclusive_and_only_int_dash_int():
    assert [c.values["seed"] for c in expand_grid([{"seed": "0-4"}])] == [0, 1, 2, 3, 4]
    assert [c.values["x"] for c in expand_grid([{"x": "-2-1"}])] == [-2, -1, 0, 1]
    assert expand_grid([{"arch": "resnet-34"}]) == [Cell("arch=resnet-34", {"arch": "resnet-34"})]
    assert expand_grid([{"arch": ["1-2"]}]) == [Cell("arch=1-2", {"arch": "1-2"})]


def test_list_of_mappings_moves_together():
    cells = expand_grid([[{"lr": 0.1, "bs": 16}, {"lr": 0.2, "bs": 32}], {"seed": [1, 2]}])
    assert names(cells) == ["lr=0.1 bs=16 seed=1", "lr=0.1 bs=16 seed=2", "lr=0.2 bs=32 seed=1",
                            "lr=0.2 bs=32 seed=2"]
    assert cells[3].values == {"lr": 0.2, "bs": 32, "seed": 2}


def test_values_in_names_are_compact_json_except_strings():
    cells = expand_grid([{"v": [True, None, [1, 2], {"a": 1}, "s p"]}])
    assert names(cells) == ["v=true", "v=null", "v=[1,2]", 'v={"a":1}', "v=s p"]


def test_folder_and_file_rows_give_the_files_mappings(write_file, tmp_path):
    write_file("grid/b.yml", "lr: 0.2\nopt: sgd\n")
    write_file("grid/a.yaml", "lr: 0.1\nopt: adam\n")
    write_file("grid/notes.txt", "ignored")
    write_file("c.yml", "depth: 3\n")
    cells = expand_grid([{"_folder": "grid"}, {"_file": ["c.yml"]}], expdir=tmp_path)
    assert names(cells) == ["_file=grid/a.yaml _file=c.yml", "_file=grid/b.yml _file=c.yml"]
    assert cells[0].values == {"lr": 0.1, "opt": "adam", "depth": 3}
    assert expand_grid({"_file": "c.yml"}, expdir=tmp_path)[0].values == {"depth": 3}


@pytest.mark.parametrize("grid, path, fragment", [
    (3, "grid[]", "allowed: a list of rows"),
    ([], "grid[]", "no rows"),
    ([{"lr": []}], "grid[0][lr]", "empty"),
    ([{"lr": {"a": 1}}], "grid[0][lr]", "got a mapping"),
    ([{"seed": "5-2"}], "grid[0][seed]", "range '5-2' is empty"),
    ([7], "grid[0]", "allowed: a mapping"),
    ([[{"a": 1}, 2]], "grid[0]", "non-empty mappings"),
    ([[]], "grid[0]", "non-empty list"),
    ([{"_unknown": 1}], "grid[0][_unknown]", "allowed: _folder, _file"),
    ([{"_folder": "missing"}], "grid[0][_folder]", "not a folder"),
    ([{"_folder": "empty"}], "grid[0][_folder]", "no .yml/.yaml files"),
    ([{"_file": "bad.yml"}], "grid[0][_file]", "non-empty mapping"),
    ([{"_file": "nope.yml"}], "grid[0][_file]", "nope.yml"),
    ([{"_file": []}], "grid[0][_file]", "non-empty list"),
    ([{"lr": [1]}, {"lr": [2]}], "grid[1][lr]", "rows 1 and 2 both set 'lr'"),
    ([{"_file": "c.yml"}, {"depth": [1]}], "grid[1][depth]", "both set 'depth'"),
    ([{"x": [1, "1"]}], "grid[]", "same name 'x=1'"),
])
def test_malformed_rows_are_rejected(write_file, tmp_path, grid, path, fragment):
    write_file("bad.yml", "- 1\n")
    write_file("c.yml", "depth: 3\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DagError) as info:
        expand_grid(grid, expdir=tmp_path)
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in str(info.value)


def test_no_grid_gives_no_cells():
    assert expand_grid(None) == []


def test_errors_go_through_the_given_factory():
    def error(path, message):
        return DagError(f"F:9: {list(path)} {message}")
    with pytest.raises(DagError, match=r"^F:9: \[0, 'lr'\] lr: the list of values is empty"):
        expand_grid([{"lr": []}], error=error)
