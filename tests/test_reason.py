"""The failure reason picked from a task's stderr (mlcomp/worker/reason.py)."""
from __future__ import annotations

from mlcomp.worker.reason import ReasonLine


def reason(*lines: str) -> str | None:
    tracker = ReasonLine()
    for line in lines:
        tracker.feed(line)
    return tracker.value


def test_plain_lines_give_the_last_non_empty_one():
    assert reason("first", "second", "   ") == "second"
    assert reason() is None


def test_the_exception_line_wins_over_later_warnings():
    assert reason("Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
                  "    main()", "    ^^^^^^", "RuntimeError: CUDA out of memory",
                  "  warnings.warn(", "see https://pytorch.org/docs/notes") == "RuntimeError: CUDA out of memory"


def test_chained_tracebacks_give_the_last_exception():
    assert reason("Traceback (most recent call last):", '  File "a.py", line 1', "KeyError: 'x'", "",
                  "During handling of the above exception, another exception occurred:", "",
                  "Traceback (most recent call last):", '  File "a.py", line 2', "ValueError: no x") \
        == "ValueError: no x"


def test_a_user_error_line_of_the_child_wins_over_later_lines():
    assert reason("mlcomp: config.yml: stages.train: unknown key 'num_epoch'", "exiting") \
        == "mlcomp: config.yml: stages.train: unknown key 'num_epoch'"
