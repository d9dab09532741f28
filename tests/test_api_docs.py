"""docs/api.md documents the whole public API: every name of ``mycelium.__all__``,
``mycelium.aio``, ``mycelium.errors`` and ``mycelium.config``, every public method and
property of the public classes (in the class's own section), and every field of every
error. The check runs from code to docs, so a name added to the code fails here until it
is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import mycelium
import mycelium.aio
import mycelium.config
import mycelium.errors

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
README = API_DOC.parents[1] / "README.md"
MODULES = (mycelium, mycelium.aio, mycelium.errors, mycelium.config)
#: Parameters of an error's constructor that are its message, not a field.
MESSAGE_PARAMS = {"message"}
#: Config sections documented together under one heading.
SHARED_SECTIONS = {"ServerConfig", "PerformanceConfig", "MetricsConfig", "BridgeConfig"}


def _doc() -> str:
    return API_DOC.read_text()


def _public() -> list[tuple[str, str, object]]:
    return [(m.__name__, name, getattr(m, name)) for m in MODULES for name in m.__all__]


def _section(doc: str, name: str) -> str:
    """The text under the ``### `name` `` heading (or a heading naming it) up to the next."""
    for part in re.split(r"^### ", doc, flags=re.MULTILINE)[1:]:
        heading = part.split("\n", 1)[0]
        if re.search(rf"`{re.escape(name)}`", heading):
            return part
    pytest.fail(f"docs/api.md has no '### `{name}`' section")


def _members(cls: type) -> list[str]:
    """Public methods, properties and fields defined by Mycelium's own classes in the MRO
    (not those of str, Exception or msgspec.Struct)."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("mycelium"):
            names.update(dict.fromkeys(n for n in vars(klass) if not n.startswith("_")))
    return list(names)


def _mentioned(text: str, name: str) -> bool:
    """Whether ``name`` appears as code: `name`, .name or name(."""
    return re.search(rf"[`.]{re.escape(name)}\b|\b{re.escape(name)}\(", text) is not None


@pytest.mark.parametrize(("module", "name", "obj"), _public(), ids=lambda v: str(v)[:40])
def test_every_public_name_is_documented(module: str, name: str, obj: object) -> None:
    assert f"`{name}" in _doc() or f"{name}(" in _doc(), f"{module}.{name} is not in docs/api.md"


def _classes() -> list[tuple[str, type]]:
    seen: dict[str, type] = {}
    for _, name, obj in _public():
        if inspect.isclass(obj) and name not in SHARED_SECTIONS:
            seen.setdefault(name, obj)
    return sorted(seen.items())


@pytest.mark.parametrize(("name", "cls"), _classes(), ids=lambda v: getattr(v, "__name__", v))
def test_every_public_member_is_documented_in_its_section(name: str, cls: type) -> None:
    section = _section(_doc(), name)
    missing = [m for m in _members(cls) if not _mentioned(section, m)]
    assert not missing, f"{name}: {missing} not documented in its docs/api.md section"


def _errors() -> list[tuple[str, type]]:
    return [
        (name, getattr(mycelium.errors, name))
        for name in mycelium.errors.__all__
        if issubclass(getattr(mycelium.errors, name), BaseException)
    ]


@pytest.mark.parametrize(("name", "cls"), _errors(), ids=lambda v: getattr(v, "__name__", v))
def test_every_error_field_is_documented(name: str, cls: type) -> None:
    section = _section(_doc(), name)
    params = inspect.signature(cls.__init__).parameters
    fields = [p for p in params if p not in {"self", "args", "kwargs"} | MESSAGE_PARAMS]
    if name == "ConfigError":
        fields = ["path"]
    missing = [f for f in fields if f"`{f}`" not in section]
    assert not missing, f"{name}: fields {missing} not documented in its section"
    assert issubclass(cls, mycelium.errors.MyceliumError)


def test_the_shared_config_sections_list_every_key() -> None:
    section = _section(_doc(), "ServerConfig")
    for cls_name in sorted(SHARED_SECTIONS - {"BridgeConfig"}):  # bridge: docs/distribution.md
        cls = getattr(mycelium.config, cls_name)
        missing = [f for f in cls.__struct_fields__ if f"`{f}`" not in section]
        assert not missing, f"{cls_name}: keys {missing} not documented"


def test_the_planned_handle_calls_are_documented() -> None:
    """Names of the public interface that another branch adds (issue 14's data-path half):
    documented here already, so the merge only reconciles."""
    doc = _doc()
    for call in (
        "recv_envelope(",
        "envelopes()",
        "recv_view(",
        "recv_array(",
        "publish_array(",
        "p.topic(",
        "Envelope(topic, payload, producer, sequence, published_ns)",
    ):
        assert call in doc, call


def test_the_readme_links_the_api_reference() -> None:
    assert "docs/api.md" in README.read_text()


def test_the_modules_walked_are_the_public_ones() -> None:
    assert {"Consumer", "Producer", "Broker", "run_broker"} <= set(mycelium.__all__)
    assert {"AsyncConsumer", "AsyncProducer"} <= set(mycelium.aio.__all__)
    assert "ReceiveTimeout" in mycelium.errors.__all__
