"""The expressions of MLComp's equation executors (``y: torch(x, file='net.pth') * 0.5 + load('b.p')``).

An expression is read with :mod:`ast` and walked, never ``eval``-ed: literals (numbers, strings,
``True``/``None``, lists, tuples), names, arithmetic (``+ - * / // % **``, unary ``-``/``+``) and
calls of plain names with positional and keyword arguments. The caller says what a name and a
called name mean (MLComp's ``Equation``: an attribute of the executor and one of its methods).
"""
from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from mlcomp.errors import ExecutorError

__all__ = ["evaluate"]

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def evaluate(expression: str, name: Callable[[str], Any], function: Callable[[str], Callable]) -> Any:
    """The value of ``expression``; ``name(text)`` gives a name's value, ``function(text)`` the
    callable a call names.

    Raises:
        ExecutorError: the text is not an expression, or uses anything but what the module
            docstring lists (naming it).
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ExecutorError(f"equation {expression!r}: not an expression: {e.msg}") from None
    return _Walk(expression, name, function).visit(tree.body)


class _Walk(ast.NodeVisitor):
    """Evaluates one expression's nodes (see :func:`evaluate`)."""

    def __init__(self, expression: str, name: Callable[[str], Any], function: Callable[[str], Callable]):
        self.expression, self.name, self.function = expression, name, function

    def generic_visit(self, node: ast.AST) -> Any:
        raise ExecutorError(f"equation {self.expression!r}: {type(node).__name__} is not allowed; allowed: "
                            f"literals, names, + - * / // % **, and calls of the executor's functions")

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        return self.name(node.id)

    def visit_List(self, node: ast.List) -> list:
        return [self.visit(item) for item in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> tuple:
        return tuple(self.visit(item) for item in node.elts)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        if type(node.op) not in _BINARY:
            return self.generic_visit(node.op)
        return _BINARY[type(node.op)](self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        if type(node.op) not in _UNARY:
            return self.generic_visit(node.op)
        return _UNARY[type(node.op)](self.visit(node.operand))

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            return self.generic_visit(node.func)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return self.generic_visit(node)
        args = [self.visit(a) for a in node.args]
        return self.function(node.func.id)(*args, **{k.arg: self.visit(k.value) for k in node.keywords})
