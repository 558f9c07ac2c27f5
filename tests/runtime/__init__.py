"""The runtime's tests: need only the runtime's dependencies (numpy, Pillow, onnxruntime) and pytest."""
