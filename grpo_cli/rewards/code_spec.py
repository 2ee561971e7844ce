"""A code problem's tests as the gold `answer` string, and the program taken from a completion.

The gold answer of a code problem is a JSON object (so that records, rewards, eval files and
samples stay plain strings):

    {"steps": [["<python>", is_test], ...], "entry_point": "name" | null,
     "prompt_code": "<the signature + docstring the model completes>" | null}

`steps` run in order after the program (sandbox.TestProgram): each test step counts once, a
setup step that fails fails every test after it. Adapters build them with `steps_from_check`
(HumanEval's `check(candidate)` function: one test per top-level statement of its body that
asserts something) or `steps_from_asserts` (MBPP's list of asserts, the synthetic task).

`extract_program(completion, spec, style)`: style `fenced` takes the last ```python block
(an unclosed last block counts: a completion cut at max_new_tokens); `complete` appends the
completion to the prompt's code, unless the completion itself holds a fenced block. Where the
block does not define the entry point, the prompt's code goes first; the prompt's imports
always do (`from typing import List`, which chat models leave out).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from grpo_cli.errors import UserError

Steps = List[Tuple[str, bool]]
STYLES = ("fenced", "complete")
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.I)


@dataclass(frozen=True)
class CodeSpec:
    steps: Steps
    entry_point: Optional[str] = None
    prompt_code: Optional[str] = None

    @property
    def num_tests(self) -> int:
        return sum(1 for _, is_test in self.steps if is_test)

    def to_json(self) -> str:
        return json.dumps({"steps": [[c, t] for c, t in self.steps],
                           "entry_point": self.entry_point, "prompt_code": self.prompt_code})

    @staticmethod
    def from_json(text: str, where: str = "answer") -> "CodeSpec":
        """Parse a gold answer; UserError when it is not a code problem with tests."""
        try:
            obj = json.loads(text)
            steps = [(str(c), bool(t)) for c, t in obj["steps"]]
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"{where}: not a code problem's tests (a JSON object with "
                            f"'steps'): {type(e).__name__}: {str(text)[:80]!r}") from None
        spec = CodeSpec(steps, obj.get("entry_point"), obj.get("prompt_code"))
        if spec.num_tests == 0:
            raise UserError(f"{where}: the problem has no tests")
        return spec


def _asserts(node: ast.AST) -> bool:
    """Does the statement assert something that is not a constant (`assert True` is not)?"""
    return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant)
               for n in ast.walk(node))


def _checked(steps: Steps, where: str) -> Steps:
    for code, _ in steps:
        try:
            compile(code, "<test>", "exec")
        except SyntaxError as e:
            raise UserError(f"{where}: a test does not compile ({e.msg}): {code[:80]!r}") \
                from None
    if not any(is_test for _, is_test in steps):
        raise UserError(f"{where}: the problem has no tests (no assert)")
    return steps


def steps_from_check(test_source: str, where: str, function: str = "check") -> Steps:
    """HumanEval's test module: its top-level code as setup, then the body of
    `check(candidate)` statement by statement (the ones that assert are the tests)."""
    try:
        tree = ast.parse(test_source)
    except SyntaxError as e:
        raise UserError(f"{where}: the test code does not parse ({e.msg})") from None
    setup: Steps = []
    body: Optional[list] = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            body = node.body
        else:
            setup.append((ast.unparse(node), False))
    if body is None:
        raise UserError(f"{where}: the test code has no `def {function}(candidate)`")
    return _checked(setup + [(ast.unparse(n), _asserts(n)) for n in body], where)


def steps_from_asserts(asserts: Sequence[str], setup: Sequence[str], where: str) -> Steps:
    """MBPP-style tests: setup code, then one test per assert string (`assert True` is
    kept as setup: it tests nothing)."""
    steps = [(s, False) for s in setup if s and s.strip()]
    tests = [a for a in asserts if a and a.strip()]
    return _checked(steps + [(a, _parses_to_assert(a)) for a in tests], where)


def _parses_to_assert(code: str) -> bool:
    try:
        return _asserts(ast.parse(code))
    except SyntaxError:
        return True  # _checked names it


def last_fenced_block(text: str) -> Optional[str]:
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def _imports(code: str) -> str:
    return "".join(line + "\n" for line in code.splitlines()
                   if line.startswith(("import ", "from ")))


def extract_program(completion: str, spec: CodeSpec, style: str) -> Optional[str]:
    """The program to run (None: a fenced-style completion without a code block)."""
    block = last_fenced_block(completion)
    prompt_code = spec.prompt_code or ""
    if block is None:
        if style == "fenced":
            return None
        return prompt_code + completion
    if prompt_code and spec.entry_point and not _defines(block, spec.entry_point):
        return prompt_code + block
    return _imports(prompt_code) + block
