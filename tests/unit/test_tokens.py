"""Per-user tokens checked by api.tokens: HS256 with a shared secret, RS256 and ES256 with keys
from a JWKS served on 127.0.0.1, and every claim that must hold."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api.tokens import BadToken, Tokens
from swipeloop.settings import Settings, SettingsError
from swipeloop.tokens import Credentials, mint
from swipeloop.waiting import wait_for

SECRET = "a-shared-secret-of-at-least-32-bytes!"
ISSUER, AUDIENCE = "https://login.example", "swipeloop"
HS = Settings(jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_leeway_s=0)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "u1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_minted_token_names_its_user() -> None:
    assert Tokens(HS).subject_of(mint(HS, "u1")) == "u1"


def test_a_remembered_token_still_expires() -> None:
    tokens = Tokens(HS)
    token = mint(HS, "u1", ttl_s=60)
    assert tokens.subject_of(token) == "u1"
    assert tokens.subject_of(token) == "u1"  # (remembered: not verified again)
    later = time.time() + 61
    tokens.clock = lambda: later
    with pytest.raises(BadToken, match="expired"):
        tokens.subject_of(token)


REFUSED: list[tuple[Callable[[], str], str]] = [  # made when the test runs: exp is relative
    (lambda: jwt.encode(claims(exp=int(time.time()) - 5), SECRET), "expired"),
    (lambda: jwt.encode(claims(aud="another-app"), SECRET), "Audience"),
    (lambda: jwt.encode(claims(iss="https://evil.example"), SECRET), "issuer"),
    (lambda: jwt.encode(claims(sub=None), SECRET), '"sub"'),
    (lambda: jwt.encode(claims(exp=None), SECRET), '"exp"'),
    (lambda: jwt.encode(claims(sub=""), SECRET), "subject"),
    (lambda: jwt.encode(claims(sub="x" * 129), SECRET), "subject"),
    (lambda: jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!"), "Signature"),
    (lambda: jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "alg value is not allowed"),
    (lambda: jwt.encode(claims(), "", algorithm="none"), "alg value is not allowed"),
    (lambda: "not.a.token", "token refused"),
]


@pytest.mark.parametrize(("make", "reason"), REFUSED)
def test_a_token_that_does_not_hold_is_refused_with_its_reason(
    make: Callable[[], str], reason: str
) -> None:
    with pytest.raises(BadToken, match=reason):
        Tokens(HS).subject_of(make())


def test_token_settings_are_checked_once_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="SWIPELOOP_JWT_SECRET: expected at least 32 bytes"):
        Settings(jwt_secret="short", jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with pytest.raises(SettingsError, match="SWIPELOOP_JWT_AUDIENCE is not set"):
        Settings(jwt_secret=SECRET, jwt_issuer=ISSUER)
    with pytest.raises(SettingsError, match="SWIPELOOP_JWT_ISSUER is not set"):
        Settings.from_env({"SWIPELOOP_JWKS_URL": "https://login.example/jwks"})
    with pytest.raises(SettingsError, match="both set"):
        Settings(jwt_secret=SECRET, jwks_url="https://x/jwks", jwt_issuer="i", jwt_audience="a")
    with pytest.raises(SettingsError, match="SWIPELOOP_JWKS_URL='file:///etc/keys'"):
        Settings(jwks_url="file:///etc/keys", jwt_issuer="i", jwt_audience="a")
    assert "SECRET" not in repr(HS) and SECRET not in repr(HS)


def test_clients_send_each_person_their_own_token_or_the_key_for_user_routes() -> None:
    people = Credentials(HS.with_(app_keys="app", admin_keys="admin"))
    token = people.user("u7")["Authorization"].removeprefix("Bearer ")
    assert Tokens(HS).subject_of(token) == "u7"
    assert people.user("u7")["Authorization"].endswith(token)  # minted once, reused
    assert people.server() == {"Authorization": "Bearer app"}  # uploads: a key
    jwks = Settings(jwks_url="https://x/jwks", jwt_issuer="i", jwt_audience="a", admin_keys="k")
    assert Credentials(jwks).user("u7") == {"Authorization": "Bearer k"}  # cannot mint
    assert Credentials(Settings(app_keys="app")).user("u7") == {"Authorization": "Bearer app"}
    with pytest.raises(SettingsError, match="SWIPELOOP_JWT_SECRET is not set"):
        mint(jwks, "u7")


class Issuer:
    """A login service's JWKS endpoint on 127.0.0.1, whose keys a test can rotate."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps({"keys": issuer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, kid: str, public: Any, algorithm: str) -> None:
        jwk = json.loads((RSAAlgorithm if algorithm == "RS256" else ECAlgorithm).to_jwk(public))
        self.keys.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    served = Issuer()
    yield served
    served.server.shutdown()


def test_jwks_keys_check_rs256_and_es256_tokens_and_a_new_kid_is_fetched(issuer: Issuer) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    issuer.publish("r1", rsa_key.public_key(), "RS256")
    settings = Settings(jwks_url=issuer.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    tokens = Tokens(settings)
    assert not tokens.ready()
    rs = jwt.encode(claims(sub="u1"), rsa_key, algorithm="RS256", headers={"kid": "r1"})
    with pytest.raises(BadToken, match="no keys fetched yet"):
        tokens.subject_of(rs)
    tokens.start()
    try:
        assert wait_for(tokens.ready, 10), "the JWKS fetched"
        assert tokens.subject_of(rs) == "u1"

        # the issuer adds a key: a token signed with it is refused once, then fetched for
        es = jwt.encode(claims(sub="u2"), ec_key, algorithm="ES256", headers={"kid": "e1"})
        issuer.publish("e1", ec_key.public_key(), "ES256")
        with pytest.raises(BadToken, match="'e1' is not in the JWKS"):
            tokens.subject_of(es)
        assert wait_for(lambda: _accepted(tokens, es), 20), "the new key fetched"
        assert tokens.subject_of(es) == "u2"

        # the RS256 key signing as HS256 with its public key as the secret: the classic
        # algorithm confusion, refused because the key says which algorithm it is for
        public_pem = issuer.keys[0]["n"]
        forged = jwt.encode(claims(), public_pem, algorithm="HS256", headers={"kid": "r1"})
        with pytest.raises(BadToken):
            tokens.subject_of(forged)
    finally:
        tokens.stop()


def _accepted(tokens: Tokens, token: str) -> bool:
    try:
        tokens.subject_of(token)
    except BadToken:
        return False
    return True
