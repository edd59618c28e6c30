"""SIGN: are these exactly the bytes a trusted party released?"""
