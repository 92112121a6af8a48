"""ldminv_core.threadsafe_ast: ``ast.parse`` on several threads at once no longer fails.

The race is provoked in a fresh interpreter: three threads parse a large source while every
garbage collection runs Python code and the interpreter switches threads every microsecond, so
a thread is switched out inside the AST builder. On an interpreter with the bug, the unguarded
run must show "AST constructor recursion depth mismatch" (proving the provocation works); the
guarded run, the same work, must show none.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ldminv_core
from ldminv_core import threadsafe_ast

ROOT = Path(__file__).resolve().parents[2]

_RACE = textwrap.dedent("""
    import ast, gc, json, sys, threading
    if sys.argv[1] == "guarded":
        sys.path.insert(0, sys.argv[2])
        import ldminv_core  # installs the guard
    source = open(ast.__file__).read() * 3
    errors = []

    def work():
        for _ in range(12):
            try:
                ast.parse(source)
                ast.literal_eval("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}")
            except SystemError as e:
                errors.append(str(e))
                return

    gc.set_threshold(20)
    gc.callbacks.append(lambda phase, info: sum(range(50)))
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(errors))
""")


def _race(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _RACE, mode, str(ROOT)], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_ldminv_core_guards_ast_parse_and_what_calls_it_by_name():
    assert ldminv_core.threadsafe_ast.installed() == threadsafe_ast.AFFECTED
    if threadsafe_ast.AFFECTED:
        # numpy's header parse goes through ast.literal_eval, which looks ast.parse up by name
        assert ast.literal_eval.__globals__["parse"] is ast.parse
    assert ast.literal_eval("(3, {'a': 1})") == (3, {"a": 1})
    assert isinstance(ast.parse("x = 1"), ast.Module)


def test_install_is_idempotent():
    before = ast.parse
    assert threadsafe_ast.install(force=True) is True
    once = ast.parse
    assert threadsafe_ast.install(force=True) is True
    assert ast.parse is once
    if threadsafe_ast.AFFECTED:
        assert once is before


@pytest.mark.skipif(not threadsafe_ast.AFFECTED, reason="this interpreter builds ASTs per thread")
def test_the_race_fails_unguarded_and_never_guarded():
    # 1. the provocation works: some try of the unguarded run fails (3 tries at most)
    seen = []
    for _ in range(3):
        seen = _race("unguarded")
        if seen:
            break
    assert seen and "recursion depth mismatch" in seen[0]
    # 2. the same work with ldminv_core imported never fails
    for _ in range(2):
        assert _race("guarded") == []
