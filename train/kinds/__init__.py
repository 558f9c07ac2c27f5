"""The registry of model kinds (after timm's ``register_model``): everything about a kind, declared in one place.

A kind (``d2s``, ``cmssa``, ...) is one module of this package that builds a :class:`ModelKind` and passes it
to :func:`register_kind` (``train.kinds.registry``) when imported. Everything else reads the registry:

- ``python -m train`` builds one subcommand per kind (common arguments + the kind's ``add_arguments`` and
  ``defaults``), turns the parsed arguments into the kind's train config (``train_config``) and runs its
  ``trainer``; ``python -m train.protocol`` takes its ``--model`` choices from :func:`kind_names`;
- :func:`train.models.create_model` (and so every checkpoint loader) builds ``model`` from ``config``;
- ``export.fold.fold_for_export`` calls ``fold``; ``export.fp16`` keeps the ``tail`` modules' ONNX nodes in
  fp32, and the int8 quantizer leaves them out.

Adding a kind: write ``train/kinds/NAME.py`` (see ``d2s.py``) and import it at the bottom of this file.
"""
from icrt.train.kinds.registry import (
                       ModelKind,
                       UnknownKindError,
                       get_kind,
                       is_kind,
                       kind_names,
                       kinds,
                       register_kind,
                       register_trainer,
                       tail_names,
                       unregister_kind,
)

__all__ = ["ModelKind", "UnknownKindError", "get_kind", "is_kind", "kind_names", "kinds", "register_kind",
           "register_trainer", "tail_names", "unregister_kind"]

# The built-in kinds, in the order ``python -m train --help`` lists them. Each module registers itself.
import icrt.train.kinds.d2s as d2s  # noqa: E402,F401,I001 (registration order: d2s first)
import icrt.train.kinds.cmssa as cmssa  # noqa: E402,F401,I001
