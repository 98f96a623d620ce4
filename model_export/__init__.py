"""Train the attention classifier with Keras and export it to ONNX for attention-serve.

The only contract with the service is the model folder written here: ``model.onnx``, ``tokenizer.json``
and ``model.json`` under ``<repository>/<name>/<version>/``.
"""
