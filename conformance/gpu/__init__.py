"""GPU decode parity on a machine reached only by copying a folder in and files out (README.md)."""
