"""The model registry: content-addressed versions, stages, roles, audit and promotion gates."""

from bastion.registry.config import RegistryConfig, init_registry, load_config
from bastion.registry.roles import Principal, Role
from bastion.registry.service import Registry

__all__ = ["Principal", "Registry", "RegistryConfig", "Role", "init_registry", "load_config"]
