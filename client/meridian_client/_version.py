"""The client's version, below every module that names it (the package's
__init__ imports the client, and the client sends the version as its User-Agent)."""
__version__ = "0.1.0"
