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
"""

from __future__ import annotations

import random

from glassformer.analysis.tasks.base import TemplateTask

IDENTIFIERS = (
    "name", "value", "data", "path", "key", "items", "result", "text", "size", "count", "index", "line", "node",
    "obj", "config", "parent", "source", "target", "mode", "func", "msg", "filename", "prefix", "suffix",
    "start", "end", "length", "width", "height", "level", "state", "status", "buffer", "stream", "module",
    "options", "default", "timeout", "encoding", "errors", "context", "handler", "callback", "request",
    "response", "header", "headers", "body", "url", "host", "port", "user", "token", "block", "chunk", "offset",
    "limit", "total", "number", "word", "words", "lines", "fields", "field", "record", "entry", "entries", "tag",
    "label", "title", "pattern", "match", "group", "flags", "parser", "reader", "writer", "output", "root",
    "tree", "child", "children", "element", "attr", "attrs", "method", "base", "item", "values", "keys", "pairs",
    "table", "row", "column", "cell", "stack", "queue", "cache", "lock", "event", "thread", "process", "task",
    "job", "loop", "seq", "string", "char", "code", "message", "reason", "error", "info", "debug", "verbose",
    "strict", "depth", "step", "delta", "scale", "factor", "weight", "color", "style", "image", "frame", "window",
    "owner", "version", "date", "stamp", "year", "month", "day", "args", "kwargs", "args_list", "counter",
    "files", "dirs", "names", "parts", "result_list", "target_dir", "new_value", "old_value",
)
FUNCTIONS = (
    "process", "handle", "update", "parse", "load", "save", "build", "render", "compute", "validate", "convert",
    "fetch", "apply", "check", "reset", "write", "read", "run", "start", "stop", "close", "clear", "remove",
    "send", "emit", "walk", "visit", "split", "join", "merge", "resolve", "normalize", "encode", "decode",
    "lookup", "register", "dispatch", "flush", "refresh", "collect", "filter_items", "get_value", "set_value",
    "make_path", "find", "search", "create", "parse_args", "main", "helper", "wrapper", "transform",
)
CLASSES = (
    "Parser", "Handler", "Reader", "Writer", "Node", "Config", "Client", "Server", "Manager", "Builder",
    "Loader", "Item", "Record", "Entry", "Table", "Cache", "Queue", "Stack", "Tree", "Buffer", "Stream",
    "Request", "Response", "Message", "Event", "Worker", "Task", "Job", "Model", "View", "Widget", "Window",
    "Frame", "Shape", "Point", "Vector", "Matrix", "Counter", "Timer", "Logger", "Context", "Session", "Field",
)
METHODS = ("strip", "lower", "upper", "split", "copy", "keys", "values", "items", "encode", "decode", "close")


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


class QuoteClose(TemplateTask):
    name = "quote_close"
    description = "close a string with the quote it was opened with (' versus \")"
    answers = ("'", '"')

    def make(self, rng, pool):
        func, var, word = pick(rng, FUNCTIONS)[0], *pick(rng, IDENTIFIERS, 2)
        base = f"def {func}():\n    {var} = "
        return f"{base}'{word}", f'{base}"{word}', "'", '"'


class BracketType(TemplateTask):
    name = "bracket_type"
    description = "close a call with ')' and a subscript with ']'"
    answers = (")", "]")

    def make(self, rng, pool):
        func, obj, arg = pick(rng, FUNCTIONS)[0], *pick(rng, IDENTIFIERS, 2)
        head = f"def {func}({obj}, {arg}):\n    return {obj}"
        return f"{head}({arg}", f"{head}[{arg}", ")", "]"


class BracketDepth(TemplateTask):
    name = "bracket_depth"
    description = "end an 'if'/'while' header with '):' while a parenthesis is open and ':' when none is"
    answers = ("):", ":")

    def make(self, rng, pool):
        f, g = pick(rng, FUNCTIONS, 2)
        obj, other = pick(rng, IDENTIFIERS, 2)
        head = f"def {f}_all({obj}, {other}):\n    {rng.choice(('if', 'while'))} {f}({g}"
        tail = f"{obj}) {rng.choice(('and', 'or'))} {other}"
        return f"{head}({tail}", f"{head}.{tail}", "):", ":"


class SetVersusStr(TemplateTask):
    name = "set_vs_str"
    description = "grow a set with '.add(' but a string with ' +=' (answer '.' versus ' +=')"
    answers = (".", " +=")

    def make(self, rng, pool):
        func = pick(rng, FUNCTIONS)[0]
        acc, x, xs = pick(rng, IDENTIFIERS, 3)
        body = f"    for {x} in {xs}:\n        {acc}"
        head = f"def {func}({xs}):\n    {acc} = "
        return f"{head}set()\n{body}", f"{head}str()\n{body}", ".", " +="


class ElseVersusExcept(TemplateTask):
    name = "else_vs_except"
    description = "a dedent to the inner 'if'/'for' continues it with 'else'; a dedent to the 'try' needs 'except'"
    answers = (" else", " except")

    def make(self, rng, pool):
        func, call = pick(rng, FUNCTIONS, 2)
        x, y = pick(rng, IDENTIFIERS, 2)
        inner = rng.choice((f"if {x}:\n            {call}({x})", f"for {y} in {x}:\n            {call}({y})"))
        body = f"def {func}({x}):\n    try:\n        {inner}"
        return f"{body}\n       ", f"{body}\n   ", " else", " except"


class IndentAfterColon(TemplateTask):
    name = "indent_after_colon"
    description = "the line after a header ending in ':' is indented one level deeper; after a statement it is not"
    answers = ("\n       ", "\n   ")

    def make(self, rng, pool):
        func, x = pick(rng, FUNCTIONS)[0], pick(rng, IDENTIFIERS)[0]
        head = f"def {func}({x}):\n    "
        compound = f"{rng.choice(('if', 'while', 'with'))} {x}:"
        simple = f"{x} {rng.choice(('+=', '-=', '='))} 1"
        return f"{head}{compound}", f"{head}{simple}", "\n       ", "\n   "


class DocstringParam(TemplateTask):
    name = "docstring_param"
    description = "the next ':param' in a docstring names the next parameter of the signature"
    answer_pool = tuple(f" {w}" for w in IDENTIFIERS)

    def make(self, rng, pool):
        func = pick(rng, FUNCTIONS)[0]
        b, c = (w.strip() for w in pick(rng, pool, 2))
        a = rng.choice(others(IDENTIFIERS, b, c))
        doc = f'):\n    """{func.capitalize()} it.\n\n    :param {a}: the {a}\n    :param'
        return f"def {func}({a}, {b}{doc}", f"def {func}({a}, {c}{doc}", f" {b}", f" {c}"


class ReturnVersusYield(TemplateTask):
    name = "return_vs_yield"
    description = "'__iter__' is a generator and yields; '__bool__' and '__next__' return (inside a loop)"
    answers = (" yield", " return")

    def make(self, rng, pool):
        cls = pick(rng, CLASSES)[0]
        x, items = pick(rng, IDENTIFIERS, 2)

        def text(dunder: str) -> str:
            return (f"class {cls}:\n    def __{dunder}__(self):\n        for {x} in self.{items}:\n"
                    f"            if {x}:\n               ")

        return text("iter"), text(rng.choice(("bool", "next"))), " yield", " return"


class SelfAttribute(TemplateTask):
    name = "self_attribute"
    description = "recall the attribute that __init__ set on self"
    answer_pool = IDENTIFIERS

    def make(self, rng, pool):
        b, c = pick(rng, pool, 2)
        cls, method = pick(rng, CLASSES)[0], rng.choice(others(FUNCTIONS, b, c))

        def text(attr: str) -> str:
            return (f"class {cls}:\n    def __init__(self):\n        self.{attr} = None\n\n"
                    f"    def {method}(self):\n        return self.")

        return text(b), text(c), b, c


class KeywordArgument(TemplateTask):
    name = "kwarg_recall"
    description = "a call passes the keyword argument the definition declared"
    answer_pool = IDENTIFIERS

    def make(self, rng, pool):
        b, c = pick(rng, pool, 2)
        func = rng.choice(others(FUNCTIONS, b, c))

        def text(arg: str) -> str:
            return f"def {func}({arg}=None):\n    pass\n\n\n{func}("

        return text(b), text(c), b, c


class SelfVersusCls(TemplateTask):
    name = "self_vs_cls"
    description = "a property's first parameter is 'self', a classmethod's is 'cls'"
    answers = ("self", "cls")

    def make(self, rng, pool):
        cls, method = pick(rng, CLASSES)[0], pick(rng, FUNCTIONS)[0]
        tail = f"\n    def {method}("
        return f"class {cls}:\n    @property{tail}", f"class {cls}:\n    @classmethod{tail}", "self", "cls"


class ComprehensionVariable(TemplateTask):
    name = "comprehension_var"
    description = "a comprehension's 'for' binds the variable its expression used"
    answer_pool = tuple(f" {w}" for w in IDENTIFIERS)

    def make(self, rng, pool):
        meth = pick(rng, METHODS)[0]
        b, c = pick(rng, pool, 2)
        func = rng.choice(others(FUNCTIONS, b.strip(), c.strip()))
        out, src = pick(rng, others(IDENTIFIERS, b.strip(), c.strip(), func), 2)

        def text(var: str) -> str:
            return f"def {func}({src}):\n    {out} = [{var.strip()}.{meth}() for"

        return text(b), text(c), b, c


class RecursionName(TemplateTask):
    name = "recursion_name"
    description = "a recursive function calls itself by the name it was defined with"
    answer_pool = tuple(f" {w}" for w in FUNCTIONS)

    def make(self, rng, pool):
        b, c = pick(rng, pool, 2)

        def text(func: str) -> str:
            return f"def {func.strip()}(n):\n    if n <= 1:\n        return 1\n    return n *"

        return text(b), text(c), b, c


PYTHON_TASKS: tuple[type[TemplateTask], ...] = (
    QuoteClose, BracketType, BracketDepth, SetVersusStr, ElseVersusExcept, IndentAfterColon, DocstringParam,
    ReturnVersusYield, SelfAttribute, KeywordArgument, SelfVersusCls, ComprehensionVariable, RecursionName,
)
