//! Client ID metadata documents and `private_key_jwt` (for document clients and for clients registered
//! with their public keys), end to end: the documents are served over real
//! TLS on loopback (portcullis trusts the test CA through `SSL_CERT_FILE`, and fetches from loopback only
//! because `dangerous.client_metadata_from_loopback` says so).

use serde_json::{Value, json};

use crate::gateway::{PASSWORD, no_redirects, pkce, sign_in, token};
use crate::support::{Gate, Sample, TempDir, admin, call, claims_of, client, mcp_post, reserve_port, write_config};
use crate::tls::{Canned, TlsServer, ca_file};
use portcullis_test_support::{TestKey, mint_with};

const REDIRECT: &str = "http://127.0.0.1:40005/cb";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A gateway with the account alice that fetches metadata documents (from loopback when `loopback`).
pub(crate) async fn start(loopback: bool) -> (Sample, Gate) {
    let sample = Sample::start().await;
    let port = reserve_port();
    let dir = TempDir::new();
    let mut text = crate::gateway::config(&sample.mcp());
    if loopback {
        text = text.replace("[store]", "[dangerous]\nclient_metadata_from_loopback = true\n[store]");
    }
    let path = write_config(&text, port, &dir);
    admin(&["users", "add", "alice", "--config", &path.display().to_string()], &format!("{PASSWORD}\n")).await;
    let gate = Gate::start_at(&path, port, dir, &[("SSL_CERT_FILE", &ca_file())]).await;
    (sample, gate)
}

fn document(docs: &TlsServer, path: &str, extra: Value) -> Value {
    let mut doc = json!({
        "client_id": docs.url(path),
        "client_name": "Document App",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc
}

/// The page `/authorize` shows for `client_id` (status and text): no redirect happens for a client that
/// cannot be used.
async fn authorize_page(gate: &Gate, client_id: &str) -> (u16, String) {
    let (_, challenge) = pkce();
    let r = no_redirects()
        .get(gate.url("/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("location").is_none(), "nothing is sent to an unverified redirect URI");
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn code_grant(gate: &Gate, client_id: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let (verifier, challenge) = pkce();
    let signed = sign_in(gate, client_id, REDIRECT, &challenge, "mcp:tools").await;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", signed.code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    form.extend_from_slice(extra);
    let (status, body, _) = token(gate, None, &form).await;
    (status, body)
}

#[tokio::test]
async fn a_client_known_by_its_metadata_document() {
    let docs = TlsServer::start().await;
    docs.set("/client.json", Canned::json(&document(&docs, "/client.json", json!({})), "max-age=60"));
    let (_sample, gate) = start(true).await;
    let meta: Value =
        client().get(gate.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);

    // No registration: the URL is the client id, the document its registration (a public client).
    let id = docs.url("/client.json");
    let (status, body) = code_grant(&gate, &id, &[("client_id", &id)]).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!((claims["client_id"].as_str(), claims["sub"].as_str()), (Some(id.as_str()), Some("local:alice")));
    let r = mcp_post(&client(), &gate.url("/mcp"), call(1, "echo", json!({"text": "cimd"})))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(docs.hits("/client.json"), 1, "cached for its max-age: fetched once for /authorize and /token");

    // Signing in again, the user is asked again, warned: any local program could have named the
    // document and be waiting on the loopback port for the code.
    let (_, challenge) = pkce();
    let params = [("client_id", id.as_str()), ("redirect_uri", REDIRECT), ("code_challenge", challenge.as_str())];
    let (cookie, page) = crate::gateway::authorize_page(&gate, &params).await;
    let hidden = |name: &str| crate::gateway::hidden(&page, name);
    let form = [
        ("step", "login".to_owned()),
        ("handle", hidden("handle")),
        ("csrf", hidden("csrf")),
        ("username", "alice".to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let r = no_redirects().post(gate.url("/authorize")).header("cookie", &cookie).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200, "no code without asking");
    let page = r.text().await.unwrap();
    assert!(page.contains("Allow access?") && page.contains("any program here can present itself"), "{page}");
    let (status, body) = code_grant(&gate, &id, &[("client_id", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(docs.hits("/client.json"), 1);

    // The copy is in the store too: a restarted gateway (or another replica) does not fetch it again.
    let port: u16 = gate.base.rsplit(':').next().unwrap().parse().unwrap();
    let dir = gate.kill().await;
    let path = dir.path.join("portcullis.toml");
    let gate = Gate::start_at(&path, port, dir, &[("SSL_CERT_FILE", &ca_file())]).await;
    let (status, body) = code_grant(&gate, &id, &[("client_id", &id)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(docs.hits("/client.json"), 1, "served from the store after the restart");

    // A document that must not be stored is fetched at every use.
    docs.set("/fresh.json", Canned::json(&document(&docs, "/fresh.json", json!({})), "no-store"));
    let fresh = docs.url("/fresh.json");
    let (status, body) = code_grant(&gate, &fresh, &[("client_id", &fresh)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(docs.hits("/fresh.json"), 2, "once at /authorize, once at /token");

    // A web client (https redirect URI): no loopback warning on its consent page (checked in sign_in).
    let web = json!({"redirect_uris": ["https://app.example.com/cb"]});
    docs.set("/web.json", Canned::json(&document(&docs, "/web.json", web), ""));
    let (_, challenge) = pkce();
    let signed = sign_in(&gate, &docs.url("/web.json"), "https://app.example.com/cb", &challenge, "mcp:tools").await;
    assert!(!signed.code.is_empty());

    // A shared-secret method is refused; the client then has no way to authenticate.
    let (status, body, _) =
        token(&gate, Some((&id, "guess")), &[("grant_type", "refresh_token"), ("refresh_token", "x")]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
}

#[tokio::test]
async fn unusable_documents_are_refused_on_a_page_and_never_cached() {
    let docs = TlsServer::start().await;
    let (_sample, gate) = start(true).await;
    let big =
        document(&docs, "/big.json", json!({"client_name": "x".repeat(150), "contacts": vec!["a@example.com"; 400]}));
    let mut redirect = Canned::json(&json!({}), "");
    redirect.status = 302;
    redirect.headers.push(("location".into(), docs.url("/client.json")));
    docs.set("/redirect.json", redirect);
    docs.set("/big.json", Canned::json(&big, ""));
    docs.set("/other-id.json", Canned::json(&document(&docs, "/client.json", json!({})), ""));
    docs.set(
        "/secret.json",
        Canned::json(
            &document(&docs, "/secret.json", json!({"token_endpoint_auth_method": "client_secret_basic"})),
            "",
        ),
    );
    docs.set(
        "/evil-redirect.json",
        Canned::json(&document(&docs, "/evil-redirect.json", json!({"redirect_uris": ["http://evil.example/cb"]})), ""),
    );
    let cases = [
        ("/redirect.json", "without following redirects"),
        ("/missing.json", "answered HTTP 404"),
        ("/big.json", "larger than 5120 bytes"),
        ("/other-id.json", "differs from its URL"),
        ("/secret.json", "client_secret_basic"),
        ("/evil-redirect.json", "evil.example"),
    ];
    for (path, expected) in cases {
        let (status, page) = authorize_page(&gate, &docs.url(path)).await;
        assert_eq!(status, 400, "{path}");
        assert!(page.contains(expected), "{path}: expected {expected:?} in\n{page}");
    }
    // A host that refuses the connection is told in the same words as a special-use address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("https://127.0.0.1:{closed}/c.json");
    let (status, page) = authorize_page(&gate, &unreachable).await;
    assert!(status == 400 && page.contains("could not be fetched from a public address"), "{page}");
    assert!(!page.to_lowercase().contains("refused") && !page.contains("error sending request"), "{page}");
    for bad_url in ["https://127.0.0.1/", "https://user@127.0.0.1/c.json"] {
        let (status, page) = authorize_page(&gate, bad_url).await;
        assert!(status == 400 && page.contains("not a valid client ID metadata document URL"), "{bad_url}: {page}");
    }

    // The failure was not cached: once the document is there, the client works at once.
    docs.set("/missing.json", Canned::json(&document(&docs, "/missing.json", json!({})), "max-age=300"));
    let (status, page) = authorize_page(&gate, &docs.url("/missing.json")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Document App"));

    // An unknown metadata-document client at /token: 401 invalid_client.
    let gone = docs.url("/gone.json");
    let (status, body, _) =
        token(&gate, None, &[("grant_type", "authorization_code"), ("client_id", &gone), ("code", "c")]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
}

#[tokio::test]
async fn special_use_addresses_are_refused_without_the_test_switch() {
    let docs = TlsServer::start().await;
    docs.set("/client.json", Canned::json(&document(&docs, "/client.json", json!({})), ""));
    let (_sample, gate) = start(false).await;
    // The caller learns that, and not what the name resolved to (nor, below, why a connection failed).
    let ids = [
        docs.url("/client.json"),
        docs.url("/client.json").replace("127.0.0.1", "localhost"),
        "https://10.0.0.1/c.json".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/c.json".to_owned(),
    ];
    for id in ids {
        let (status, page) = authorize_page(&gate, &id).await;
        assert_eq!(status, 400, "{id}");
        assert!(page.contains("could not be fetched from a public address"), "{id}: {page}");
        for detail in ["special-use", "loopback", "private", "resolve", "refused", "dns"] {
            assert!(!page.to_lowercase().contains(detail), "{id}: {detail:?} in {page}");
        }
    }
    assert_eq!(docs.hits("/client.json"), 0, "nothing reached the server");
}

/// A `private_key_jwt` assertion for `client_id`, signed with `key`.
fn assertion(key: TestKey, client_id: &str, aud: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut header = jsonwebtoken::Header::new(key.alg());
    header.kid = Some(key.kid().to_owned());
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60, "jti": jti});
    mint_with(&header, key, &claims)
}

#[tokio::test]
async fn private_key_jwt_for_metadata_document_clients() {
    let docs = TlsServer::start().await;
    let inline = json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [TestKey::Es256.jwk()]}});
    docs.set("/signed.json", Canned::json(&document(&docs, "/signed.json", inline), "max-age=60"));
    let by_uri = json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": docs.url("/jwks.json")});
    docs.set("/signed-uri.json", Canned::json(&document(&docs, "/signed-uri.json", by_uri), "max-age=60"));
    docs.set("/jwks.json", Canned::json(&json!({"keys": [TestKey::Rs256.jwk()]}), "max-age=60"));
    let (_sample, gate) = start(true).await;
    let meta: Value =
        client().get(gate.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert!(meta["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
    assert!(meta["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap().contains(&json!("ES256")));

    let id = docs.url("/signed.json");
    let first = assertion(TestKey::Es256, &id, &gate.base, "jti-1");
    let (status, body) =
        code_grant(&gate, &id, &[("client_assertion_type", JWT_BEARER), ("client_assertion", &first)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["client_id"], id.as_str());
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let refresh_with = |a: String| {
        let (gate, refresh) = (&gate, refresh.clone());
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", a.as_str()),
            ];
            let (status, body, _) = token(gate, None, &form).await;
            (status, body)
        }
    };
    let refused = [
        (first.clone(), "already used"),
        (assertion(TestKey::Es384, &id, &gate.base, "jti-2"), "client_assertion"),
        (assertion(TestKey::Es256, &id, "https://elsewhere.example", "jti-3"), "aud"),
        (assertion(TestKey::Es256, &docs.url("/client.json"), &gate.base, "jti-4"), ""),
    ];
    for (a, expected) in refused {
        let (status, body) = refresh_with(a).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
        assert!(body["error_description"].as_str().unwrap().contains(expected), "{expected}: {body}");
    }
    // The token endpoint URL is an accepted audience too.
    let (status, body) = refresh_with(assertion(TestKey::Es256, &id, &gate.url("/token"), "jti-5")).await;
    assert_eq!(status, 200, "{body}");
    // A private_key_jwt client is confidential: it may introspect.
    let a = assertion(TestKey::Es256, &id, &gate.url("/introspect"), "jti-7");
    let form = [
        ("token", body["access_token"].as_str().unwrap()),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", a.as_str()),
    ];
    let answer: Value = client().post(gate.url("/introspect")).form(&form).send().await.unwrap().json().await.unwrap();
    assert_eq!((answer["active"].as_bool(), answer["client_id"].as_str()), (Some(true), Some(id.as_str())), "{answer}");
    // A refresh token is active until it is rotated: the one just spent is not, its successor is.
    for (token, jti, active) in
        [(refresh.as_str(), "jti-8", false), (body["refresh_token"].as_str().unwrap(), "jti-9", true)]
    {
        let a = assertion(TestKey::Es256, &id, &gate.url("/introspect"), jti);
        let form = [("token", token), ("client_assertion_type", JWT_BEARER), ("client_assertion", a.as_str())];
        let answer: Value =
            client().post(gate.url("/introspect")).form(&form).send().await.unwrap().json().await.unwrap();
        assert_eq!(answer["active"].as_bool(), Some(active), "{answer}");
        if active {
            assert_eq!(answer["token_type"], "refresh_token", "{answer}");
        }
    }
    // Without an assertion, a private_key_jwt client cannot authenticate.
    let (status, body, _) =
        token(&gate, None, &[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", &id)]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    assert!(body["error_description"].as_str().unwrap().contains("private_key_jwt"), "{body}");

    // Keys published at jwks_uri (fetched under the same rules, cached with the document).
    let uri_id = docs.url("/signed-uri.json");
    let a = assertion(TestKey::Rs256, &uri_id, &gate.base, "jti-6");
    let (status, body) =
        code_grant(&gate, &uri_id, &[("client_assertion_type", JWT_BEARER), ("client_assertion", &a)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(docs.hits("/jwks.json"), 1);
}

#[tokio::test]
async fn private_key_jwt_for_registered_clients() {
    let (_sample, gate) = start(false).await;
    let registration = json!({"redirect_uris": [REDIRECT], "client_name": "Keyed", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["authorization_code", "refresh_token"], "jwks": {"keys": [TestKey::EdDsa.jwk()]}});
    let r = client().post(gate.url("/register")).json(&registration).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let registered: Value = r.json().await.unwrap();
    assert!(registered.get("client_secret").is_none(), "{registered}");
    let id = registered["client_id"].as_str().unwrap();

    let a = assertion(TestKey::EdDsa, id, &gate.base, "reg-1");
    let (status, body) =
        code_grant(&gate, id, &[("client_assertion_type", JWT_BEARER), ("client_assertion", &a)]).await;
    assert_eq!(status, 200, "{body}");
    // Another key, or no assertion at all, is refused.
    let refresh = body["refresh_token"].as_str().unwrap();
    let other = assertion(TestKey::Es256, id, &gate.base, "reg-2");
    for form in [
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", other.as_str()),
        ],
        vec![("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", id)],
    ] {
        let (status, body, _) = token(&gate, None, &form).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    }
}
