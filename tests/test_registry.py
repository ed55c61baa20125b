"""medseg.registry.Registry, the one class behind the encoder and the model registries."""

from __future__ import annotations

import pytest

from medseg.encoders import build_encoder, list_encoders
from medseg.errors import MedsegError
from medseg.models import build_model, list_models
from medseg.registry import Registry, check_options, keyword_options


def _registry() -> Registry:
    reg = Registry("widget", fixed=("size",))

    @reg.register("zeta", "last letter, registered first")
    def zeta(size: int, *, colour: str = "red", count: int = 1) -> tuple:
        return (size, colour, count)

    @reg.register("alpha")
    def alpha(size: int, **options) -> dict:
        """First letter, registered second.

        More text that is not the description.
        """
        return {"size": size, **options}

    @reg.register("beta", options=("shade",))
    def beta(size: int, **options) -> dict:
        return {"size": size, **options}

    return reg


def test_names_list_in_registration_order() -> None:
    assert _registry().names() == ["zeta", "alpha", "beta"]


def test_descriptions_default_to_the_first_docstring_line() -> None:
    reg = _registry()
    assert reg.description("zeta") == "last letter, registered first"
    assert reg.description("alpha") == "First letter, registered second."


def test_keyword_only_parameters_are_the_options() -> None:
    def builder(size, shape=1, *, colour="red", count=1):
        return None

    assert keyword_options(builder) == ("colour", "count")
    assert keyword_options(builder, fixed=("count",)) == ("colour",)
    reg = _registry()
    assert reg.options("zeta") == ("colour", "count")
    assert reg.options("beta") == ("shade",)


def test_unknown_name_is_one_line_listing_the_names_in_order() -> None:
    with pytest.raises(MedsegError) as info:
        _registry().entry("gamma")
    assert str(info.value) == "unknown widget 'gamma'; choose one of zeta, alpha, beta"


def test_unknown_option_is_one_line_listing_the_options() -> None:
    reg = _registry()
    with pytest.raises(MedsegError) as info:
        reg.build("zeta", size=1, color="blue")
    assert str(info.value) == "widget zeta: unknown option 'color'; valid options are colour, count"
    with pytest.raises(MedsegError, match=r"widget beta: unknown option 'tint'; valid options are shade$"):
        reg.build("beta", size=1, tint=2)
    with pytest.raises(MedsegError, match=r"valid options are none$"):
        check_options("widget x", ["a"], ())


def test_a_builder_taking_any_options_without_declaring_them_checks_them_itself() -> None:
    assert _registry().build("alpha", size=2, anything=3) == {"size": 2, "anything": 3}


def test_bind_fills_in_defaults_and_spreads_declared_keyword_options() -> None:
    reg = _registry()
    assert reg.bind("zeta", size=3, count=2) == {"size": 3, "colour": "red", "count": 2}
    assert reg.bind("beta", size=3, shade="dark") == {"size": 3, "shade": "dark"}


def test_registering_twice_or_without_the_fixed_parameters_is_refused() -> None:
    reg = _registry()
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("zeta")(lambda size: None)
    with pytest.raises(TypeError, match="size"):
        reg.register("delta")(lambda width: None)


def test_encoders_and_models_share_the_order_and_the_messages() -> None:
    assert list_encoders()[:6] == ["resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert list_models() == ["unet", "unet_resnet", "dual_unet_resnet", "fcn"]
    for kind, build, names in [("encoder", build_encoder, list_encoders()), ("model", build_model, list_models())]:
        with pytest.raises(MedsegError) as info:
            build("nope")
        assert str(info.value) == f"unknown {kind} 'nope'; choose one of {', '.join(names)}"
    with pytest.raises(MedsegError, match=r"^encoder resnet18: unknown option 'colour'; valid options are block, "):
        build_encoder("resnet18", colour=1)
    with pytest.raises(MedsegError, match=r"^model unet: unknown option 'colour'; valid options are features, "):
        build_model("unet", colour=1)
