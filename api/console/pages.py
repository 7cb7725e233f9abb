"""The console's two pages, rendered on the server: the playground and operations. What they
show comes from the API's own routes, which the page's script calls."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter
from litestar.response import Redirect, Template

from api.console.access import PAGES, SignIn, console_page, to_sign_in
from swipeloop import analysis

# The phone's gestures a card offers: (label, event kind, how much of the video it watched).
ACTIONS: tuple[tuple[str, str, float], ...] = (
    ("watch briefly", "skip", 0.05),
    ("watch to the end", "watch", 1.0),
    ("loop", "loop", 1.0),
    ("like", "like", 0.0),
    ("share", "share", 0.0),
    ("follow", "follow", 0.0),
    ("not interested", "not_interested", 0.0),
    ("block", "block", 0.0),
)


class PagesController(Controller):
    """GET /console/playground and /console/operations (admin key, or loopback while no admin
    key is configured)."""

    path = PAGES
    guards = [console_page]
    include_in_schema = False
    exception_handlers = {SignIn: to_sign_in}

    @get("/")
    async def home(self) -> Redirect:
        """The playground is the first page."""
        return Redirect(f"{PAGES}/playground")

    @get("/playground")
    async def playground(
        self,
        user_id: Annotated[str, Parameter(max_length=128)] = "",
    ) -> Template:
        """A user's feed as cards, the gestures of a phone on each, and their live signals."""
        context = {"tab": "playground", "user_id": user_id, "actions": ACTIONS}
        return Template("playground.html", context=context)

    @get("/operations")
    async def operations(self) -> Template:
        """Models, experiments, pipeline health, items, users and the named analyses."""
        queries = sorted(analysis.catalogue().values(), key=lambda q: q.name)
        context = {"tab": "operations", "queries": queries}
        return Template("operations.html", context=context)
