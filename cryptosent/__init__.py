"""cryptosent: the command line that sits above schemas, ops, stream and trainer."""

__version__ = "0.1.0"
