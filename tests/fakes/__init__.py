"""Fakes of libraries the test machines lack: ``tensorrt`` (8.6 / 10.3 / 11.x behaviour) and CUDA's Python
bindings (cuda-python, pycuda). Tests install them into ``sys.modules`` with ``monkeypatch`` (see
:func:`fake_tensorrt.install_tensorrt`, :func:`fake_cuda.install_cuda`); nothing here needs torch."""
