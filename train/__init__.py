"""icrt training (PyTorch): the D2S and CM-SSA model kinds (registered in ``train.kinds``), their trainers, data
readers, metrics and evaluation protocols. Entry points: ``python -m train``, ``python -m train.protocol``,
``python -m train.evaluate``, ``python -m train.captions``."""
