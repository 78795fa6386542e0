"""The mutation operators of ``mutation.py``: which small, realistic bugs are planted in a
module's syntax tree (operator swaps, dropped terms, off-by-one constants and ranges,
swapped arguments, ``max``/``min``-type swaps, comparison flips, deleted re-assignments and
calls), and the fixed-seed sample of them that a run uses."""

from __future__ import annotations

import ast
import copy
import dataclasses
import random
import re
import warnings

# Statements never mutated: test instrumentation and progress output (no results depend on them).
SKIP_STATEMENT = re.compile(r"TRACE_COUNT|progress_hook|set_progress|print\(|__all__")

BINOP_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.Pow: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.MatMult: ast.Mult,
}
CMP_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
NAME_SWAP = {
    "max": "min",
    "min": "max",
    "maximum": "minimum",
    "minimum": "maximum",
    "argmax": "argmin",
    "argmin": "argmax",
    "sum": "mean",
    "mean": "sum",
    "tril": "triu",
    "triu": "tril",
    "any": "all",
    "all": "any",
}
DROP_CALL = {"sqrt", "abs", "square", "log1p", "expm1"}  # f(x) -> x
RANGE_CALL = {"range", "arange"}  # f(n) -> f(1, n + 1)


@dataclasses.dataclass
class Mutant:
    target: str
    function: str
    line: int
    op: str
    original: str
    replacement: str
    start: int  # byte offsets of the replaced segment in the original source
    end: int
    status: str = "pending"  # killed | survived | timeout | error
    seconds: float = 0.0
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.target}:{self.line}:{self.start}:{self.op}:{self.replacement}"


# -- enumeration ----------------------------------------------------------------------
def _parents(tree):
    par = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            par[child] = node
    return par


def _qualname(node, par):
    names = []
    while node in par:
        node = par[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
    return ".".join(reversed(names))


def _excluded(node, par):
    """Docstrings, annotations, decorators, f-strings, error paths and instrumentation."""
    child = node
    while child in par:
        p = par[child]
        if isinstance(p, (ast.JoinedStr, ast.Raise, ast.Assert)):
            return True
        if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (
            child in p.decorator_list or child is getattr(p, "returns", None)
        ):
            return True
        if isinstance(p, ast.arg) or (isinstance(p, ast.AnnAssign) and child is p.annotation):
            return True
        child = p
    return False


def _stmt_of(node, par):
    while node in par and not isinstance(node, ast.stmt):
        node = par[node]
    return node


def _call_name(call):
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


COMMUTATIVE = {"min", "max", "minimum", "maximum"}
# arguments that a swap could plausibly exchange: values, not the static description,
# constants or dtypes (swapping those is a type error, not a realistic bug)
_NOT_VALUES = {"static", "model", "self", "dt", "dtype", "key", "k"}


def _swappable(a):
    if isinstance(a, (ast.Starred, ast.Constant)) or (isinstance(a, ast.UnaryOp) and isinstance(a.operand, ast.Constant)):
        return False
    if isinstance(a, ast.Name) and a.id in _NOT_VALUES:
        return False
    if isinstance(a, ast.Attribute) and re.fullmatch(r"u?int\d+|float\d+|bool_?", a.attr):
        return False
    return True


def _expr_mutations(node):
    """``(op, new_node)`` for one expression node."""
    out = []
    if isinstance(node, ast.BinOp):
        new = BINOP_SWAP.get(type(node.op))
        if new:
            n = copy.deepcopy(node)
            n.op = new()
            out.append((f"binop {type(node.op).__name__}->{new.__name__}", n))
        if isinstance(node.op, (ast.Add, ast.Sub)):
            out.append(("drop right term", node.left))
            if isinstance(node.op, ast.Add):
                out.append(("drop left term", node.right))
        if isinstance(node.op, (ast.Mult, ast.Div)):
            out.append(("drop right factor", node.left))
        if isinstance(node.op, ast.Mult):
            out.append(("drop left factor", node.right))
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        new = CMP_SWAP.get(type(node.ops[0]))
        if new:
            n = copy.deepcopy(node)
            n.ops = [new()]
            out.append((f"compare {type(node.ops[0]).__name__}->{new.__name__}", n))
    elif isinstance(node, ast.BoolOp):
        n = copy.deepcopy(node)
        n.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("and<->or", n))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
        out.append((f"drop unary {type(node.op).__name__}", node.operand))
    elif isinstance(node, ast.Constant) and not isinstance(node.value, str) and node.value is not None:
        v = node.value
        if isinstance(v, bool):
            out.append(("constant not", ast.Constant(not v)))
        elif isinstance(v, int):
            out.append(("constant +1", ast.Constant(v + 1)))
            if v > 0:
                out.append(("constant -1", ast.Constant(v - 1)))
        elif isinstance(v, float):
            out.append(("constant x2", ast.Constant(2.0 * v if v != 0.0 else 1.0)))
    elif isinstance(node, ast.Call):
        name = _call_name(node)
        if name in NAME_SWAP:
            n = copy.deepcopy(node)
            if isinstance(n.func, ast.Attribute):
                n.func.attr = NAME_SWAP[name]
            else:
                n.func.id = NAME_SWAP[name]
            out.append((f"call {name}->{NAME_SWAP[name]}", n))
        if name in DROP_CALL and len(node.args) == 1 and not node.keywords:
            out.append((f"drop call {name}", node.args[0]))
        if name in RANGE_CALL and len(node.args) == 1 and not isinstance(node.args[0], ast.Starred):
            n = copy.deepcopy(node)
            n.args = [ast.Constant(1), ast.BinOp(node.args[0], ast.Add(), ast.Constant(1))]
            out.append((f"{name}(n)->{name}(1, n+1)", n))
        pos = node.args
        for i in range(min(len(pos) - 1, 2)):
            a, b = pos[i], pos[i + 1]
            if not (_swappable(a) and _swappable(b)) or ast.dump(a) == ast.dump(b) or name in COMMUTATIVE:
                continue
            if name == "where" and i == 0:  # a value where the condition goes: not a plausible slip
                continue
            n = copy.deepcopy(node)
            n.args[i], n.args[i + 1] = n.args[i + 1], n.args[i]
            out.append((f"swap args {i},{i + 1}", n))
    elif isinstance(node, ast.Slice):
        for field in ("lower", "upper"):
            b = getattr(node, field)
            if b is not None:
                n = copy.deepcopy(node)
                setattr(n, field, ast.BinOp(copy.deepcopy(b), ast.Add(), ast.Constant(1)))
                out.append((f"slice {field} +1", n))
    return out


def _unparse_slice(n):
    lo = ast.unparse(n.lower) if n.lower is not None else ""
    hi = ast.unparse(n.upper) if n.upper is not None else ""
    st = ":" + ast.unparse(n.step) if n.step is not None else ""
    return f"{lo}:{hi}{st}"


def mutants_of(name: str, target, source: str) -> list[Mutant]:
    """Every mutant of one module (deterministic order); ``target`` a ``mutation.Target``."""
    src = source.encode()
    line_start = [0]
    for ln in src.splitlines(keepends=True):
        line_start.append(line_start[-1] + len(ln))

    def off(lineno, col):
        return line_start[lineno - 1] + col

    tree = ast.parse(source)
    par = _parents(tree)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.add(first.value)
    out: list[Mutant] = []
    seen = set()

    def add(node, op, text, fn):
        start, end = off(node.lineno, node.col_offset), off(node.end_lineno, node.end_col_offset)
        orig = src[start:end].decode()
        if text == orig:
            return
        new_src = (src[:start] + text.encode() + src[end:]).decode()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(new_src, target.path, "exec")
        except SyntaxError:
            return
        m = Mutant(name, fn, node.lineno, op, orig, text, start, end)
        if m.key not in seen:
            seen.add(m.key)
            out.append(m)

    for node in ast.walk(tree):
        if node in docstrings or not hasattr(node, "lineno") or _excluded(node, par):
            continue
        fn = _qualname(node, par)
        if target.functions is not None and not any(fn == f or fn.startswith(f + ".") for f in target.functions):
            continue
        stmt = _stmt_of(node, par)
        if SKIP_STATEMENT.search(ast.get_source_segment(source, stmt) or ""):
            continue
        if isinstance(node, ast.expr) or isinstance(node, ast.Slice):
            for op, new in _expr_mutations(node):
                if isinstance(new, ast.Slice):
                    add(node, op, _unparse_slice(new), fn)
                else:
                    add(node, op, "(" + ast.unparse(new) + ")", fn)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            # a dropped call statement (x.pop(k), out.append(v), ...)
            add(node, "delete statement", "pass", fn)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            # deleting a re-assignment (a dropped line): only when the name already exists
            tgt = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(node, ast.Assign) and (len(node.targets) != 1 or not isinstance(tgt, ast.Name)):
                continue
            if not isinstance(tgt, ast.Name):
                continue
            scope = par.get(node)
            body = getattr(scope, "body", [])
            earlier = [
                s
                for s in ast.walk(scope)
                if isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For))
                and s is not node
                and getattr(s, "lineno", 10**9) < node.lineno
            ]
            args = getattr(getattr(scope, "args", None), "args", [])
            bound = {a.arg for a in args} | {
                t.id for s in earlier for t in ast.walk(s) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)
            }
            if tgt.id in bound and body:
                add(node, "delete statement", "pass", fn)
    return out


def sample(mutants: list[Mutant], n: int, seed: int) -> list[Mutant]:
    if n <= 0 or len(mutants) <= n:
        return list(mutants)
    idx = sorted(random.Random(seed).sample(range(len(mutants)), n))
    return [mutants[i] for i in idx]
