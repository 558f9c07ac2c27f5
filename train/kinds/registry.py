"""The registry of model kinds itself: :class:`ModelKind` and the functions that add and find them.

Read it through :mod:`train.kinds`, which also registers the built-in kinds; a kind module imports
``register_kind`` from here (so that the registry never imports the kinds it holds).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from icrt.runtime.base.errors import UserInputError

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class UnknownKindError(UserInputError):
    """A model kind that is not registered (e.g. in a checkpoint); the message lists the known ones."""


@dataclass(frozen=True)
class ModelKind:
    """One trainable, exportable model kind.

    Required:
      name: the subcommand of ``python -m train`` and the ``kind`` a checkpoint records (lowercase).
      config: the model config dataclass; ``config.from_dict(dict)`` and ``to_dict()`` as in train.models.
      model: the ``nn.Module`` class; ``model(config, load_pretrained=bool)`` builds the inference model.

    Training (all needed for ``python -m train NAME``):
      trainer: the trainer class (a :class:`train.trainer.Trainer` subclass taking ``(train_config,
        samples=None)``, with its config dataclass as ``config_class``). A trainer module attaches itself with
        :func:`register_trainer` (``train.trainers`` loads the built-in ones), so that a kind never names its trainer
        and the models never import the training loop.
      train_config: ``argparse.Namespace -> dict``: the fields of the trainer's config (a
        :class:`train.trainer.RunConfig` subclass, built by :meth:`make_train_config`; the kind module never
        imports its trainer).
      add_arguments: ``ArgumentParser -> None``: the kind's own options, added after the common ones.
      defaults: the subcommand's ``set_defaults`` (e.g. another ``--epochs`` default).
      help: the subcommand's one-line help in ``python -m train --help``.

    Export:
      fold: ``model -> module`` to export (eval mode, nothing constant left to compute; torch only). None:
        the model's own ``fold_for_export()`` if it has one, else the model itself.
      tail: names of the folded module's direct submodules that form the fp32 scoring tail (their ONNX nodes
        stay fp32 in the fp16 model and are not quantized to int8; the folded module's own top-level
        operations always are tail).
    """

    name: str
    config: type
    model: type
    trainer: type | None = None
    train_config: Callable[[Any], Any] | None = None
    add_arguments: Callable[[Any], None] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""
    fold: Callable[[Any], Any] | None = None
    tail: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"model kind name {self.name!r}: expected lowercase letters, digits, '-' or '_'")
        if isinstance(self.tail, str) or not all(isinstance(t, str) and t for t in self.tail):
            raise ValueError(f"model kind {self.name!r}: tail must be a tuple of submodule names, got {self.tail!r}")
        object.__setattr__(self, "tail", tuple(self.tail))
        object.__setattr__(self, "defaults", dict(self.defaults))

    @property
    def trainable(self) -> bool:
        """Whether ``python -m train`` can train this kind (it has a trainer and a train config builder)."""
        return self.trainer is not None and self.train_config is not None

    def trainer_class(self) -> type:
        """The trainer class (``train.trainers.load_trainers()`` attaches the built-in ones)."""
        if self.trainer is None:
            raise ValueError(f"model kind {self.name!r} has no trainer")
        return self.trainer

    def make_train_config(self, args):
        """The trainer's config from parsed ``python -m train NAME`` arguments."""
        return self.trainer_class().config_class(**self.train_config(args))

    def create_model(self, config, load_pretrained: bool = True):
        """The inference model from a config object or dict (unknown dict keys are ignored by ``from_dict``)."""
        cfg = config if isinstance(config, self.config) else self.config.from_dict(dict(config))
        return self.model(cfg, load_pretrained=load_pretrained)


_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind, replace: bool = False) -> ModelKind:
    """Add ``kind`` to the registry (a second kind of the same name is refused unless ``replace``)."""
    if not isinstance(kind, ModelKind):
        raise TypeError(f"register_kind takes a ModelKind, got {type(kind).__name__}")
    if kind.name in _KINDS and not replace:
        raise ValueError(f"model kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def register_trainer(name: str, trainer: type) -> ModelKind:
    """Attach ``trainer`` (a ``train.trainer.Trainer`` subclass) to the registered kind ``name``."""
    import dataclasses

    kind = dataclasses.replace(get_kind(name), trainer=trainer)
    _KINDS[name] = kind
    return kind


def unregister_kind(name: str) -> ModelKind:
    """Remove a kind (tests, plug-ins); returns it."""
    get_kind(name)
    return _KINDS.pop(name)


def get_kind(name: str) -> ModelKind:
    """The registered kind ``name``; an :class:`UnknownKindError` naming the known kinds otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise UnknownKindError(f"unknown model kind {name!r}; known: {', '.join(_KINDS) or 'none'}") from None


def is_kind(name: str) -> bool:
    return isinstance(name, str) and name in _KINDS


def kind_names(trainable: bool = False) -> list[str]:
    """Registered kind names, in registration order (the built-in ones first: d2s, cmssa); ``trainable``:
    only those ``python -m train`` can train."""
    return [k.name for k in _KINDS.values() if k.trainable or not trainable]


def kinds() -> list[ModelKind]:
    return list(_KINDS.values())


def tail_names(name: str | None = None) -> tuple[str, ...]:
    """The fp32-tail submodule names of kind ``name``, or of every registered kind (in order, once each)."""
    if name is not None:
        return get_kind(name).tail
    return tuple(dict.fromkeys(t for k in _KINDS.values() for t in k.tail))

