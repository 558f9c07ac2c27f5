"""Model architectures (``d2s``, ``cmssa``); which kinds exist, and how each is built, is the registry's
(:mod:`train.kinds`)."""
from __future__ import annotations


def create_model(kind: str, config: dict | object, load_pretrained: bool = True):
    """The inference model of registered ``kind`` from its config (a config object or dict); an unknown kind is
    a :class:`train.kinds.UnknownKindError` (a ValueError) naming the known ones."""
    from icrt.train.kinds import get_kind

    return get_kind(kind).create_model(config, load_pretrained=load_pretrained)
