"""Where peer text meets reasoning-gym's scorers: none of them may run it as code.

Nine reasoning-gym scorers (0.1.25) evaluate the answer text: four with Python's `eval` (a peer's
`<answer>__import__('os').system(...)</answer>` would run on every node that rescores it), five with
sympy's `parse_expr`, which is `eval` underneath and also computes whatever power tower it is given; and
coin_flip's `Fraction(answer)` turns `1e999999999` into a billion-digit integer and rubiks_cube applies
`U999999` as that many moves (minutes of CPU per completion; both found by swarmnode/lab/fuzz_intake.py).
`harden()` rebinds those names inside the scorers' modules, nowhere else: `eval` becomes a literal-only
evaluator (`ast.literal_eval`: what an honest answer to those tasks is, a list or a string), and
`parse_expr` refuses any text that is not a short formula of numbers, single-letter variables and common
functions with small integer exponents, coin_flip's `Fraction` refuses exponents of more than 3 digits, and
rubiks_cube gives a move list of more than 1,000 moves the score of one it cannot apply (PROTOCOL.md §2.4). A refused text raises inside the scorer, which
scores it as unparsable, exactly as reasoning-gym scores any other malformed answer.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from fractions import Fraction
from typing import Any

EVAL_SCORERS = (  # modules whose score_answer runs the answer through the builtin evaluator
    "reasoning_gym.algorithmic.binary_matrix",
    "reasoning_gym.algorithmic.spiral_matrix",
    "reasoning_gym.algorithmic.string_insertion",
    "reasoning_gym.games.n_queens",
)
PARSE_EXPR_IMPORTERS = ("reasoning_gym.games.countdown", "reasoning_gym.games.puzzle24")  # `from sympy... import parse_expr`
SYMPY_USERS = {  # modules that call sympy.parse_expr (or sp.parse_expr) through their module-level name
    "reasoning_gym.algebra.simple_integration": "sympy",
    "reasoning_gym.algebra.intermediate_integration": "sympy",
    "reasoning_gym.algebra.polynomial_multiplication": "sp",
}
FRACTION_SCORERS = ("reasoning_gym.probability.coin_flip",)  # `from fractions import Fraction`; Fraction(answer)
CUBE_SCORER = "reasoning_gym.cognition.rubiks_cube"  # expands "U999999" into that many moves, then applies them
UNSAFE_FAMILIES = frozenset({
    "binary_matrix", "spiral_matrix", "string_insertion", "n_queens", "countdown", "puzzle24",
    "simple_integration", "intermediate_integration", "polynomial_multiplication", "coin_flip", "rubiks_cube",
})
MAX_CUBE_MOVES = 1000  # a solution is tens of moves; "U20000" took 0.85 s to apply, 16 KB of digits forever
CUBE_UNAPPLIABLE_SCORE = 0.01  # what rubiks_cube's scorer gives a move list it cannot apply
MAX_DECIMAL_EXPONENT_DIGITS = 3  # Fraction("1e999999999") builds a billion-digit integer: minutes of CPU

MAX_FORMULA_CHARS = 256
MAX_NUMBER_CHARS = 12
MAX_EXPONENT = 99
MAX_EXPONENT_PRODUCT = 10_000  # along a chain of nested powers: (9**99)**99 is 9**9801, still quick
FUNCTIONS = frozenset({
    "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "exp", "log", "ln", "sqrt", "pi", "Abs", "sign", "floor", "ceiling", "factorial",
})
# digits with at most one point, at most 12 characters: no exponent notation (1e99999999 is a hang in sympy)
_PLAIN_NUMBER = re.compile(r"(?=.{1,12}$)(\d+\.?\d*|\.\d+)")
_FORMULA_CHARACTERS = re.compile(r"[A-Za-z0-9+\-*/^().,\s]*")


def admissible_formula(text: str) -> bool:
    """A short formula sympy may parse (PROTOCOL.md §2.4): read as a Python expression (`^` as `**`), it is
    built only from plain decimal numbers of at most 12 characters, names that are one letter or a FUNCTIONS name, unary
    signs, + - * /, calls of FUNCTIONS, and powers to an integer or a ratio of integers of absolute value
    at most 99, with the exponents along any chain of nested powers multiplying to at most 10,000."""
    if len(text) > MAX_FORMULA_CHARS or not _FORMULA_CHARACTERS.fullmatch(text):
        return False
    source = text.replace("^", "**")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    try:
        return _growth(tree.body, source) <= MAX_EXPONENT_PRODUCT
    except (_Inadmissible, RecursionError):
        return False


class _Inadmissible(Exception):
    pass


def _growth(node: ast.AST, source: str) -> float:
    """The product of exponents along the deepest chain of nested powers below `node` (1 without powers)."""
    if isinstance(node, ast.Constant) and _PLAIN_NUMBER.fullmatch(ast.get_source_segment(source, node) or ""):
        return 1
    if isinstance(node, ast.Name) and (len(node.id) == 1 or node.id in FUNCTIONS):
        return 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        return _growth(node.operand, source)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        return max(_growth(node.left, source), _growth(node.right, source))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _growth(node.left, source) * max(1, _exponent(node.right))
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
        and not node.keywords and node.args
    ):
        return max(_growth(argument, source) for argument in node.args)
    raise _Inadmissible()


def _exponent(node: ast.AST) -> float:
    """|exponent| for an integer or a ratio of integers, each at most MAX_EXPONENT; anything else is refused."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        return _exponent(node.operand)
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= MAX_EXPONENT:
        return abs(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _exponent(node.left) / max(_exponent(node.right), 1)
    raise _Inadmissible()


def literal_eval(text: Any, *_ignored: Any) -> Any:
    """`eval` for the scorers that only need a Python literal; anything else raises ValueError."""
    return ast.literal_eval(text)


_LONG_EXPONENT = re.compile(rf"[eE][+-]?\d{{{MAX_DECIMAL_EXPONENT_DIGITS + 1},}}")


def bounded_fraction(value: Any = 0, denominator: Any = None) -> Fraction:
    """`Fraction` for scorers that parse answer text: a decimal exponent of more than 3 digits raises
    ValueError (unparsable) instead of computing 10**exponent."""
    if isinstance(value, str) and _LONG_EXPONENT.search(value):
        raise ValueError("exponent too large")
    return Fraction(value) if denominator is None else Fraction(value, denominator)


_CUBE_TOKEN = re.compile(r"([^\d]*)(\d*)")


def cube_moves(answer: str) -> int:
    """The number of moves rubiks_cube's `expand_moves` would make of an answer (a count per token)."""
    total = 0
    for token in answer.split():
        match = _CUBE_TOKEN.fullmatch(token)
        count = match.group(2) if match else ""
        total += 1 if not count else MAX_CUBE_MOVES + 1 if len(count) > 6 else int(count)
    return total


def bounded_cube_score(score_answer: Any) -> Any:
    def score(self: Any, answer: Any, entry: Any) -> float:
        if isinstance(answer, str) and cube_moves(answer) > MAX_CUBE_MOVES:
            return CUBE_UNAPPLIABLE_SCORE
        return score_answer(self, answer, entry)

    score.swarmnode_guarded = True
    return score


def guarded_parse_expr(parse_expr: Any) -> Any:
    def parse(text: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(text, str) or not admissible_formula(text):
            raise ValueError("not an admissible formula")
        return parse_expr(text, *args, **kwargs)

    return parse


class _SympyWithGuardedParser(types.ModuleType):
    """The sympy module as one scorer module sees it: everything as is, but parse_expr guarded."""

    def __init__(self, sympy: types.ModuleType) -> None:
        super().__init__(sympy.__name__)
        self._sympy = sympy
        self.parse_expr = guarded_parse_expr(sympy.parse_expr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sympy, name)


def harden() -> None:
    """Rebind eval / parse_expr in the scorers' modules (idempotent); call before scoring any text."""
    for name in EVAL_SCORERS:
        importlib.import_module(name).eval = literal_eval
    for name in FRACTION_SCORERS:
        importlib.import_module(name).Fraction = bounded_fraction
    cube = importlib.import_module(CUBE_SCORER).RubiksCubeDataset
    if not getattr(cube.score_answer, "swarmnode_guarded", False):
        cube.score_answer = bounded_cube_score(cube.score_answer)
    for name in PARSE_EXPR_IMPORTERS:
        module = importlib.import_module(name)
        if not getattr(module.parse_expr, "swarmnode_guarded", False):
            module.parse_expr = guarded_parse_expr(module.parse_expr)
            module.parse_expr.swarmnode_guarded = True
    for name, alias in SYMPY_USERS.items():
        module = importlib.import_module(name)
        if not isinstance(getattr(module, alias), _SympyWithGuardedParser):
            setattr(module, alias, _SympyWithGuardedParser(getattr(module, alias)))
