"""The official Python MCP SDK (`mcp` 2.x, on httpx2) as an interop client.

Run by clients/mcp-sdk-python.mjs, which plays the browser. The SDK's own OAuth provider
(`OAuthClientProvider`) does discovery, registration (or a client ID metadata document), PKCE,
the token exchange, refresh and re-authorization inside its httpx auth flow; this script only
supplies the two hooks an application supplies:

- redirect_handler: prints `{"authorize": URL}` on stdout (where an application opens a browser);
- callback_handler: reads the redirect the browser reached, `{"callback": URL}`, from stdin (where
  an application's loopback listener receives it).

Then it uses the SDK as an application does: connect, list tools, call `echo`; an expired token is
refreshed; a token the server refuses with 401 is replaced by a new authorization. It ends with one
line, `{"result": {...}}`, for the driver to check, or `{"error": "..."}` and exit status 1.

With "policy_tool" in the settings it only lists the tools and calls that one, and reports both
(tests/interop/policy.mjs; "login_hint" there picks the test IdP's user).

Usage: python mcp_sdk_python.py SETTINGS_JSON
  SETTINGS_JSON: {"mcp_url", "redirect_url", "client_metadata", "client_metadata_url"?,
                  "preregistered"?: {"client_id", "client_secret"?, "token_endpoint_auth_method"},
                  "policy_tool"?, "login_hint"?}
"""

import json
import sys
import time
from urllib.parse import parse_qs, urlparse

import anyio
import anyio.to_thread
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from interop_checks import check_echo, emit, run_and_report, tamper
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)


class MemoryStorage:
    """The SDK's TokenStorage, in memory, counting what the SDK stores."""

    def __init__(self, client_info: OAuthClientInformationFull | None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info
        self.token_saves = 0
        self.client_saves = 0

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.token_saves += 1
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_saves += 1
        self.client_info = client_info


class Browser:
    """The hooks: hand the authorization URL to the driver, take back where the browser landed."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []

    async def redirect(self, url: str) -> None:
        self.authorizations.append(url)
        emit({"authorize": url})

    async def callback(self) -> AuthorizationCodeResult:
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        if not line:
            raise RuntimeError("the driver closed stdin before the callback")
        query = parse_qs(urlparse(json.loads(line)["callback"]).query)
        if "error" in query:
            raise RuntimeError(f"authorization failed: {query['error'][0]}: {query.get('error_description', [''])[0]}")
        one = lambda name: query[name][0] if name in query else None  # noqa: E731
        return AuthorizationCodeResult(code=one("code"), state=one("state"), iss=one("iss"))



async def call_echo(provider: OAuthClientProvider, mcp_url: str, text: str) -> list[str]:
    """A fresh connection, as an application makes after a restart: list tools, call echo."""
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20.0)) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("echo", {"text": text})
            check_echo(tools, result.content[0].text if result.content else None, text)
            return tools


async def policy_probe(provider: OAuthClientProvider, mcp_url: str, tool: str) -> dict:
    """What one user sees and may do: the tools listed, then one call, allowed or refused."""
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20.0)) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
    try:
        with anyio.fail_after(20):
            async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20.0)) as http:
                async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                    result = await client.call_tool(tool, {"amount": 5})
                    call = "error" if result.is_error else "ok"
    except BaseException as err:  # noqa: BLE001 - a refusal surfaces as whatever the SDK raises
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        while isinstance(err, BaseExceptionGroup) and err.exceptions:
            err = err.exceptions[0]
        call = f"refused: {type(err).__name__}: {err}"[:300]
    return {"tools": tools, "call": call}


async def main(settings: dict) -> dict:
    preregistered = settings.get("preregistered")
    storage = MemoryStorage(
        OAuthClientInformationFull(
            **preregistered,
            redirect_uris=[settings["redirect_url"]],
        )
        if preregistered
        else None
    )
    browser = Browser()
    provider = OAuthClientProvider(
        server_url=settings["mcp_url"],
        client_metadata=OAuthClientMetadata(
            **settings["client_metadata"],
            redirect_uris=[settings["redirect_url"]],
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
        client_metadata_url=settings.get("client_metadata_url"),
    )
    url = settings["mcp_url"]
    if settings.get("policy_tool"):
        return await policy_probe(provider, url, settings["policy_tool"])

    # 1. The first request meets the 401; the SDK authorizes and the call goes through.
    await call_echo(provider, url, "hello from the Python SDK")
    first = storage.tokens
    if first is None or not first.refresh_token:
        raise AssertionError(f"no refresh token after the code exchange: {first!r}")
    if len(browser.authorizations) != 1:
        raise AssertionError(f"expected one authorization, saw {len(browser.authorizations)}")

    # 2. The access token expires (the SDK's clock says so): the SDK refreshes before the request,
    #    without a new authorization.
    provider.context.token_expiry_time = time.time() - 1
    await call_echo(provider, url, "after refresh")
    refreshed = storage.tokens
    if refreshed.access_token == first.access_token:
        raise AssertionError("the refresh did not yield a new access token")
    if len(browser.authorizations) != 1:
        raise AssertionError("the SDK re-authorized instead of refreshing")

    # 3. The server refuses the token (401 invalid_token): the SDK discovers again and sends the
    #    user through a new authorization, keeping its registration.
    bad = tamper(refreshed.access_token)
    provider.context.current_tokens = refreshed.model_copy(update={"access_token": bad})
    await call_echo(provider, url, "after re-authorization")
    if len(browser.authorizations) != 2:
        raise AssertionError(f"expected a second authorization after the 401, saw {len(browser.authorizations)}")
    final = storage.tokens

    first_auth = parse_qs(urlparse(browser.authorizations[0]).query)
    return {
        "authorizations": len(browser.authorizations),
        "registrations": storage.client_saves,
        "token_saves": storage.token_saves,
        "client_id": storage.client_info.client_id if storage.client_info else None,
        "authorization_request": {k: v[0] for k, v in first_auth.items()},
        "refresh_token_rotated": refreshed.refresh_token != first.refresh_token,
        "access_token": final.access_token,
    }


if __name__ == "__main__":
    run_and_report(main)
