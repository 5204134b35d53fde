"""The PyTorch mirror of minilooped: the same models, written with torch.nn.

Every file here reads line by line like its NumPy-core twin under ``minilooped/`` (same
classes, same names, same order), so a reader can hold them side by side, and the tests
check that both give the same numbers.
"""
