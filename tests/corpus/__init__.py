"""Builders for known-bad and known-good model files, made with the real libraries.

Every malicious payload is harmless (`true`, `print`, `eval("1+1")`), and nothing here ever
loads what it writes: these files exist to be scanned, never to be opened by their library.
"""
