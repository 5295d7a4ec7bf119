"""Python-code tasks: minimal pairs from templates over identifiers, literals and nesting found in Python code.

Each class fills one template with identifiers drawn by a seeded RNG; the corruption changes one place, which
changes the next token the code calls for. :class:`~glassformer.analysis.tasks.base.TemplateTask` emits every
drawn pair in both directions (the corrupted prompt is the clean prompt of the mirror pair), so half the pairs
expect each answer and "always say X" cannot solve a task. Under mean ablation the corrupted prompts are never
read, so each prompt alone must decide its answer: in every task below exactly one of the two answers is right
after the clean prompt, and the other one exactly after the corrupted prompt. Why, task by task:

``quote_close`` (``'`` versus ``"``): a string opened with one quote holds one word. Only the quote it was
    opened with closes it; the other quote would be a stray, unmatched quote character inside the string. This
    is the one task where the alternative is implausible rather than illegal: any character but a newline may
    continue a string (the answers stay single bytes so that every byte-level tokenizer has them).
``bracket_type`` (``)`` versus ``]``): the innermost open bracket is ``(`` (a call) or ``[`` (a subscript); a
    closing bracket that does not match it is a syntax error.
``bracket_depth`` (``):`` versus ``:``): the header ``if f(g(x) and y`` still has ``f(`` open, ``if f(g.x) and y``
    has nothing open (the one ``)`` closed ``g(`` in the first and ``f(`` in the second). The next token ends the
    header, so it must close what is open: ``):`` closes ``f(``, a bare ``:`` inside an argument list is a syntax
    error, and ``):`` with nothing open closes a parenthesis that was never opened.
``else_vs_except`` (`` else`` versus `` except``): a body nested as ``try:`` / ``if x:``
    (or ``for``) ends, and the prompt's last line is indented either like the inner header or like the ``try``.
    At the inner block's indentation the line continues that block: ``else`` is legal after ``if``/``for``
    bodies, ``except`` is not (no ``try`` there). At the ``try``'s indentation the line must be its handler:
    ``except``, and ``else`` is illegal because a ``try`` takes ``else`` only after an ``except``.
``indent_after_colon`` (newline + 8 versus newline + 4 spaces): the line at indentation 4 is a compound header
    (``if x:``, ``while x:``, ``with x:``) or a simple statement (``x += 1``). After a header the next line must
    be indented deeper (at 4 it is "expected an indented block"); after a simple statement a deeper line is an
    "unexpected indent", so it stays at 4.
``set_vs_str`` (``.`` versus `` +=``): ``acc`` starts as ``set()`` or ``str()`` and grows in a loop. A set
    has no ``+=`` (TypeError) and grows by ``.add``; a string is immutable, so no method call can grow it (a
    bare ``acc.method(...)`` statement computes a value and drops it), and it grows by ``+=``.
``docstring_param`` (`` b`` versus `` c``): the signature is ``(a, b)`` or ``(a, c)`` and ``a`` is already
    documented; the next ``:param`` names the remaining parameter, and the other name is no parameter at all.
``return_vs_yield`` (`` yield`` versus `` return``): the method is ``__iter__``, or ``__bool__`` or
    ``__next__``, inside ``for x in self.items: if x:``. ``__iter__`` must return an iterator, so it yields; a
    ``return`` there hands iter() an item or None (TypeError). ``__bool__`` must return a bool and ``__next__``
    the next item, so they return; a ``yield`` would make them generator functions, whose generator bool()
    rejects (TypeError) and which next() would hand out as if it were an item.
``self_attribute`` (``b`` versus ``c``): ``__init__`` sets ``self.b`` and nothing sets ``c``, which is also not
    the method's name, so ``self.c`` raises AttributeError.
``kwarg_recall`` (``b`` versus ``c``): the definition's only parameter is ``b=None``; ``c`` is neither a
    parameter (``c=...`` raises TypeError) nor a name defined anywhere (passing ``c`` raises NameError).
``self_vs_cls`` (``self`` versus ``cls``): a ``@property`` receives the instance, named ``self``; a
    ``@classmethod`` receives the class, named ``cls`` (PEP 8's names for exactly these two arguments).
``comprehension_var`` (`` b`` versus `` c``): the comprehension's expression uses ``b``, which is bound nowhere
    else (it is not the parameter, the target or the function), so its ``for`` must bind ``b``; binding ``c``
    leaves ``b`` undefined (NameError).
``recursion_name`` (`` b`` versus `` c``): the function is called ``b``; ``c`` is defined nowhere (NameError).

In the tasks whose answers are drawn names (``docstring_param``, ``self_attribute``, ``kwarg_recall``,
``comprehension_var``, ``recursion_name``) the two names are drawn apart from the other names in the prompt, so
the wrong one is never bound by accident. ``tests/analysis/test_task_answers.py`` asks Python itself to confirm
all of the above on generated pairs.

Shifted variants (:meth:`PythonTask.shifted`, named ``<task>@shifted``) fill the same templates with held-out
names (:data:`~glassformer.analysis.tasks.python_pools.HELD_OUT`, disjoint from every in-distribution name), in
other wording where the template allows, after one to three unrelated statements or a small function that bind
no name of the prompt and mention no answer. The reasons above hold unchanged for the other wording: ``with``,
``if not`` and ``while not`` headers end like ``if`` (``bracket_depth``); a ``while`` or ``for .. in
reversed(..)`` body takes ``else`` like ``if`` and ``for`` (``else_vs_except``); ``try:``, ``if not x:`` and
``while not x:`` need an indented block, ``assert x``, ``x *= 2``, ``del x`` and ``print(x)`` are simple
statements (``indent_after_colon``); a string opened after ``return``, an annotation or ``f(`` still closes with
its own quote; ``yield``, ``assert`` and ``print(`` leave the call or subscript innermost (``bracket_type``); a
loop over ``sorted(xs)``, ``reversed(xs)`` or ``list(xs)`` grows ``acc`` as over ``xs``; ``if x is not None:`` or
``if not x:`` inside the loop changes nothing for ``return_vs_yield``; set comprehensions and generators in
``sorted(..)``/``set(..)`` bind their variable as a list comprehension does; other default values, bodies, base
cases (``n < 2``, ``not n``, ``n in (0, 1)``), docstring phrasing and ``class C(object):`` headers decide
nothing. The name-recall tasks draw their answers from the held-out names by the same rule. The same test judges
the shifted pairs, whole prompts included.
"""

from __future__ import annotations

import random

from glassformer.analysis.tasks.base import Task, TemplateTask
from glassformer.analysis.tasks.python_pools import (
    CLASSES,
    FUNCTIONS,
    HELD_OUT,
    IDENTIFIERS,
    IN_DISTRIBUTION,
    METHODS,
    Pools,
    distractor,
    words,
)

__all__ = ["CLASSES", "FUNCTIONS", "IDENTIFIERS", "METHODS", "PYTHON_TASKS", "PythonTask", "others", "pick"]


def pick(rng: random.Random, pool: tuple[str, ...] | list[str], k: int = 1) -> list[str]:
    """``k`` distinct names of ``pool``, drawn by ``rng``.

    Example:
        >>> sorted(pick(random.Random(0), ("a", "b", "c"), 3))
        ['a', 'b', 'c']
    """
    return rng.sample(list(pool), k)


def others(pool: tuple[str, ...] | list[str], *taken: str) -> list[str]:
    """The names of ``pool`` other than ``taken`` (so a drawn name never collides with one already in the prompt).

    Example:
        >>> others(("a", "b", "c"), "b")
        ['a', 'c']
    """
    return [w for w in pool if w not in taken]


class PythonTask(TemplateTask):
    """A Python-code template task. ``make`` reads its names from ``self.pools`` and every choice of wording
    through :meth:`wording`, so :meth:`shifted` can swap both; the shifted variant also puts distractor code
    (:func:`~glassformer.analysis.tasks.python_pools.distractor`) before each pair's prompts. In distribution
    nothing is drawn that was not drawn before these hooks existed, so the pairs stay as they were.

    Example:
        >>> from glassformer.analysis.tasks import TASKS
        >>> s = TASKS["self_attribute"].shifted()
        >>> s.name, s.is_shifted, "x" in s.answer_pool, "x" in TASKS["self_attribute"].answer_pool
        ('self_attribute@shifted', True, True, False)
    """

    pools: Pools = IN_DISTRIBUTION
    is_shifted: bool = False
    answer_names: str = ""
    """The pool of ``self.pools`` the answers are drawn from ("identifiers" or "functions"); "" when the task
    has fixed ``answers``."""
    answer_space: bool = False
    """Whether drawn answers carry a leading space (`` name``, as after ``:param``) or not (``name``)."""

    @property
    def answer_pool(self) -> tuple[str, ...]:  # type: ignore[override]
        """The drawn answers' pool, read from ``self.pools`` (so the shifted variant's answers are held out).

        Example:
            >>> from glassformer.analysis.tasks import TASKS
            >>> TASKS["recursion_name"].answer_pool[:2], TASKS["quote_close"].answer_pool
            ((' process', ' handle'), ())
        """
        if not self.answer_names:
            return ()
        space = " " if self.answer_space else ""
        return tuple(space + w for w in getattr(self.pools, self.answer_names))

    def wording(self, rng: random.Random, usual: str | tuple[str, ...], shifted: tuple[str, ...]) -> str:
        """In distribution ``usual`` (a fixed text, drawing nothing, or a choice drawn by ``rng``); in the shifted
        variant a choice of ``shifted``.

        Example:
            >>> PythonTask().wording(random.Random(0), "if", ("while",))
            'if'
        """
        if self.is_shifted:
            return rng.choice(shifted)
        return usual if isinstance(usual, str) else rng.choice(usual)

    def context(self, rng: random.Random, candidate: tuple[str, str, str, str]) -> str:
        """Distractor code before the shifted variant's prompts; "" in distribution, drawing nothing.

        Example:
            >>> t = QuoteClose()
            >>> t.context(random.Random(0), ("x", "y", "'", '"')), t.shifted().context(random.Random(1), ("x", "y", "'", '"'))
            ('', 'def gamma(zeta):\\n    return zeta + 8\\n\\n')
        """
        if not self.is_shifted:
            return ""
        return distractor(rng, taken=words(*candidate), answers=words(*candidate[2:]))

    def shifted(self) -> Task | None:
        """The task on held-out names (:data:`~glassformer.analysis.tasks.python_pools.HELD_OUT`), in other
        wording, after distractor code; None for a variant that is already shifted.

        Example:
            >>> s = QuoteClose().shifted()
            >>> s.name, s.pools is HELD_OUT, s.shifted()
            ('quote_close@shifted', True, None)
        """
        if self.is_shifted:
            return None
        return self.shifted_copy(f"{self.description} [shifted: held-out names, other wording, distractor code]",
                                 pools=HELD_OUT, is_shifted=True)


class QuoteClose(PythonTask):
    name = "quote_close"
    description = "close a string with the quote it was opened with (' versus \")"
    answers = ("'", '"')

    def make(self, rng, pool):
        func, var, word = pick(rng, self.pools.functions)[0], *pick(rng, self.pools.identifiers, 2)
        lead = self.wording(rng, f"{var} = ", ("return ", f"{var}: str = ", f"{var} = {func}("))
        base = f"def {func}():\n    {lead}"
        return f"{base}'{word}", f'{base}"{word}', "'", '"'


class BracketType(PythonTask):
    name = "bracket_type"
    description = "close a call with ')' and a subscript with ']'"
    answers = (")", "]")

    def make(self, rng, pool):
        func, obj, arg = pick(rng, self.pools.functions)[0], *pick(rng, self.pools.identifiers, 2)
        lead = self.wording(rng, "return ", ("yield ", "assert ", "print("))
        head = f"def {func}({obj}, {arg}):\n    {lead}{obj}"
        return f"{head}({arg}", f"{head}[{arg}", ")", "]"


class BracketDepth(PythonTask):
    name = "bracket_depth"
    description = "end an 'if'/'while' header with '):' while a parenthesis is open and ':' when none is"
    answers = ("):", ":")

    def make(self, rng, pool):
        f, g = pick(rng, self.pools.functions, 2)
        obj, other = pick(rng, self.pools.identifiers, 2)
        suffix = self.wording(rng, "_all", ("_any", "_each"))
        keyword = self.wording(rng, ("if", "while"), ("with", "if not", "while not"))
        head = f"def {f}{suffix}({obj}, {other}):\n    {keyword} {f}({g}"
        tail = f"{obj}) {self.wording(rng, ('and', 'or'), ('and not', 'or not'))} {other}"
        return f"{head}({tail}", f"{head}.{tail}", "):", ":"


class SetVersusStr(PythonTask):
    name = "set_vs_str"
    description = "grow a set with '.add(' but a string with ' +=' (answer '.' versus ' +=')"
    answers = (".", " +=")

    def make(self, rng, pool):
        func = pick(rng, self.pools.functions)[0]
        acc, x, xs = pick(rng, self.pools.identifiers, 3)
        loop = self.wording(rng, xs, (f"sorted({xs})", f"reversed({xs})", f"list({xs})"))
        body = f"    for {x} in {loop}:\n        {acc}"
        head = f"def {func}({xs}):\n    {acc} = "
        return f"{head}set()\n{body}", f"{head}str()\n{body}", ".", " +="


class ElseVersusExcept(PythonTask):
    name = "else_vs_except"
    description = "a dedent to the inner 'if'/'for' continues it with 'else'; a dedent to the 'try' needs 'except'"
    answers = (" else", " except")

    def make(self, rng, pool):
        func, call = pick(rng, self.pools.functions, 2)
        x, y = pick(rng, self.pools.identifiers, 2)
        inner = self.wording(rng, (f"if {x}:\n            {call}({x})", f"for {y} in {x}:\n            {call}({y})"),
                             (f"while {x}:\n            {call}({x})",
                              f"for {y} in reversed({x}):\n            {call}({y})"))
        body = f"def {func}({x}):\n    try:\n        {inner}"
        return f"{body}\n       ", f"{body}\n   ", " else", " except"


class IndentAfterColon(PythonTask):
    name = "indent_after_colon"
    description = "the line after a header ending in ':' is indented one level deeper; after a statement it is not"
    answers = ("\n       ", "\n   ")

    def make(self, rng, pool):
        func, x = pick(rng, self.pools.functions)[0], pick(rng, self.pools.identifiers)[0]
        head = f"def {func}({x}):\n    "
        compound = self.wording(rng, tuple(f"{k} {x}:" for k in ("if", "while", "with")),
                                ("try:", f"if not {x}:", f"while not {x}:"))
        simple = self.wording(rng, tuple(f"{x} {op} 1" for op in ("+=", "-=", "=")),
                              (f"assert {x}", f"{x} *= 2", f"del {x}", f"print({x})"))
        return f"{head}{compound}", f"{head}{simple}", "\n       ", "\n   "


class DocstringParam(PythonTask):
    name = "docstring_param"
    description = "the next ':param' in a docstring names the next parameter of the signature"
    answer_names, answer_space = "identifiers", True

    def make(self, rng, pool):
        func = pick(rng, self.pools.functions)[0]
        b, c = (w.strip() for w in pick(rng, pool, 2))
        a = rng.choice(others(self.pools.identifiers, b, c))
        summary = self.wording(rng, f"{func.capitalize()} it.", (f"Run {func}.", f"Call {func} once."))
        about = self.wording(rng, f"the {a}", (f"a {a}", f"which {a} to use"))
        doc = f'):\n    """{summary}\n\n    :param {a}: {about}\n    :param'
        return f"def {func}({a}, {b}{doc}", f"def {func}({a}, {c}{doc}", f" {b}", f" {c}"


class ReturnVersusYield(PythonTask):
    name = "return_vs_yield"
    description = "'__iter__' is a generator and yields; '__bool__' and '__next__' return (inside a loop)"
    answers = (" yield", " return")

    def make(self, rng, pool):
        cls = pick(rng, self.pools.classes)[0]
        x, items = pick(rng, self.pools.identifiers, 2)
        header = self.wording(rng, f"class {cls}:", (f"class {cls}(object):",))
        test = self.wording(rng, x, (f"{x} is not None", f"not {x}"))

        def text(dunder: str) -> str:
            return (f"{header}\n    def __{dunder}__(self):\n        for {x} in self.{items}:\n"
                    f"            if {test}:\n               ")

        return text("iter"), text(rng.choice(("bool", "next"))), " yield", " return"


class SelfAttribute(PythonTask):
    name = "self_attribute"
    description = "recall the attribute that __init__ set on self"
    answer_names = "identifiers"

    def make(self, rng, pool):
        b, c = pick(rng, pool, 2)
        cls, method = pick(rng, self.pools.classes)[0], rng.choice(others(self.pools.functions, b, c))
        header = self.wording(rng, f"class {cls}:", (f"class {cls}(object):",))
        value = self.wording(rng, "None", ("0", "[]", "False"))

        def text(attr: str) -> str:
            return (f"{header}\n    def __init__(self):\n        self.{attr} = {value}\n\n"
                    f"    def {method}(self):\n        return self.")

        return text(b), text(c), b, c


class KeywordArgument(PythonTask):
    name = "kwarg_recall"
    description = "a call passes the keyword argument the definition declared"
    answer_names = "identifiers"

    def make(self, rng, pool):
        b, c = pick(rng, pool, 2)
        func = rng.choice(others(self.pools.functions, b, c))
        default = self.wording(rng, "None", ("0", "()", "False"))
        body = self.wording(rng, "pass", ("return None", "return 0"))

        def text(arg: str) -> str:
            return f"def {func}({arg}={default}):\n    {body}\n\n\n{func}("

        return text(b), text(c), b, c


class SelfVersusCls(PythonTask):
    name = "self_vs_cls"
    description = "a property's first parameter is 'self', a classmethod's is 'cls'"
    answers = ("self", "cls")

    def make(self, rng, pool):
        cls, method = pick(rng, self.pools.classes)[0], pick(rng, self.pools.functions)[0]
        header = self.wording(rng, f"class {cls}:", (f"class {cls}(object):", f"class {cls}:\n    __slots__ = ()"))
        tail = f"\n    def {method}("
        return f"{header}\n    @property{tail}", f"{header}\n    @classmethod{tail}", "self", "cls"


class ComprehensionVariable(PythonTask):
    name = "comprehension_var"
    description = "a comprehension's 'for' binds the variable its expression used"
    answer_names, answer_space = "identifiers", True

    def make(self, rng, pool):
        meth = pick(rng, self.pools.methods)[0]
        b, c = pick(rng, pool, 2)
        func = rng.choice(others(self.pools.functions, b.strip(), c.strip()))
        out, src = pick(rng, others(self.pools.identifiers, b.strip(), c.strip(), func), 2)
        opener = self.wording(rng, "[", ("{", "sorted(", "set("))

        def text(var: str) -> str:
            return f"def {func}({src}):\n    {out} = {opener}{var.strip()}.{meth}() for"

        return text(b), text(c), b, c


class RecursionName(PythonTask):
    name = "recursion_name"
    description = "a recursive function calls itself by the name it was defined with"
    answer_names, answer_space = "functions", True

    def make(self, rng, pool):
        b, c = pick(rng, pool, 2)
        base = self.wording(rng, "n <= 1", ("n < 2", "not n", "n in (0, 1)"))

        def text(func: str) -> str:
            return f"def {func.strip()}(n):\n    if {base}:\n        return 1\n    return n *"

        return text(b), text(c), b, c


PYTHON_TASKS: tuple[type[PythonTask], ...] = (
    QuoteClose, BracketType, BracketDepth, SetVersusStr, ElseVersusExcept, IndentAfterColon, DocstringParam,
    ReturnVersusYield, SelfAttribute, KeywordArgument, SelfVersusCls, ComprehensionVariable, RecursionName,
)
