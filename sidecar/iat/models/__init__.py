"""ONNX models: the models folder and its manifest (`store`), what a model file's inputs and outputs must look like
for its kind (`signature`), and one inference session per model and options, shared by every engine (`sessions`).
"""
