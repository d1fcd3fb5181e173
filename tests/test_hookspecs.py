"""The plugin contract is documented: every hookspec names and explains each of its arguments."""

from __future__ import annotations

import inspect
import re

from dropwarden import hookspecs


def _hookspecs():
    return [
        (name, func)
        for name, func in vars(hookspecs).items()
        if callable(func) and hasattr(func, "dropwarden_spec")
    ]


def test_every_hook_is_prefixed_and_there_are_registration_hooks_for_each_kind():
    names = {name for name, _ in _hookspecs()}
    assert all(name.startswith("dropwarden_") for name in names)
    assert {
        "dropwarden_register_detectors",
        "dropwarden_register_extractors",
        "dropwarden_register_actions",
        "dropwarden_register_commands",
        "dropwarden_doctor_checks",
    } <= names


def test_every_hookspec_documents_every_argument_and_its_return():
    for name, func in _hookspecs():
        doc = inspect.getdoc(func) or ""
        assert doc.strip(), f"{name} has no docstring"
        args_section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
        for argument in inspect.signature(func).parameters:
            assert re.search(rf"^\s+{argument}: \S", args_section, re.M), f"{name}: `{argument}` undocumented"
        assert "Returns:" in doc, f"{name}: return contract undocumented"
