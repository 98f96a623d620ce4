"""Benchmarks of attention-serve: the raw ONNX Runtime ceiling, the service over HTTP, and a naive baseline."""
