"""``dualscope keys``: CURVE key pairs for clients and servers, and the server's authorised-keys file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.cli.console import out
from engine.errors import ConfigError
from instruments.auth import ROLES, AuthorisedKeys, KeyPair

keys_app = typer.Typer(
    help=(
        "CURVE keys: one key pair per client, each with a role (observer: status and read; agent: "
        "measure; operator: everything, including abort). A server started with --authorised-keys "
        "admits only the keys listed there."
    ),
    no_args_is_help=True,
)


@keys_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Who the key belongs to (letters, digits, '-', '_', '.').")],
    role: Annotated[str, typer.Option(help=f"The key's role: {', '.join(ROLES)}.")] = "agent",
    directory: Annotated[Path, typer.Option("--dir", help="Where NAME.key and NAME.key_secret go.")] = Path("keys"),
    authorised: Annotated[
        Path | None,
        typer.Option(help="Append the public key to this authorised-keys file (the server's), creating it."),
    ] = None,
) -> None:
    """Make a key pair: NAME.key (public, give it away) and NAME.key_secret (mode 0600, keep it).

    A server needs its own pair (`keys new scope --role operator`) and reads the clients' public
    keys from an authorised-keys file, one `ROLE NAME PUBLIC_KEY` line each (--authorised appends).
    """
    pair = KeyPair.new(name, role)
    if authorised is not None and authorised.exists():
        known = AuthorisedKeys.parse(authorised.read_text(encoding="utf-8").splitlines(), str(authorised))
        if pair.name in {k.name for k in known.by_public.values()}:
            raise ConfigError(f"{authorised} already lists a key called {name!r}; choose another name")
    public_path, secret_path = pair.save(directory)
    out.print(f"public key:  {public_path}")
    out.print(f"secret key:  {secret_path} (keep it private)")
    if authorised is not None:
        authorised.parent.mkdir(parents=True, exist_ok=True)
        with authorised.open("a", encoding="utf-8") as fh:
            fh.write(pair.authorised_line() + "\n")
        out.print(f"authorised:  {pair.role} {pair.name} added to {authorised}")
    else:
        out.print(f"authorised-keys line: {pair.authorised_line()}")
