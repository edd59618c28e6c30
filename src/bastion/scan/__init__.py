"""SCAN: will loading this file run code? Static analysis that never loads what it reads."""
