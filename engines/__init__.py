"""ONNX export, TensorRT engines and their runtimes (installed as fastdenoise.engines)."""
