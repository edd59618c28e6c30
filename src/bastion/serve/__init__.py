"""The serving gateway: promoted, verified models behind scoped keys, limits, validation,
output policy, extraction detection and an audit log of every call."""
