"""The live view: a page on loopback that follows a run as its campaign writes it (``dualscope view``).

Everything outside this package imports from here. Bokeh is imported on first use (``engine._lazy``),
so commands that do not serve the view do not pay for it.

Examples:
    >>> from engine.view import NoCampaign, ViewServer, read_picture
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.view._link import BUTTONS, CampaignLink, NoCampaign
    from engine.view._picture import RunPicture, read_picture
    from engine.view._server import ViewServer

__all__ = ["BUTTONS", "CampaignLink", "NoCampaign", "RunPicture", "ViewServer", "read_picture"]

__getattr__, __dir__ = lazy_face(__name__, __file__)
