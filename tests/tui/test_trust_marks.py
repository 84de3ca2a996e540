"""What a coordinator on a node that follows a network sees of cities outside it: their practices
marked unverified, their replications not counted as evidence, the network screen's flags."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from citymesh.node.config import Follow
from citymesh.protocol import api
from citymesh.tui.screens.catalogue import CatalogueScreen
from citymesh.tui.screens.network import NetworkScreen

from .conftest import City, MakeCity, screen_text, tui, wait_for, wait_text
from .test_actions import open_practice


async def post(city: City, path: str, body: dict[str, Any]) -> None:
    location = city.location
    headers = {"Authorization": f"Bearer {location.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(location.url + path, json=body, headers=headers) as resp,
    ):
        assert resp.status == 201, await resp.text()


async def test_unverified_cities_are_marked_and_not_counted(make_city: MakeCity) -> None:
    steward = await make_city("Brussels", "BEL")
    here = await make_city("Mechelen", "BEL", start=False)
    config = here.home.load_config()
    here.home.save_config(
        msgspec.structs.replace(
            config, follow=[Follow(network="citymesh", stewards=[steward.identity])]
        )
    )
    await here.start()
    outsider = await make_city("Elsewhere", "NLD")
    await post(steward, "/v1/network", {"title": "Cities", "stewards": [steward.identity]})
    await post(steward, "/v1/network/members", {"member": here.identity, "city": "Mechelen"})
    ref = await outsider.publish("night-school", title="Night school for adults")
    mine = await here.publish("welcome-desk", title="Welcome desk for newcomers")
    await wait_for(lambda: outsider.has(mine))
    await outsider.client().replicate(
        mine,
        api.ReplicationIn(relation="adapted", status="running", outcome=api.Outcome(worked="yes")),
    )
    await wait_for(lambda: here.has(ref))
    await wait_for(lambda: here.has(mine, lambda d: len(d.replications) == 1))
    detail = await here.client().practice(mine)
    assert detail.replications[0].unverified and detail.evidence_level != "replicated"

    app = tui(here)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(lambda: isinstance(app.screen, CatalogueScreen))
        screen = await open_practice(app, pilot, ref)
        await wait_text(pilot, "unverified: not a member of your networks")
        await pilot.press("escape")
        screen = await open_practice(app, pilot, mine)
        assert screen.detail is not None
        await wait_text(pilot, "Elsewhere (unverified)")
        await pilot.press("escape", "c")
        await wait_for(lambda: isinstance(app.screen, NetworkScreen))
        await wait_text(pilot, "Elsewhere", "Records held")
        text = screen_text(app)
        assert "unverified" in text.split("Elsewhere", 1)[1].splitlines()[0]
        held = text.split("Records held", 1)[1]
        assert any(line.split()[:1] == ["unverified"] for line in held.splitlines()), held
