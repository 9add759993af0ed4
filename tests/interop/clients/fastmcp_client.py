"""FastMCP's client (`fastmcp` 4.x, built on the official Python MCP SDK) as an interop client.

Run by clients/fastmcp.mjs, which plays the browser. FastMCP's `OAuth` provider does what it does for
an application: discovery, dynamic registration, PKCE, a loopback callback server of its own on a free
port, the token exchange, refresh and re-authorization. The one thing it leaves to the desktop is
opening the authorization URL in a browser (`webbrowser.open`); this script puts a stand-in there that
prints `{"authorize": URL}` and, once the driver answers with where the browser landed
(`{"callback": URL}`), makes the browser's request to FastMCP's own callback server.

Then it uses FastMCP as an application does: connect, list tools, call `echo`; an expired token is
refreshed; a token the server refuses with 401 is replaced by a new authorization. It ends with one line,
`{"result": {...}}`, or `{"error": "..."}` and exit status 1.

Usage: python fastmcp_client.py SETTINGS_JSON    SETTINGS_JSON: {"mcp_url", "scope"?}
"""

import json
import sys
import threading
import time
import urllib.request
from urllib.parse import parse_qs, urlparse

import fastmcp.client.auth.oauth as fastmcp_oauth
from fastmcp import Client
from fastmcp.client.auth import OAuth
from interop_checks import check_echo, emit, run_and_report, tamper

authorizations: list[str] = []


def open_in_browser(url: str, *args, **kwargs) -> bool:
    """Where FastMCP opens the user's browser: the driver plays it, in the background as a browser
    runs beside the application."""
    authorizations.append(url)
    emit({"authorize": url})

    def land() -> None:
        landed = json.loads(sys.stdin.readline())["callback"]
        # FastMCP starts its callback server right after opening the browser: retry until it listens.
        for _ in range(100):
            try:
                urllib.request.urlopen(landed, timeout=10).read()
                return
            except OSError:
                time.sleep(0.1)

    threading.Thread(target=land, daemon=True).start()
    return True


fastmcp_oauth.webbrowser.open = open_in_browser



async def call_echo(oauth: OAuth, url: str, text: str) -> list[str]:
    async with Client(url, auth=oauth) as client:
        tools = [t.name for t in await client.list_tools()]
        result = await client.call_tool("echo", {"text": text})
        check_echo(tools, result.content[0].text if result.content else None, text)
        return tools


async def main(settings: dict) -> dict:
    url = settings["mcp_url"]
    oauth = OAuth(
        mcp_url=url,
        scopes=settings.get("scope"),
        client_name="portcullis interop (FastMCP)",
        callback_host="127.0.0.1",
        callback_timeout=60.0,
    )
    # 1. The first request meets the 401; FastMCP authorizes and the call goes through.
    await call_echo(oauth, url, "hello from FastMCP")
    first = oauth.context.current_tokens
    if first is None or not first.refresh_token:
        raise AssertionError(f"no refresh token after the code exchange: {first!r}")
    if len(authorizations) != 1:
        raise AssertionError(f"expected one authorization, saw {len(authorizations)}")

    # 2. The access token expires (the client's clock says so): refreshed, no new authorization.
    oauth.context.token_expiry_time = time.time() - 1
    await call_echo(oauth, url, "after refresh")
    refreshed = oauth.context.current_tokens
    if refreshed.access_token == first.access_token:
        raise AssertionError("the refresh did not yield a new access token")
    if len(authorizations) != 1:
        raise AssertionError("FastMCP re-authorized instead of refreshing")

    # 3. The server refuses the token (401 invalid_token): a new authorization.
    oauth.context.current_tokens = refreshed.model_copy(update={"access_token": tamper(refreshed.access_token)})
    await call_echo(oauth, url, "after re-authorization")
    if len(authorizations) != 2:
        raise AssertionError(f"expected a second authorization after the 401, saw {len(authorizations)}")

    first_auth = parse_qs(urlparse(authorizations[0]).query)
    return {
        "authorizations": len(authorizations),
        "authorization_request": {k: v[0] for k, v in first_auth.items()},
        "refresh_token_rotated": refreshed.refresh_token != first.refresh_token,
        "access_token": oauth.context.current_tokens.access_token,
    }


if __name__ == "__main__":
    run_and_report(main)
