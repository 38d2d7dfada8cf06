"""Config values written as Optuna suggestions (Catalyst 20.10–20.12's ``catalyst-dl tune``)::

    model_params:
      width: "int(trial.suggest_loguniform('width', 8, 64))"
      dropout: "trial.suggest_float('dropout', 0.0, 0.5)"

:func:`resolve_trial_strings` replaces every string value that mentions ``trial.`` with what it
evaluates to for one Optuna trial. Catalyst ran such strings through ``eval`` with the script's
globals; here each one is parsed with :mod:`ast` and checked before anything runs
(:func:`evaluate_trial_string`): only calls of the trial's ``suggest_*`` methods, ``int`` and
``float``, constants (a sign allowed on numbers), lists and tuples pass, and the result is
evaluated with no builtins and only ``trial`` (its ``suggest_*`` methods), ``int`` and ``float``
in scope. Optuna 2's ``suggest_uniform``, ``suggest_loguniform`` and ``suggest_discrete_uniform``
are mapped to ``suggest_float``.
"""
from __future__ import annotations

import ast
import re
from typing import Any

from mlcomp.errors import ConfigError

__all__ = ["mentions_trial", "evaluate_trial_string", "resolve_trial_strings"]

_MENTION = re.compile(r"\btrial\s*\.\s*[A-Za-z_]")
_CASTS = {"int": int, "float": float}
_PLAIN = (ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Load, ast.keyword, ast.USub, ast.UAdd)


def mentions_trial(value: Any) -> bool:
    """Whether ``value`` is a string naming an attribute of ``trial`` (``"trial.suggest_int(...)"``);
    other strings, such as a path ``runs/trial.1``, stay plain strings."""
    return isinstance(value, str) and _MENTION.search(value) is not None


def _callee(func: ast.expr) -> list[ast.expr]:
    """The nodes of an allowed callee (``int``, ``float``, ``trial.suggest_*``), else empty."""
    if isinstance(func, ast.Name) and func.id in _CASTS:
        return [func]
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "trial" \
            and func.attr.startswith("suggest_"):
        return [func, func.value]
    return []


def _check(tree: ast.Expression) -> None:
    """Raises ValueError naming the first node of ``tree`` that is not allowed."""
    callees = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            allowed = _callee(node.func)
            if not allowed:
                raise ValueError(f"the call of {ast.unparse(node.func)!r} is not allowed "
                                 "(allowed: trial.suggest_*(...), int(...), float(...))")
            callees.update(map(id, allowed))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Call, *_PLAIN)) or id(node) in callees:
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
                and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)):
            continue
        raise ValueError(f"{ast.unparse(node)!r} is not allowed ({type(node).__name__}; allowed: calls of "
                         "trial.suggest_*, int and float, constants, lists and tuples)")


class _Suggestions:
    """What a trial string sees as ``trial``: the trial's ``suggest_*`` methods only, with the
    names Optuna deprecated in 3.0 (``suggest_uniform``, ``suggest_loguniform``,
    ``suggest_discrete_uniform``, which Catalyst's examples use) mapped to ``suggest_float`` as
    Optuna's release notes say, so they keep working where Optuna has removed them."""

    def __init__(self, trial):
        self._trial = trial

    def __getattr__(self, name: str):
        if not name.startswith("suggest_"):
            raise AttributeError(name)
        return getattr(self._trial, name)

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        """``suggest_float(name, low, high)``."""
        return self._trial.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        """``suggest_float(name, low, high, log=True)``."""
        return self._trial.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        """``suggest_float(name, low, high, step=q)``."""
        return self._trial.suggest_float(name, low, high, step=q)


def evaluate_trial_string(text: str, trial, key: str) -> Any:
    """The value of ``text`` for ``trial`` (an ``optuna.Trial``; it records the suggestions).

    Args:
        key: the dotted config key holding ``text``, for messages.

    Raises:
        ConfigError: ``text`` is not a Python expression, or uses anything but calls of
            ``trial.suggest_*`` / ``int`` / ``float``, constants, lists and tuples (e.g.
            ``__import__('os')``, ``trial.__class__``, ``open('x')``), checked before anything is
            evaluated; or the suggestion fails (an unknown ``suggest_`` method, bad arguments,
            an incompatible repeated parameter name). The message names ``key`` and ``text``.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
        _check(tree)
    except (SyntaxError, ValueError) as e:
        reason = e.msg if isinstance(e, SyntaxError) else str(e)
        raise ConfigError(f"{key}: trial string {text!r} refused: {reason}") from None
    code = compile(tree, f"<{key}>", "eval")
    try:
        return eval(code, {"__builtins__": {}}, {"trial": _Suggestions(trial), **_CASTS})  # noqa: S307 (checked)
    except Exception as e:  # what the trial or a cast raises: bad arguments, an unknown suggest_ method
        raise ConfigError(f"{key}: trial string {text!r} failed: {type(e).__name__}: {e}") from None


def resolve_trial_strings(config: Any, trial, key: str = "") -> Any:
    """A copy of ``config`` (nested mappings and lists) with every string that mentions ``trial.``
    replaced by :func:`evaluate_trial_string` of it; other values are kept as they are.

    Args:
        key: the dotted key of ``config`` itself (empty for a whole config).

    Raises:
        ConfigError: see :func:`evaluate_trial_string`.
    """
    if isinstance(config, dict):
        return {k: resolve_trial_strings(v, trial, f"{key}.{k}" if key else str(k)) for k, v in config.items()}
    if isinstance(config, list):
        return [resolve_trial_strings(v, trial, f"{key}[{i}]") for i, v in enumerate(config)]
    if mentions_trial(config):
        return evaluate_trial_string(config, trial, key)
    return config
