"""What the live view needs from a running campaign: its status, its model's map, and the operator's buttons."""

from __future__ import annotations

from typing import Any, Protocol

from engine.decisions import PropertyMap

BUTTONS = ("pause", "resume", "stop", "approve", "veto")
"""The operator's commands the view offers (``dualscope ctl`` has the rest)."""


class CampaignLink(Protocol):
    """The view's line to the campaign writing a run (its control socket, same roles and keys as ``ctl``).

    The view calls these from its server's event loop, once per refresh; each answers within its
    own short timeout. ``dualscope view`` gives the control socket's (``engine.cli.view_command``);
    a finished run gets ``NoCampaign``.

    Examples:
        >>> link: CampaignLink = NoCampaign()
        >>> link.status(), link.property_map()
        (None, None)
    """

    def status(self) -> dict[str, Any] | None:
        """The campaign's status (``paused``, ``n_recorded``, ``step``, ``awaiting_approval``, ``role``...).

        None when no campaign is running on the run or it does not answer.
        """
        ...

    def property_map(self) -> PropertyMap | None:
        """The policy's map of the property over the candidates (None: no model yet, or no campaign)."""
        ...

    def send(self, command: str) -> dict[str, Any]:
        """Send one of ``BUTTONS``; the status after it.

        Raises:
            DualscopeError: the campaign refused it or did not answer (the message says why).
        """
        ...


class NoCampaign:
    """A link for a run nobody is running (a finished or interrupted run viewed afterwards).

    Examples:
        >>> NoCampaign().status() is None
        True
    """

    def status(self) -> dict[str, Any] | None:
        """Nothing runs."""
        return None

    def property_map(self) -> PropertyMap | None:
        """No live model."""
        return None

    def send(self, command: str) -> dict[str, Any]:
        """Never called: the view shows no buttons without a running campaign."""
        raise RuntimeError(f"no campaign to send {command!r} to")
