"""One error-to-status table for every HTTP API: complete, and never "not found" for tampering."""

from __future__ import annotations

import inspect

import pytest

from bastion import errors
from bastion.http_errors import CONFLICT, INTERNAL, NOT_FOUND, STATUS, status_of
from bastion.serve.loader import LoadRefused

ERROR_CLASSES = [
    cls for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.BastionError) and cls is not errors.BastionError
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_has_a_status_of_its_own_and_it_is_not_500(cls: type[errors.BastionError]) -> None:
    assert cls in STATUS, f"{cls.__name__} is missing from bastion.http_errors.STATUS"
    assert status_of(cls("x")) != INTERNAL


def test_an_integrity_failure_is_a_conflict_never_not_found() -> None:
    altered = errors.IntegrityFailure("blob sha256:ab no longer holds the bytes it was stored with")

    assert status_of(altered) == CONFLICT
    assert status_of(errors.NotFound("no such model")) == NOT_FOUND


def test_subclasses_outside_errors_take_their_parent_status() -> None:
    assert status_of(LoadRefused("m@1", ["signature: bad"])) == status_of(errors.VerificationError("x"))


def test_the_registry_and_admin_apis_use_the_one_table() -> None:
    import bastion.registry.api as registry_api  # noqa: PLC0415
    import bastion.serve.admin as admin_api  # noqa: PLC0415

    assert registry_api.status_of is status_of
    assert admin_api.status_of is status_of
