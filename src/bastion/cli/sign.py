"""`bastion keygen`, `bastion sign`, `bastion verify`: thin wiring over bastion.sign."""

from __future__ import annotations

import os
from pathlib import Path

import click

KINDS = ("ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521")


def _passphrase(env: str | None) -> bytes | None:
    # Read from a named environment variable, never from the command line (shell history).
    if not env:
        return None
    value = os.environ.get(env)
    if value is None:
        from bastion.errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"environment variable {env} is not set", hint="Export the passphrase in that variable.")
    return value.encode()


@click.command("keygen")
@click.argument("private_key", type=click.Path(path_type=Path))
@click.option(
    "--type",
    "kind",
    type=click.Choice(KINDS),
    default="ecdsa-p256",
    show_default=True,
    help="ecdsa-p256 interoperates with OpenSSF model-signing 1.1.1; ed25519 does not there yet.",
)
@click.option("--passphrase-env", metavar="VAR", help="Encrypt the private key with the passphrase in this variable.")
def keygen_command(private_key: Path, kind: str, passphrase_env: str | None) -> int:
    """Create a signing key pair: PRIVATE_KEY (mode 0600) and PRIVATE_KEY with a .pub suffix."""
    from bastion.sign.keys import generate_key, save_keypair  # noqa: PLC0415

    if private_key.exists():
        from bastion.errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"{private_key} exists; refusing to overwrite a key", hint="Choose another path.")
    public = save_keypair(generate_key(kind), private_key, _passphrase(passphrase_env))
    click.echo(f"private key: {private_key}\npublic key:  {public}")
    return 0


@click.command("sign")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, path_type=Path), help="PEM private key.")
@click.option(
    "--certificate",
    type=click.Path(exists=True, path_type=Path),
    help="PEM certificate of the key, to embed instead of a key hint (verify then with --certificate-root).",
)
@click.option(
    "--certificate-chain",
    "chain",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="PEM intermediate certificates to embed after --certificate; repeatable.",
)
@click.option(
    "--signature", type=click.Path(path_type=Path), help="Where to write the bundle [default: MODEL/model.sig]."
)
@click.option("--passphrase-env", metavar="VAR", help="The key's passphrase is in this environment variable.")
def sign_command(
    model: Path,
    key_path: Path,
    certificate: Path | None,
    chain: tuple[Path, ...],
    signature: Path | None,
    passphrase_env: str | None,
) -> int:
    """Sign a model file or folder (OpenSSF model-signing format: one SHA-256 per file)."""
    from bastion.sign.certs import load_certificates  # noqa: PLC0415
    from bastion.sign.keys import load_private_key  # noqa: PLC0415
    from bastion.sign.ossf import sign_model  # noqa: PLC0415

    if chain and not certificate:
        raise click.UsageError("--certificate-chain needs --certificate (the signing certificate)")
    certificates = load_certificates([certificate, *chain]) if certificate else None
    written = sign_model(model, load_private_key(key_path, _passphrase(passphrase_env)), signature, certificates)
    click.echo(f"signed {model} -> {written}")
    return 0


@click.command("verify")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "key_path", type=click.Path(exists=True, path_type=Path), help="PEM public key.")
@click.option(
    "--certificate-root",
    "roots",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="PEM root certificate to trust for a certificate-signed model; repeatable.",
)
@click.option("--signature", type=click.Path(path_type=Path), help="The bundle [default: MODEL/model.sig].")
def verify_command(model: Path, key_path: Path | None, roots: tuple[Path, ...], signature: Path | None) -> int:
    """Verify a model against its signature; exit 1 naming every file that differs.

    Trust either a public key (--key) or the root certificates of the signer's chain
    (--certificate-root), not both.
    """
    from bastion.errors import VerificationError  # noqa: PLC0415
    from bastion.sign.certs import load_certificates  # noqa: PLC0415
    from bastion.sign.keys import load_public_key  # noqa: PLC0415
    from bastion.sign.ossf import verify_model, verify_model_with_certificates  # noqa: PLC0415

    if bool(key_path) == bool(roots):
        raise click.UsageError("give either --key or --certificate-root (what to trust), not both or neither")
    try:
        if key_path:
            verified = verify_model(model, load_public_key(key_path), signature)
        else:
            verified = verify_model_with_certificates(model, load_certificates(roots), signature)
    except VerificationError as err:
        click.echo(f"FAILED: {err.message}\nhint: {err.hint}", err=True)
        return 1
    click.echo(
        f"verified {model}: {verified.files} files, root sha256 {verified.root_digest}, signer {verified.key_hint}"
    )
    return 0
