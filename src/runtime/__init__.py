"""The runtime layer: MindSpore device and execution context (device.py) and checkpoint I/O
(checkpoint.py), shared by training, inference, export and the svoice importer."""
