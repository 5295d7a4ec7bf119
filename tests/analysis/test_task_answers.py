"""Exactly one answer is right after each prompt, judged by Python itself, for every built-in task.

Each judge completes a prompt with an answer in the way the task's answer is used (a closing quote ends the
line, ``else`` takes its colon, ``self.`` is read, ...) and asks Python: the compiler for syntax tasks (through
``codeop``, which tells "incomplete, could still be right" from "no continuation can fix this"), execution for
the others. For every pair the correct answer must pass and the alternative fail after the clean prompt, and the
other way round after the corrupted prompt. The reasons are in the docstring of
``glassformer.analysis.tasks.python_code``. The shifted variants (held-out names, other wording, distractor code
first) are judged the same way, on their whole prompts, so the distractor code must compile and run too.
"""

from __future__ import annotations

import codeop
import re
import warnings
from collections.abc import Callable
from types import GeneratorType
from unittest.mock import Mock

import pytest

from glassformer.analysis.tasks import TASKS, Pair
from glassformer.analysis.tasks.base import SHIFTED

N = 24
SHIFTED_TASKS = {t.name: t for t in (task.shifted() for task in TASKS
                                     if type(task).__module__.startswith("glassformer.analysis.tasks."))
                 if t is not None}
"""The shifted variant of every built-in task: judged as the task is, whole prompts (distractor code included)."""


def compiles(source: str) -> bool:
    """True when ``source`` is valid Python or a prefix of valid Python (codeop: complete or incomplete)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "invalid escape sequence" in a drawn name would not matter
        try:
            codeop.compile_command(source, symbol="exec")
        except SyntaxError:
            return False
    return True


def runs(source: str, then: Callable[[dict], object]) -> bool:
    """True when ``source`` executes and ``then(namespace)`` raises no error."""
    namespace: dict = {}
    try:
        exec(compile(source, "<task>", "exec"), namespace)  # our own templates, filled with our own names
        then(namespace)
    except (SyntaxError, NameError, AttributeError, TypeError):
        return False
    return True


def defined(pattern: str, text: str) -> str:
    """The last match: a shifted prompt starts with distractor code, and the template it precedes comes last."""
    return re.findall(pattern, text)[-1]


def set_vs_str(prompt: str, answer: str) -> bool:
    func, acc, x = (defined(p, prompt) for p in (r"def (\w+)\(", r"\n    (\w+) = ", r"for (\w+) in"))
    grow = {".": f".add({x})", " +=": f" += {x}"}[answer]
    return runs(f"{prompt}{grow}\n    return {acc}\n", lambda ns: ns[func](["a", "b"]))


def return_vs_yield(prompt: str, answer: str) -> bool:
    cls, x, items = (defined(p, prompt) for p in (r"class (\w+)", r"for (\w+) in", r"self\.(\w+):"))
    body = {" yield": f" yield {x}", " return": " return True"}[answer]

    def use(ns: dict) -> None:
        obj = ns[cls].__new__(ns[cls])
        setattr(obj, items, ["", "a"])
        if "__iter__" in prompt:
            list(obj)
        elif "__bool__" in prompt:
            bool(obj)
        elif isinstance(next(obj), GeneratorType):
            raise TypeError("__next__ handed out a generator instead of the next item")

    return runs(f"{prompt}{body}\n", use)


def self_attribute(prompt: str, answer: str) -> bool:
    cls, method = defined(r"class (\w+)", prompt), defined(r"def (\w+)\(self\):\n        return", prompt)
    return runs(f"{prompt}{answer}\n", lambda ns: getattr(ns[cls](), method)())


def self_vs_cls(prompt: str, answer: str) -> bool:
    cls, method = defined(r"class (\w+)", prompt), defined(r"def (\w+)\($", prompt)

    def bound(ns: dict) -> None:
        # The first parameter must be what its conventional name says: the instance (self) or the class (cls).
        value = getattr(ns[cls], method)() if "@classmethod" in prompt else getattr(ns[cls](), method)
        if not (isinstance(value, ns[cls]) if answer == "self" else value is ns[cls]):
            raise TypeError(f"{answer} is bound to {value!r}")

    return runs(f"{prompt}{answer}):\n        return {answer}\n", bound)


def docstring_param(prompt: str, answer: str) -> bool:
    func = defined(r"def (\w+)\(", prompt)

    def documented_are_parameters(ns: dict) -> None:
        params = ns[func].__code__.co_varnames[: ns[func].__code__.co_argcount]
        if not set(re.findall(r":param (\w+):", ns[func].__doc__)) <= set(params):
            raise NameError("a documented name is no parameter")

    return runs(f'{prompt}{answer}: the {answer.strip()}\n    """\n', documented_are_parameters)


def comprehension_var(prompt: str, answer: str) -> bool:
    func, src, out = defined(r"def (\w+)\(", prompt), defined(r"\((\w+)\):", prompt), defined(r"\n    (\w+) =", prompt)
    # [x for ..], {x for ..}, or a generator inside a call: sorted(x for ..)
    close = {"[": "]", "{": "}", "(": ")"}[defined(r"\n    \w+ = \w*([\[{(])", prompt)]
    return runs(f"{prompt}{answer} in {src}{close}\n    return {out}\n", lambda ns: ns[func]([Mock()]))


def recursion_name(prompt: str, answer: str) -> bool:
    func = defined(r"def (\w+)\(n\)", prompt)

    def factorial(ns: dict) -> None:
        if ns[func](4) != 24:
            raise TypeError("not the factorial")

    return runs(f"{prompt}{answer}(n - 1)\n", factorial)


TEXT_JUDGES: dict[str, Callable[[str, str], bool]] = {
    "quote_close": lambda prompt, answer: compiles(f"{prompt}{answer}\n"),
    "bracket_type": lambda prompt, answer: compiles(f"{prompt}{answer}"),
    "bracket_depth": lambda prompt, answer: compiles(f"{prompt}{answer}"),
    "else_vs_except": lambda prompt, answer: compiles(f"{prompt}{answer}:"),
    "indent_after_colon": lambda prompt, answer: compiles(f"{prompt}{answer} pass"),
    "set_vs_str": set_vs_str,
    "docstring_param": docstring_param,
    "return_vs_yield": return_vs_yield,
    "self_attribute": self_attribute,
    "kwarg_recall": lambda prompt, answer: runs(f"{prompt}{answer}=1)\n", lambda ns: None),
    "self_vs_cls": self_vs_cls,
    "comprehension_var": comprehension_var,
    "recursion_name": recursion_name,
}


def induction(ids: tuple[int, ...], answer: int) -> bool:
    """Right when ``answer`` follows the earlier occurrence of the prompt's last token."""
    earlier = [i for i in range(len(ids) - 1) if ids[i] == ids[-1]]
    return len(earlier) == 1 and ids[earlier[0] + 1] == answer


def right(name: str, pair: Pair, clean: bool, answer_is_correct: bool) -> bool:
    name = name.removesuffix(SHIFTED)  # a shifted variant is judged as its task is
    if name == "induction":
        return induction(pair.clean_ids if clean else pair.corrupt_ids,
                         pair.correct_id if answer_is_correct else pair.alternative_id)
    return TEXT_JUDGES[name](pair.clean if clean else pair.corrupt,
                             pair.correct if answer_is_correct else pair.alternative)


def test_every_built_in_task_has_a_judge():
    built_in = {t.name for t in TASKS if type(t).__module__.startswith("glassformer.analysis.tasks.")}
    assert built_in == set(TEXT_JUDGES) | {"induction"}


def test_every_built_in_task_has_a_shifted_variant_to_judge():
    assert set(SHIFTED_TASKS) == {f"{name}{SHIFTED}" for name in [*TEXT_JUDGES, "induction"]}


@pytest.mark.parametrize("name", [*TEXT_JUDGES, "induction", *SHIFTED_TASKS])
def test_exactly_one_answer_is_right_after_each_prompt(name, stdlib_bpe):
    task = SHIFTED_TASKS[name] if name in SHIFTED_TASKS else TASKS[name]
    for seed in (0, 1):
        for pair in task.generate(stdlib_bpe, N, seed=seed, max_len=128).pairs:
            assert right(name, pair, clean=True, answer_is_correct=True), ("clean", pair.example())
            assert not right(name, pair, clean=True, answer_is_correct=False), ("clean", pair.example())
            assert right(name, pair, clean=False, answer_is_correct=False), ("corrupt", pair.example())
            assert not right(name, pair, clean=False, answer_is_correct=True), ("corrupt", pair.example())
