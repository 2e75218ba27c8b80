"""The env configs are the one source of each env's argument names, defaults and meanings."""

import inspect
import re
from dataclasses import MISSING, fields

import pytest

from llmsched_env.kinds import ENV_KINDS

KINDS = sorted(ENV_KINDS)


def _field_defaults(config_class):
    return {
        f.name: f.default if f.default is not MISSING else f.default_factory()
        for f in fields(config_class)
    }


@pytest.mark.parametrize("name", KINDS)
def test_constructor_signature_matches_the_config_fields_and_defaults(name):
    kind = ENV_KINDS[name]
    parameters = inspect.signature(kind.env_class.__init__).parameters
    signature = {p: v.default for p, v in parameters.items() if p != "self"}
    assert signature == _field_defaults(kind.config_class)
    assert list(signature) == list(_field_defaults(kind.config_class))  # same order


@pytest.mark.parametrize("name", KINDS)
def test_docstring_arguments_table_lists_every_field_with_its_default(name):
    kind = ENV_KINDS[name]
    section = kind.env_class.__doc__.split("## Arguments")[1].split("##")[0]
    rows = re.findall(r"^\s*\| ([a-z_, ]+) \| (.+?) \|", section, flags=re.MULTILINE)
    documented = {}
    for names, default in rows:
        if names.strip() == "argument":
            continue
        parts = [n.strip() for n in names.split(",")]
        values = (
            [v.strip().strip("`") for v in default.split(",")]
            if len(parts) > 1
            else [default.strip().strip("`")]
        )
        documented.update(zip(parts, values))
    defaults = _field_defaults(kind.config_class)
    assert list(documented) == list(defaults)
    for arg, default in defaults.items():
        if arg == "load":  # None in the signature: the kind's default load applies
            assert float(documented[arg]) == kind.config_class.default_load
        else:
            assert documented[arg] == repr(default).replace("'", '"'), arg


@pytest.mark.parametrize("name", KINDS)
def test_config_attributes_document_every_field(name):
    config_class = ENV_KINDS[name].config_class
    attributes = config_class.__doc__.split("Attributes:")[1]
    documented = re.findall(r"^        ([a-z_]+):", attributes, flags=re.MULTILINE)
    assert documented == [f.name for f in fields(config_class)]
