from __future__ import annotations

from typing import ClassVar

import pytest

from harness.api.method import Method
from harness.api.registry import ALL_REGISTRIES, ATTACKS, DEFENSES, RECOGNIZERS, Registry
from harness.core.errors import ParamError, UnknownNameError
from harness.core.params import Param, resolve_params


def test_param_type_range_choices_and_odd() -> None:
    assert Param(float, 1.0, low=0).validate("x", 3) == 3.0
    with pytest.raises(ParamError, match="expected a number"):
        Param(float).validate("x", "high")
    with pytest.raises(ParamError, match="expected an integer"):
        Param(int).validate("x", 2.5)
    with pytest.raises(ParamError, match="expected an integer"):
        Param(int).validate("x", True)
    with pytest.raises(ParamError, match=r"out of range .*\(0, 1\]"):
        Param(float, low=0, high=1, low_open=True).validate("alpha", 0.0)
    with pytest.raises(ParamError, match="did you mean png"):
        Param(str, choices=("png", "jpeg")).validate("format", "pgn")
    with pytest.raises(ParamError, match="must be odd"):
        Param(int, 3, low=1, odd=True).validate("k", 4)
    assert Param(int, 0, low=0, odd=True).validate("k", 0) == 0


def test_resolve_params_fills_defaults_and_rejects_unknown() -> None:
    declared = {"alpha": Param(float, 0.45), "k": Param(int, 3)}
    assert resolve_params("krtio", declared, {"k": 4}) == {"alpha": 0.45, "k": 4}
    with pytest.raises(ParamError, match=r"unknown parameter 'alpah' \(did you mean alpha\?\)"):
        resolve_params("krtio", declared, {"alpah": 0.3})
    with pytest.raises(ParamError, match="a value is required"):
        resolve_params("x", {"root": Param(str, required=True)}, {})


def test_builtin_methods_are_registered_through_entry_points() -> None:
    assert {"none", "gaussian-blur", "pixelate", "naive-overlay"} <= set(DEFENSES.names())
    assert {"sface", "yunet", "small-cnn"} <= set(RECOGNIZERS.names())
    assert {"none", "gaussian-blur", "median-filter", "jpeg", "grayscale"} <= set(ATTACKS.names())
    for registry in ALL_REGISTRIES.values():
        for name in registry.names():
            cls = registry.get(name)
            assert cls.__doc__, f"{registry.kind} {name} has no docstring"


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown defense 'pixelat' \(did you mean pixelate\?\)"
    ):
        DEFENSES.get("pixelat")


def test_create_validates_parameters() -> None:
    d = DEFENSES.create("naive-overlay", {"alpha": 0.3})
    assert d.alpha == 0.3 and d.overlay == "coffee"
    with pytest.raises(ParamError, match="out of range"):
        DEFENSES.create("naive-overlay", {"alpha": 1.5})


def test_programmatic_registration() -> None:
    reg: Registry[Method] = Registry("widget", "privbench.no-such-group", Method)

    @reg.register("thing")
    class Thing(Method):
        """A thing."""

        params: ClassVar[dict[str, Param]] = {"size": Param(int, 2)}

        def __init__(self, size: int) -> None:
            self.size = size

    assert reg.names() == ["thing"]
    assert reg.create("thing", {"size": 5}).size == 5
