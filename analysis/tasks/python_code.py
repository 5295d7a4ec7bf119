"""Python-code tasks: minimal pairs from templates over identifiers, literals and nesting found in Python code.

Each class fills one template with identifiers drawn by a seeded RNG; the corruption changes one place, which
changes the next token the code calls for. Where a task is symmetric (e.g. single versus double quotes) the
direction is drawn too, so "always say X" cannot solve it.
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
    return rng.sample(list(pool), k)


def swap_if(rng: random.Random, clean: str, corrupt: str, correct: str, alt: str) -> tuple[str, str, str, str]:
    """Draw the direction of a symmetric pair."""
    return (clean, corrupt, correct, alt) if rng.random() < 0.5 else (corrupt, clean, alt, correct)


class QuoteClose(TemplateTask):
    name = "quote_close"
    description = "close a string with the quote it was opened with (' versus \")"
    answers = ("'", '"')

    def make(self, rng, pool):
        func, var, word = pick(rng, FUNCTIONS)[0], *pick(rng, IDENTIFIERS, 2)
        base = f"def {func}():\n    {var} = "
        return swap_if(rng, f"{base}'{word}", f'{base}"{word}', "'", '"')


class BracketType(TemplateTask):
    name = "bracket_type"
    description = "close a call with ')' and a subscript with ']'"
    answers = (")", "]")

    def make(self, rng, pool):
        func, obj, arg = pick(rng, FUNCTIONS)[0], *pick(rng, IDENTIFIERS, 2)
        head = f"def {func}({obj}, {arg}):\n    return {obj}"
        return swap_if(rng, f"{head}({arg}", f"{head}[{arg}", ")", "]")


class BracketDepth(TemplateTask):
    name = "bracket_depth"
    description = "close two open parentheses with '))' and one with ')'"
    answers = ("))", ")")

    def make(self, rng, pool):
        f, g = pick(rng, FUNCTIONS, 2)
        obj, arg = pick(rng, IDENTIFIERS, 2)
        head = f"def {f}_all({obj}):\n    return {f}({g}"
        return swap_if(rng, f"{head}({obj}", f"{head}.{obj}", "))", ")")


class SetVersusStr(TemplateTask):
    name = "set_vs_str"
    description = "grow a set with '.add(' but a string with ' +=' (answer '.' versus ' +=')"
    answers = (".", " +=")

    def make(self, rng, pool):
        func = pick(rng, FUNCTIONS)[0]
        acc, x, xs = pick(rng, IDENTIFIERS, 3)
        body = f"    for {x} in {xs}:\n        {acc}"
        head = f"def {func}({xs}):\n    {acc} = "
        return swap_if(rng, f"{head}set()\n{body}", f"{head}str()\n{body}", ".", " +=")


class ElifElse(TemplateTask):
    name = "elif_else"
    description = "after a 'for' block only 'else' may follow; after an 'if' block 'elif' may"
    answers = (" else", " elif")

    def make(self, rng, pool):
        func, call = pick(rng, FUNCTIONS, 2)
        x, xs = pick(rng, IDENTIFIERS, 2)
        tail = f" {x} in {xs}:\n        {call}({x})\n   "
        head = f"def {func}({x}, {xs}):\n   "
        return f"{head} for{tail}", f"{head} if{tail}", " else", " elif"


class IndentAfterColon(TemplateTask):
    name = "indent_after_colon"
    description = "the line after 'def ...:' is indented one level deeper than the def (method versus function)"
    answers = ("\n       ", "\n   ")

    def make(self, rng, pool):
        cls, method = pick(rng, CLASSES)[0], pick(rng, FUNCTIONS)[0]
        arg = pick(rng, IDENTIFIERS)[0]
        sig = f"def {method}(self, {arg}):"
        return swap_if(rng, f"class {cls}:\n    {sig}", f"class {cls}:\n{sig}", "\n       ", "\n   ")


class DocstringParam(TemplateTask):
    name = "docstring_param"
    description = "the next ':param' in a docstring names the next parameter of the signature"
    answer_pool = tuple(f" {w}" for w in IDENTIFIERS)

    def make(self, rng, pool):
        func = pick(rng, FUNCTIONS)[0]
        b, c = (w.strip() for w in pick(rng, pool, 2))
        a = rng.choice([w for w in IDENTIFIERS if w not in (b, c)])
        doc = f'):\n    """{func.capitalize()} it.\n\n    :param {a}: the {a}\n    :param'
        return f"def {func}({a}, {b}{doc}", f"def {func}({a}, {c}{doc}", f" {b}", f" {c}"


class ReturnVersusYield(TemplateTask):
    name = "return_vs_yield"
    description = "a function that has yielded is a generator and yields again; one that has not returns"
    answers = (" yield", " return")

    def make(self, rng, pool):
        func, x = pick(rng, FUNCTIONS)[0], pick(rng, IDENTIFIERS)[0]
        head = f"def {func}({x}):\n   "
        return swap_if(rng, f"{head} yield {x}\n   ", f"{head} assert {x}\n   ", " yield", " return")


class SelfAttribute(TemplateTask):
    name = "self_attribute"
    description = "recall the attribute that __init__ set on self"
    answer_pool = IDENTIFIERS

    def make(self, rng, pool):
        cls, method = pick(rng, CLASSES)[0], pick(rng, FUNCTIONS)[0]
        b, c = pick(rng, pool, 2)

        def text(attr: str) -> str:
            return (f"class {cls}:\n    def __init__(self):\n        self.{attr} = None\n\n"
                    f"    def {method}(self):\n        return self.")

        return text(b), text(c), b, c


class KeywordArgument(TemplateTask):
    name = "kwarg_recall"
    description = "a call passes the keyword argument the definition declared"
    answer_pool = IDENTIFIERS

    def make(self, rng, pool):
        func = pick(rng, FUNCTIONS)[0]
        b, c = pick(rng, pool, 2)

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
        return swap_if(rng, f"class {cls}:\n    @property{tail}", f"class {cls}:\n    @classmethod{tail}",
                       "self", "cls")


class ComprehensionVariable(TemplateTask):
    name = "comprehension_var"
    description = "a comprehension's 'for' binds the variable its expression used"
    answer_pool = tuple(f" {w}" for w in IDENTIFIERS)

    def make(self, rng, pool):
        func, meth = pick(rng, FUNCTIONS)[0], pick(rng, METHODS)[0]
        b, c = pick(rng, pool, 2)
        out, src = pick(rng, [w for w in IDENTIFIERS if w not in (b.strip(), c.strip())], 2)

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
    QuoteClose, BracketType, BracketDepth, SetVersusStr, ElifElse, IndentAfterColon, DocstringParam,
    ReturnVersusYield, SelfAttribute, KeywordArgument, SelfVersusCls, ComprehensionVariable, RecursionName,
)
