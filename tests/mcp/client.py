"""End-to-end check of HyperCode's MCP gateway with the official MCP Python SDK as the client.

Run by tests/mcp.rs against a real `hypercode serve` (with a worker), in the virtualenv that
scripts/mcp-venv keeps:

    python client.py stdio|http

Environment: HC_URL (the server), HC_BIN (the hypercode binary, launched as `hypercode mcp` for
stdio), HC_ADMIN_KEY, HC_VIEWER_KEY. Progress goes to stderr; the exit status says whether every
check passed (an assertion names the first that did not).
"""

import asyncio
import json
import sys
import time
import uuid
import warnings

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

warnings.simplefilter("ignore")  # resources/subscribe is deprecated from 2026-07-28 on.

TOOLS = {
    "list_workflows": set(),
    "submit_mission": {"workflow", "input", "idempotency_key", "concurrency_key"},
    "get_mission": {"id"},
    "list_missions": {"status", "workflow", "limit", "cursor"},
    "mission_history": {"id", "after", "limit"},
    "list_approvals": set(),
    "decide_approval": {"id", "step", "decision", "comment"},
    "send_signal": {"id", "name", "payload"},
    "cancel_mission": {"id"},
}
REQUIRED = {
    "submit_mission": {"workflow", "input"},
    "get_mission": {"id"},
    "mission_history": {"id"},
    "decide_approval": {"id", "step", "decision"},
    "send_signal": {"id", "name"},
    "cancel_mission": {"id"},
}
TIMEOUT = 60.0


def log(message):
    print(f"mcp-client: {message}", file=sys.stderr, flush=True)


class Updates:
    """The `notifications/resources/updated` a connection received, by URI."""

    def __init__(self):
        self.uris = []
        self.arrived = asyncio.Event()

    async def handler(self, message):
        if getattr(message, "method", None) == "notifications/resources/updated":
            self.uris.append(message.params.uri)
            self.arrived.set()


def connect(transport, env, key, updates=None):
    """A client of the gateway, authenticated with `key`."""
    handler = updates.handler if updates else None
    if transport == "stdio":
        server = StdioServerParameters(
            command=env["HC_BIN"],
            args=["mcp"],
            env={"HYPERCODE_URL": env["HC_URL"], "HYPERCODE_API_KEY": key, "HYPERCODE_LOG": "info"},
        )
        return Client(server, message_handler=handler)
    http = httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=httpx2.Timeout(30, read=300))
    return Client(streamable_http_client(f"{env['HC_URL']}/mcp", http_client=http), message_handler=handler)


def ok(result, tool):
    """The structured answer of a successful tool call; its text content is the same JSON."""
    assert not result.is_error, f"{tool} failed: {result.content}"
    assert isinstance(result.structured_content, dict), f"{tool}: no structuredContent: {result}"
    text = json.loads(result.content[0].text)
    assert text == result.structured_content, f"{tool}: text and structuredContent differ"
    return result.structured_content


def refused(result, tool, *words):
    """An `isError` result whose text names each of `words`."""
    text = " ".join(c.text for c in result.content if getattr(c, "text", None))
    assert result.is_error, f"{tool} should have failed: {result}"
    for word in words:
        assert word in text, f"{tool}: {word!r} not in the error {text!r}"
    return text


async def until(what, check):
    """Poll `check` (an async function returning a value or None) until it returns a value."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = await check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out after {TIMEOUT} s waiting for {what}"
        await asyncio.sleep(0.2)


async def mission_in(client, mission_id, *statuses):
    async def check():
        mission = ok(await client.call_tool("get_mission", {"id": mission_id}), "get_mission")
        return mission if mission["status"] in statuses else None

    return await until(f"mission {mission_id} to be {' or '.join(statuses)}", check)


async def check_tools(client):
    listed = await client.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == set(TOOLS), f"tools: {sorted(tools)}"
    for name, properties in TOOLS.items():
        schema = tools[name].input_schema
        assert schema.get("type") == "object", f"{name}: {schema}"
        assert set(schema.get("properties", {})) == properties, f"{name}: {schema}"
        assert set(schema.get("required", [])) == REQUIRED.get(name, set()), f"{name}: {schema}"
        assert tools[name].description, f"{name} has no description"
    limit = tools["list_missions"].input_schema["properties"]["limit"]
    assert limit.get("maximum") == 100, f"list_missions limit: {limit}"
    decision = json.dumps(tools["decide_approval"].input_schema)
    assert '"approve"' in decision and '"reject"' in decision, decision
    log(f"{len(tools)} tools, each with an input schema")


async def approval_flow(client, updates, label):
    """Submit a plan with an approval, see it wait, approve it from the inbox, see it succeed."""
    workflows = ok(await client.call_tool("list_workflows", {}), "list_workflows")["workflows"]
    plan = next(w for w in workflows if w["name"] == "plan")
    assert plan["input_schema"].get("type") == "object", plan
    assert all(not w["internal"] for w in workflows), workflows

    steps = [
        {"name": "sign-off", "approval": {"message": "Ship it?"}},
        {"name": "done", "noop": {"shipped": True}},
    ]
    key = f"mcp-{label}-{uuid.uuid4()}"
    submitted = ok(
        await client.call_tool(
            "submit_mission", {"workflow": "plan", "input": {"steps": steps}, "idempotency_key": key}
        ),
        "submit_mission",
    )
    mission_id = submitted["id"]
    assert submitted["status"] in ("pending", "running", "waiting"), submitted
    uri = f"hypercode://missions/{mission_id}"
    await client.subscribe_resource(uri)
    log(f"submitted mission {mission_id} and subscribed to {uri}")

    waiting = await mission_in(client, mission_id, "waiting")
    assert any(s["name"] == "sign-off" and s["status"] == "waiting" for s in waiting["steps"]), waiting

    inbox = ok(await client.call_tool("list_approvals", {}), "list_approvals")
    entry = next((a for a in inbox["approvals"] if a["mission_id"] == mission_id), None)
    assert entry is not None, f"mission {mission_id} not in the inbox: {inbox}"
    assert entry["step"] == "sign-off" and entry["message"] == "Ship it?", entry

    read = await client.read_resource(uri)
    assert json.loads(read.contents[0].text)["status"] == "waiting", read

    # Approved now: every update from here on is about what the decision changed.
    updates.uris.clear()
    updates.arrived.clear()
    decided = ok(
        await client.call_tool(
            "decide_approval", {"id": mission_id, "step": "sign-off", "decision": "approve", "comment": "lgtm"}
        ),
        "decide_approval",
    )
    assert decided["id"] == mission_id, decided

    async def finished():
        try:
            await asyncio.wait_for(updates.arrived.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            return None
        updates.arrived.clear()
        assert set(updates.uris) == {uri}, updates.uris
        read = await client.read_resource(uri)
        mission = json.loads(read.contents[0].text)
        return mission if mission["status"] == "succeeded" else None

    done = await until(f"a notifications/resources/updated for {uri} once it succeeded", finished)
    assert [s["status"] for s in done["steps"]] == ["succeeded", "succeeded"], done
    log(f"mission {mission_id} succeeded; the subscription was told")

    history = ok(await client.call_tool("mission_history", {"id": mission_id}), "mission_history")
    kinds = [e["type"] for e in history["events"]]
    for kind in ("mission_submitted", "approval_requested", "approval_granted", "mission_succeeded"):
        assert kind in kinds, f"{kind} not in the history: {kinds}"
    assert history["next_after"] == history["events"][-1]["seq"], history
    page = ok(await client.call_tool("mission_history", {"id": mission_id, "after": 1, "limit": 2}), "mission_history")
    assert [e["seq"] for e in page["events"]] == [2, 3], page
    resource = await client.read_resource(f"{uri}/history")
    assert [e["type"] for e in json.loads(resource.contents[0].text)["events"]] == kinds

    listed = ok(await client.call_tool("list_missions", {"status": "succeeded", "limit": 100}), "list_missions")
    assert mission_id in [m["id"] for m in listed["missions"]], listed
    assert "next_cursor" in listed, listed
    refused(await client.call_tool("list_missions", {"limit": 101}), "list_missions", "limit", "100")
    return mission_id


async def signal_and_cancel(client, updates):
    steps = [{"name": "paid", "signal": {"timeout_s": 3600}}]
    signalled = ok(
        await client.call_tool("submit_mission", {"workflow": "plan", "input": {"steps": steps}}), "submit_mission"
    )
    await mission_in(client, signalled["id"], "waiting")
    history_uri = f"hypercode://missions/{signalled['id']}/history"
    await client.subscribe_resource(history_uri)
    updates.uris.clear()
    sent = ok(
        await client.call_tool("send_signal", {"id": signalled["id"], "name": "paid", "payload": {"amount": 5}}),
        "send_signal",
    )
    assert sent["id"] == signalled["id"], sent
    done = await mission_in(client, signalled["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["steps"][0]["output"] == {"payload": {"amount": 5}}, done

    async def told():
        return True if history_uri in updates.uris else None

    await until(f"a notifications/resources/updated for {history_uri}", told)

    steps = [{"name": "never", "approval": {"message": "Wait forever?"}}]
    lane = f"mcp-{uuid.uuid4()}"
    doomed = ok(
        await client.call_tool(
            "submit_mission", {"workflow": "plan", "input": {"steps": steps}, "concurrency_key": lane}
        ),
        "submit_mission",
    )
    assert doomed["concurrency_key"] == lane, doomed
    # Parked first: a cancellation that lands while the run is about to park at the approval is
    # lost by the engine today (the mission stays waiting with cancel_requested).
    await mission_in(client, doomed["id"], "waiting")
    ok(await client.call_tool("cancel_mission", {"id": doomed["id"]}), "cancel_mission")
    await mission_in(client, doomed["id"], "cancelled")
    log("a signal was delivered, the history subscription was told, and a cancellation ran")


async def refusals(client, viewer, mission_id):
    unknown = str(uuid.uuid4())
    refused(await client.call_tool("get_mission", {"id": unknown}), "get_mission", "not found")
    refused(await client.call_tool("cancel_mission", {"id": unknown}), "cancel_mission", "not found")
    refused(await client.call_tool("get_mission", {"id": "nope"}), "get_mission", "UUID")
    bad = await client.call_tool("submit_mission", {"workflow": "plan", "input": {"steps": "x"}})
    refused(bad, "submit_mission", "/input/steps")
    assert bad.structured_content["status"] == 422, bad.structured_content

    steps = [{"name": "a", "noop": {}}]
    denied = await viewer.call_tool("submit_mission", {"workflow": "plan", "input": {"steps": steps}})
    refused(denied, "submit_mission", "operator or admin", "viewer")
    assert denied.structured_content["status"] == 403, denied.structured_content
    refused(
        await viewer.call_tool("decide_approval", {"id": mission_id, "step": "sign-off", "decision": "reject"}),
        "decide_approval",
        "operator or admin",
    )
    seen = ok(await viewer.call_tool("get_mission", {"id": mission_id}), "get_mission")
    assert seen["status"] == "succeeded", seen
    log("roles and unknown missions are isError results")


async def bad_key(env):
    """A client with a key the server does not know gets no session: every answer is a 401."""
    statuses = []

    async def record(response):
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(headers={"X-API-Key": "hc_not-a-key"}, event_hooks={"response": [record]})
    try:
        async with Client(streamable_http_client(f"{env['HC_URL']}/mcp", http_client=http)) as intruder:
            await intruder.list_tools()
    except Exception as error:  # the SDK reports the refusal as a failed handshake
        log(f"a bad key was refused: {error!r}")
    else:
        raise AssertionError("a bad key reached the MCP server")
    assert statuses and set(statuses) == {401}, f"statuses with a bad key: {statuses}"


async def main(transport):
    import os

    env = os.environ
    updates = Updates()
    async with connect(transport, env, env["HC_ADMIN_KEY"], updates) as client:
        version = client.protocol_version
        assert version == "2025-11-25", f"negotiated {version}"
        assert client.server_info.name == "hypercode", client.server_info
        assert client.server_capabilities.resources.subscribe, client.server_capabilities
        log(f"initialized over {transport} (protocol {version})")
        await check_tools(client)
        mission_id = await approval_flow(client, updates, transport)
        await signal_and_cancel(client, updates)
        templates = await client.list_resource_templates()
        assert {t.uri_template for t in templates.resource_templates} == {
            "hypercode://missions/{id}",
            "hypercode://missions/{id}/history",
        }, templates
        async with connect(transport, env, env["HC_VIEWER_KEY"]) as viewer:
            await refusals(client, viewer, mission_id)
    if transport == "http":
        await bad_key(env)
    log("all checks passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
