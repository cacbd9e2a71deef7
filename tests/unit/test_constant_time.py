"""Every comparison of a secret, a secret's hash, a signature or a MAC in the source is
constant-time (``hmac.compare_digest`` / ``userorg.crypto.constant_time_equals``): this walks
the syntax tree of ``src/userorg`` and fails on any ``==``/``!=`` that touches such a value.

Not flagged: SQL expressions (``Model.column == value`` / ``table.c.column == value``), where
the database looks a SHA-256 of a 256-bit random secret up by index (the timing reveals
nothing about the secret), and the allowlist below, each entry with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "userorg"
SENSITIVE = re.compile(
    r"(secret|signature|digest|password|passwd|otp|token_hash|code_hash|mac|recovery|challenge)",
    re.IGNORECASE,
)
# (file, the compared expression) -> why it is not a secret comparison.
ALLOWED: dict[tuple[str, str], str] = {}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Subscript):
        key = node.slice
        label = key.value if isinstance(key, ast.Constant) else "?"
        return f"{_name(node.value)}[{label}]"
    if isinstance(node, ast.Call):
        return f"{_name(node.func)}()"
    return ""


def _is_sql_column(node: ast.AST) -> bool:
    """``Model.column`` (a class attribute) or ``table.c.column``."""
    if not isinstance(node, ast.Attribute):
        return False
    base = node.value
    if isinstance(base, ast.Attribute) and base.attr == "c":
        return True
    return isinstance(base, ast.Name) and base.id[:1].isupper()


def findings() -> list[str]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = str(path.relative_to(SOURCE))
        tree = ast.parse(path.read_text(), filename=relative)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(_is_sql_column(operand) for operand in operands):
                continue
            if any(isinstance(operand, ast.Constant) for operand in operands):
                continue  # compared with a literal (a status, a length, None)
            names = [_name(operand) for operand in operands]
            if not any(SENSITIVE.search(name.rsplit(".", 1)[-1]) for name in names):
                continue
            key = (relative, " vs ".join(names))
            if key in ALLOWED:
                continue
            found.append(f"{relative}:{node.lineno}: {key[1]}")
    return found


def test_no_secret_is_compared_with_equals() -> None:
    assert not findings(), "\n".join(findings())


def test_the_check_would_catch_one() -> None:
    tree = ast.parse("if presented_secret == stored_secret: pass")
    compare = next(n for n in ast.walk(tree) if isinstance(n, ast.Compare))
    names = [_name(compare.left), *(_name(c) for c in compare.comparators)]
    assert any(SENSITIVE.search(name) for name in names)
