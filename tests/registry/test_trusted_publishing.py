"""Trusted publishing (registry.services.trusted): a CI job's OpenID Connect identity token traded for a short-lived
registry token over real HTTP, against a real issuer on loopback (tests/registry/oidc_issuer.py, standing in for
GitHub Actions' issuer and runner), through `vera serve`, RegistryClient and `vera auth exchange`."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from registry.client import RegistryClient
from registry.domain.errors import Conflict, Forbidden, IssuerUnavailable, Unauthorized
from registry.domain.publishers import TrustedPublisher
from registry.domain.words import ci_run
from registry.services.registry import Registry
from registry.services.trusted import KEYS_REFETCH_S, recorded_claims
from registry.settings import Settings
from tests.commands import vera as run_vera
from tests.registry.adapters import TRIAL_DEMO, make_adapter
from tests.registry.oidc_issuer import Issuer, running_issuer
from tests.registry.servers import issued_tokens, registry_in_thread, running_server

EXCHANGE = "/api/v1/tokens/oidc"


def publishers(issuer: Issuer, *others: Issuer) -> str:
    """VERA_TRUSTED_PUBLISHERS: acme/adapters' main branch publishes as ci-bot under acme, for 15 minutes; the same
    repository's tokens of each of ``others`` as ci-bot too (publishers other-1, ...)."""
    claims = {"repository": "acme/adapters", "ref": ["refs/heads/main", "refs/tags/release"]}
    return json.dumps([{"name": "acme-main", "issuer": issuer.url, "audience": "vera", "claims": claims,
                        "user": "ci-bot", "owners": ["acme"], "scopes": ["read", "publish"]},
                       *({"name": f"other-{i}", "issuer": other.url, "claims": claims, "user": "ci-bot",
                          "owners": ["acme"]} for i, other in enumerate(others, 1))])


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def spare() -> Iterator[Issuer]:
    """A second trusted issuer, whose keys the registry has not fetched before a test makes it."""
    with running_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def served(issuer: Issuer, spare: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("trusted")
    url = f"sqlite:///{root / 'r.db'}"
    with running_server(url, root / "blobs", VERA_REQUIRE_TOKENS="true", log_path=root / "serve.log",
                        VERA_TRUSTED_PUBLISHERS=publishers(issuer, spare)) as base:
        admin, bot = issued_tokens(url, ("root", ["admin"]), ("ci-bot", ["read", "publish"]))
        with RegistryClient(base, admin) as client:
            client.create_organization("acme")
            client.set_member("acme", "ci-bot", "write")
        yield {"url": base, "admin": admin, "bot": bot, "adapter": make_adapter(root / "adapter"),
               "log": root / "serve.log", "database": url}


def exchange(served: dict[str, Any], token: str) -> httpx.Response:
    return httpx.post(f"{served['url']}{EXCHANGE}", json={"token": token}, timeout=30)


def test_a_ci_jobs_identity_token_becomes_a_short_lived_token_that_publishes_within_its_owners(
        served: dict[str, Any], issuer: Issuer) -> None:
    before = datetime.now(UTC)
    answer = exchange(served, issuer.token())
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["publisher"] == "acme-main" and body["expires_in"] == 900 and body["secret"].startswith("vera_")
    token = body["token"]
    assert token["owner"] == "ci-bot" and token["scopes"] == ["publish", "read"] and token["limited_to"] == ["acme"]
    expires = datetime.fromisoformat(token["expires_at"])
    assert before + timedelta(minutes=14) < expires < datetime.now(UTC) + timedelta(minutes=16)
    with RegistryClient(served["url"], body["secret"]) as ci:
        who = ci.whoami()
        assert who.user == "ci-bot" and who.limited_to == ["acme"]
        published = ci.publish(served["adapter"], "acme/polarity", base_model="tiny-llama")
        assert published.ref == "acme/polarity:1"
        with pytest.raises(Forbidden):  # the user's own namespace is outside the token's owners
            ci.publish(served["adapter"], "ci-bot/polarity", base_model="tiny-llama")
        with pytest.raises(Forbidden):  # it cannot make itself a lasting token
            ci.create_token(["read"], limited_to=["acme"], expires_days=30)
        job = ci.submit_job("acme/trained", {**TRIAL_DEMO, "r": 16, "training": {"max_steps": 4}})
        assert job.submitted_via is not None and job.submitted_via["claims"]["run_id"] == "1234"  # its result says so
    with RegistryClient(served["url"], served["admin"]) as admin:
        made = [e for e in admin.events(action="token-create").events if e.detail.get("token") == token["id"]]
        by_hand = admin.publish(served["adapter"], "acme/polarity", base_model="tiny-llama")
        lineage = admin.get("acme/polarity:1").lineage
        assert "published_via" not in by_hand.lineage  # an ordinary token's publish says nothing of CI
        found = admin.list_versions(name="polarity", filter="published_via.repository = 'acme/adapters' and "
                                                            "published_via.publisher = 'acme-main'")
        assert [v.ref for v in found.items] == ["acme/polarity:1"]  # searchable by the run that published it
        published_events = {e.target: e.detail for e in admin.events(action="publish").events}
        assert published_events["acme/polarity:1"]["trusted_publisher"] == "acme-main"  # Activity says CI did it
        assert "trusted_publisher" not in published_events["acme/polarity:2"]
    via = lineage["published_via"]  # the version says which run published it, from claims the issuer signed
    assert via["publisher"] == "acme-main" and via["issuer"] == issuer.url
    assert via["subject"] == "repo:acme/adapters:ref:refs/heads/main"
    assert {k: via["claims"][k] for k in ("repository", "ref", "run_id", "workflow", "actor")} == {
        "repository": "acme/adapters", "ref": "refs/heads/main", "run_id": "1234", "workflow": "publish",
        "actor": "alice"}
    assert not {"iss", "aud", "exp", "iat", "jti", "sub"} & set(via["claims"])
    assert ci_run(via).startswith("acme/adapters refs/heads/main, workflow publish, run 1234 (trusted publisher")
    assert len(made) == 1 and made[0].actor == "trusted-publisher:acme-main"
    assert made[0].detail["issuer"] == issuer.url and made[0].detail["subject"] == issuer.runner_claims["sub"]
    assert made[0].detail["claims"] == {"repository": "acme/adapters", "ref": "refs/heads/main"}


def test_the_server_says_at_start_which_publishers_it_trusts(served: dict[str, Any], issuer: Issuer) -> None:
    started = "\n".join(json.loads(line)["message"] for line in served["log"].read_text().splitlines()
                        if line.startswith("{"))
    assert (f"trusted publisher acme-main: identity tokens of {issuer.url} for the audience 'vera' with "
            '{"repository": "acme/adapters", "ref": ') in started, started
    assert "become 15-minute tokens of ci-bot (read, publish) for acme" in started, started


def test_publishers_are_listed_to_admins_and_to_the_admins_of_the_owners_they_publish_into(
        served: dict[str, Any], issuer: Issuer) -> None:
    """An administrator on another machine read VERA_TRUSTED_PUBLISHERS nowhere but in the servers' environment."""
    made = exchange(served, issuer.token())
    assert made.status_code == 201, made.text
    ann, bob = issued_tokens(served["database"], ("ann", ["read", "publish"]), ("bob", ["read", "publish"]))
    with RegistryClient(served["url"], served["admin"]) as admin:
        admin.set_member("acme", "ann", "admin")
        admin.set_member("acme", "bob", "write")
        listed = {p.name: p for p in admin.trusted_publishers()}
        minted = [t for t in admin.tokens(user="ci-bot") if t.name.startswith("trusted publisher acme-main ")]
    assert set(listed) == {"acme-main", "other-1"}
    main = listed["acme-main"]
    assert (main.issuer, main.audience, main.user, main.owners, main.minutes) == (issuer.url, "vera", "ci-bot",
                                                                                  ["acme"], 15)
    assert main.claims == {"repository": "acme/adapters", "ref": ["refs/heads/main", "refs/tags/release"]}
    assert main.tokens_kept == len(minted) >= 1
    assert main.last_exchange_at == max(t.created_at for t in minted)
    assert listed["other-1"].tokens_kept == 0 and listed["other-1"].last_exchange_at is None  # ("other-10" would
    # also start with "trusted publisher other-1": the name ends with a space in the count)
    with RegistryClient(served["url"], ann) as org_admin:
        assert [p.name for p in org_admin.trusted_publishers()] == ["acme-main", "other-1"]  # they publish into acme
    with RegistryClient(served["url"], served["admin"]) as admin:  # an admin token limited to some owners: theirs
        acme_admin = admin.create_token(["admin"], limited_to=["acme"], expires_days=1)[1]
        elsewhere_admin = admin.create_token(["admin"], limited_to=["elsewhere"], expires_days=1)[1]
    with RegistryClient(served["url"], acme_admin) as limited:
        assert [p.name for p in limited.trusted_publishers()] == ["acme-main", "other-1"]
    with RegistryClient(served["url"], elsewhere_admin) as limited:
        assert limited.trusted_publishers() == []
    for secret in (bob, served["bot"], made.json()["secret"]):  # a writer of acme, the CI user, a CI token
        with RegistryClient(served["url"], secret) as other:
            assert other.trusted_publishers() == []
    anonymous = httpx.get(f"{served['url']}/api/v1/trusted-publishers", timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    shown = run_vera(["auth", "publishers", "--registry", served["url"], "--token", ann],
                     env={**os.environ, "COLUMNS": "300"})
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "acme-main" in line)
    assert "repository=acme/adapters; ref=refs/heads/main | refs/tags/release" in row and "ci-bot (read,publish)" in row
    none = run_vera(["auth", "publishers", "--registry", served["url"], "--token", bob])
    assert none.returncode == 0 and "no trusted publisher you may see: the registry's administrators see every one, " \
        "an organisation's admins those that publish into it" in " ".join(none.stdout.split())


def test_each_identity_token_is_exchanged_once(served: dict[str, Any], issuer: Issuer) -> None:
    token = issuer.token(ref="refs/tags/release")  # any of the listed refs
    assert exchange(served, token).status_code == 201
    again = exchange(served, token)
    assert again.status_code == 409 and "exchanged already" in again.json()["detail"]
    racing = issuer.token()
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(a.status_code for a in pool.map(lambda _: exchange(served, racing), range(4)))
    assert statuses == [201, 409, 409, 409]


@pytest.mark.parametrize(("claims", "status", "words"), [
    # GitHub's default audience: what to ask for instead (a new user's walk: the refusal named none)
    ({"aud": "https://github.com/acme"}, 403, "audience [\"https://github.com/acme\"]; they expect 'vera'. Ask "),
    ({"repository": "mallory/adapters"}, 403, '"repository": "mallory/adapters"'),
    ({"ref": "refs/heads/feature"}, 403, "claims ({\"ref\": \"refs/heads/feature\", \"repository\": "
                                         "\"acme/adapters\"}): it was issued to a repository, branch or workflow"),
    ({"repository": None}, 403, "No trusted publisher matches"),  # the claim absent
    ({"lifetime_s": 300, "issued_ago_s": 3600}, 401, "has expired"),
    ({"issued_ago_s": -3600}, 401, "not valid"),  # issued in the future (nbf, iat)
    ({"sub": None}, 401, "sub"),  # a required claim absent
])
def test_tokens_of_other_repositories_audiences_or_times_are_refused_and_mint_nothing(
        served: dict[str, Any], issuer: Issuer, claims: dict[str, Any], status: int, words: str) -> None:
    audience = claims.pop("aud", "vera")
    timing = {k: claims.pop(k) for k in ("lifetime_s", "issued_ago_s") if k in claims}
    count = len(admin_tokens(served))
    answer = exchange(served, issuer.token(audience, **timing, **claims))
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert len(admin_tokens(served)) == count


def admin_tokens(served: dict[str, Any]) -> list[Any]:
    with RegistryClient(served["url"], served["admin"]) as admin:
        return admin.tokens(user="ci-bot")


def test_forged_and_unsigned_tokens_are_refused(served: dict[str, Any], issuer: Issuer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = issuer.token(key=stranger)  # the issuer's key id, another key
    answer = exchange(served, forged)
    assert answer.status_code == 401 and "Signature verification failed" in answer.json()["detail"]
    public_pem = issuer.keys[issuer.signing].public_key().public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = jwt.decode(issuer.token(), options={"verify_signature": False})
    confused = hmac_token(payload, public_pem, issuer.signing)  # the public key as an HMAC secret
    unsigned = jwt.encode(payload, None, algorithm="none")
    for token, words in ((confused, "'HS256'"), (unsigned, "'none'")):
        answer = exchange(served, token)
        assert answer.status_code == 401 and words in answer.json()["detail"], answer.text
    tampered = issuer.token().split(".")
    tampered[1] = jwt.utils.base64url_encode(json.dumps({**payload, "repository": "acme/adapters",
                                                         "jti": "other"}).encode()).decode()
    assert exchange(served, ".".join(tampered)).status_code == 401
    for garbage, words in (("not-a-jwt", "three base64url parts"), ("a.b.c", "cannot be read"),
                           ("x.y.z" * 4000, "16384 characters")):
        answer = exchange(served, garbage)
        assert answer.status_code == 422 and words in answer.text, answer.text


def hmac_token(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """A JWT signed with HS256 by hand (PyJWT refuses a PEM key as an HMAC secret, as an attacker would not)."""
    def part(value: dict[str, Any]) -> str:
        return jwt.utils.base64url_encode(json.dumps(value).encode()).decode()

    signed = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(payload)}"
    mac = hmac.new(secret, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{jwt.utils.base64url_encode(mac).decode()}"


def test_an_issuer_nobody_trusts_is_never_asked_for_its_keys(served: dict[str, Any], issuer: Issuer) -> None:
    asked = len(issuer.requests)
    answer = exchange(served, issuer.token(issuer="https://evil.example/oidc"))
    assert answer.status_code == 401 and "not trusted here" in answer.json()["detail"]
    # which issuers are trusted is not told to a caller nobody authenticated (an outsider read an internal
    # GitLab's address there); administrators read them with `vera auth publishers`
    assert issuer.url not in answer.json()["detail"] and "vera auth publishers" in answer.json()["detail"]
    assert len(issuer.requests) == asked


def test_a_rotated_key_is_fetched_and_an_unreachable_issuer_is_a_502_that_mints_nothing(
        served: dict[str, Any], issuer: Issuer) -> None:
    assert exchange(served, issuer.token()).status_code == 201  # the keys are kept now
    asked = len(issuer.requests)
    old = issuer.signing
    issuer.rotate()
    made_up = [exchange(served, issuer.token(kid=f"made-up-{i}")) for i in range(5)]
    assert {a.status_code for a in made_up} == {401} and "not among" in made_up[0].json()["detail"]
    assert len(issuer.requests) <= asked + 1  # the keys asked for again at most once, however many made-up ids
    time.sleep(KEYS_REFETCH_S + 0.2)
    assert exchange(served, issuer.token()).status_code == 201  # a key id it did not have: fetched again
    issuer.retire(old)
    issuer.down = True
    try:
        time.sleep(KEYS_REFETCH_S + 0.2)
        asked = len(issuer.requests)
        assert exchange(served, issuer.token(kid="rotated-since")).status_code == 401  # asked again: down
        assert len(issuer.requests) == asked + 1
        assert exchange(served, issuer.token()).status_code == 201  # the keys it has still verify meanwhile
    finally:
        issuer.down = False


def test_an_issuer_whose_keys_cannot_be_read_is_a_502_asked_once_and_no_thread_waits_on_it(
        served: dict[str, Any], spare: Issuer) -> None:
    count = len(admin_tokens(served))
    spare.hanging = True  # the registry has none of its keys yet: every exchange waits on one fetch
    try:
        with ThreadPoolExecutor(24) as pool:
            waiting = [pool.submit(exchange, served, spare.token(kid=f"k{i}")) for i in range(24)]
            deadline = time.monotonic() + 30
            while not spare.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the other exchanges arrive and wait too
            # 24 exchanges wait on the issuer: they hold none of the API's threads, which answer others meanwhile
            with RegistryClient(served["url"], served["admin"]) as admin:
                assert admin.whoami().user == "root" and len(admin.tokens(user="ci-bot")) == count
            assert not any(w.done() for w in waiting) and len(spare.requests) == 1  # one fetch for all of them
            spare.down = True
            spare.released.set()
            answers = [w.result(timeout=60) for w in waiting]
    finally:
        spare.hanging = False
    assert {a.status_code for a in answers} == {502}, {a.text for a in answers}
    assert answers[0].json()["type"] == "/problems/issuer_unavailable" and "Retry" in answers[0].json()["detail"]
    asked = len(spare.requests)
    assert exchange(served, spare.token()).status_code == 502 and len(spare.requests) == asked  # failure remembered
    spare.down = False
    time.sleep(KEYS_REFETCH_S + 0.2)
    assert exchange(served, spare.token()).status_code == 201
    assert len(admin_tokens(served)) == count + 1


def test_a_token_naming_another_algorithm_than_its_key_or_living_too_long_is_refused(
        served: dict[str, Any], issuer: Issuer) -> None:
    for algorithm, key in (("ES256", ec.generate_private_key(ec.SECP256R1())),
                           ("ES384", ec.generate_private_key(ec.SECP384R1())),
                           ("EdDSA", ed25519.Ed25519PrivateKey.generate())):
        answer = exchange(served, issuer.token(key=key, algorithm=algorithm))  # the issuer's RSA key id
        assert answer.status_code == 401 and f"names {algorithm}, which is not the algorithm" in answer.text
    answer = exchange(served, issuer.token(lifetime_s=3 * 24 * 3600))
    assert answer.status_code == 401 and "lives 72.0 hours" in answer.json()["detail"]
    now = int(time.time())  # PyJWT takes numeric texts; the lifetime is counted on numbers only
    for times in ({"iat": str(now), "exp": str(now + 10 * 365 * 86400)}, {"exp": str(now + 99_999_999)}):
        answer = exchange(served, issuer.token(**times))
        assert answer.status_code == 401 and "must be numbers" in answer.json()["detail"], answer.text
    for audience in ({"a": 1}, [["vera"]], [], 7):  # RFC 7519's aud: a text or texts (an object was a 500)
        answer = exchange(served, issuer.token(audience))  # type: ignore[arg-type]
        assert answer.status_code == 401 and "aud must be a text or a list of texts" in answer.text, answer.text


def test_a_token_without_jti_is_exchanged_once_however_its_signature_is_written(
        served: dict[str, Any], issuer: Issuer) -> None:
    token = issuer.token(jti=None)  # Google's identity tokens carry none
    assert exchange(served, token).status_code == 201
    padded = exchange(served, token + "==")  # the same signature, padded: PyJWT decodes it alike
    assert padded.status_code == 409 and "exchanged already" in padded.json()["detail"]


def test_a_minted_token_claims_no_namespace_outside_its_owners(served: dict[str, Any], issuer: Issuer) -> None:
    secret = exchange(served, issuer.token()).json()["secret"]
    with RegistryClient(served["url"], secret) as ci, pytest.raises(
            Forbidden, match="creating the organisation 'squat' makes a new owner outside"):
        ci.create_organization("squat")
    with RegistryClient(served["url"], served["admin"]) as admin:
        assert "squat" not in [o.name for o in admin.organizations()]
        admin.set_member("acme", "ci-bot", "admin")  # an organisation's admin may rename it, not with this token
    try:
        with RegistryClient(served["url"], secret) as ci, pytest.raises(
                Forbidden, match="renaming acme to 'brandnew' makes a new owner outside"):
            ci._request("POST", "/api/v1/orgs/acme/rename", json={"new_name": "brandnew"})
    finally:
        with RegistryClient(served["url"], served["admin"]) as admin:
            admin.set_member("acme", "ci-bot", "write")
            assert "acme" in [o.name for o in admin.organizations()]


def test_provenance_keeps_what_says_which_run_as_text_and_nothing_personal(
        served: dict[str, Any], issuer: Issuer) -> None:
    """What a version says of its CI run is public to its readers: the run's claims, control characters replaced
    (an outsider's ref held a terminal's escape sequences, which `vera show` wrote out), and not the personal ones an
    issuer adds (GitLab's user_email)."""
    token = issuer.token(workflow="publish\x1b[2J\x1b]0;pwned\x07\n\nmore", user_email="alice@example.org",
                         user_id="42", sha="0123abcd")
    secret = exchange(served, token).json()["secret"]
    with RegistryClient(served["url"], secret) as ci:
        via = ci.publish(served["adapter"], "acme/run-words", base_model="tiny-llama").lineage["published_via"]
    assert via["claims"]["workflow"] == "publish\ufffd[2J\ufffd]0;pwned\ufffd\ufffd\ufffdmore"
    assert {"user_email", "user_id"}.isdisjoint(via["claims"]) and via["claims"]["sha"] == "0123abcd"
    assert not any(ord(c) < 32 for value in via["claims"].values() for c in value)


def test_vera_auth_exchange_asks_the_github_actions_runner_and_prints_the_token(
        served: dict[str, Any], issuer: Issuer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERA_", "ACTIONS_"))}
    env.update(VERA_REGISTRY_URL=served["url"], VERA_CONFIG_DIR=str(tmp_path), VERA_TOKEN=served["admin"],
               ACTIONS_ID_TOKEN_REQUEST_URL=f"{issuer.url}/runner/token?api-version=2.0",
               ACTIONS_ID_TOKEN_REQUEST_TOKEN=issuer.runner_secret)
    done = run_vera(["auth", "exchange"], env=env)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("vera_") and "\n" not in secret  # alone on stdout: export VERA_TOKEN=$(...)
    assert "ci-bot" in done.stderr and "limited to acme" in done.stderr
    ci_env = {**env, "VERA_TOKEN": secret}  # the CI job's next steps: publish with it, and the version says so
    published = run_vera(["publish", str(served["adapter"]), "--name", "acme/from-ci", "--base-model", "tiny-llama"],
                         env=ci_env)
    assert published.returncode == 0, published.stderr
    shown = run_vera(["show", "acme/from-ci:1"], env={**ci_env, "COLUMNS": "300"})
    assert "published by CI: acme/adapters refs/heads/main, workflow publish, run 1234 (trusted publisher " \
           "acme-main" in " ".join(shown.stdout.split()), shown.stdout
    wrong = run_vera(["auth", "exchange", "--audience", "other"], env=env)
    assert wrong.returncode != 0 and "`vera auth exchange --audience vera`" in " ".join(wrong.stderr.split())
    elsewhere = {k: v for k, v in env.items() if not k.startswith("ACTIONS_")}
    missing = run_vera(["auth", "exchange"], env=elsewhere)
    assert missing.returncode != 0 and "--id-token or VERA_ID_TOKEN" in missing.stderr
    given = run_vera(["auth", "exchange"], env={**elsewhere, "VERA_ID_TOKEN": issuer.token()})
    assert given.returncode == 0 and given.stdout.strip().startswith("vera_"), given.stderr


def test_the_client_raises_the_registrys_errors(served: dict[str, Any], issuer: Issuer) -> None:
    with RegistryClient(served["url"], served["admin"]) as client:  # its own token is not sent
        info, secret = client.exchange_identity_token(issuer.token())
        assert info.owner == "ci-bot" and secret.startswith("vera_")
        with pytest.raises(Forbidden, match="No trusted publisher"):
            client.exchange_identity_token(issuer.token(repository="acme/other"))
        token = issuer.token()
        client.exchange_identity_token(token)
        with pytest.raises(Conflict):
            client.exchange_identity_token(token)
    assert IssuerUnavailable.code == "issuer_unavailable" and Unauthorized.code == "unauthorized"


def test_a_registry_with_no_publishers_or_no_tokens_says_so(tmp_path: Path, issuer: Issuer) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        answer = httpx.post(f"{base}{EXCHANGE}", json={"token": issuer.token()})
        assert answer.status_code == 401 and "VERA_TRUSTED_PUBLISHERS" in answer.json()["detail"]
    with registry_in_thread(url, tmp_path / "blobs", VERA_TRUSTED_PUBLISHERS=publishers(issuer)) as local:
        answer = httpx.post(f"{local}{EXCHANGE}", json={"token": issuer.token()})
        assert answer.status_code == 422 and "does not require tokens" in answer.json()["detail"]


@pytest.mark.parametrize(("entry", "words"), [
    ({"issuer": "http://example.com"}, "must be an https URL"),
    ({"claims": {}}, "at least 1 item"),
    ({"claims": {"aud": "vera"}}, "checked by the exchange itself"),
    ({"claims": {"repository": []}}, "one value or a non-empty list"),
    ({"owners": ["Acme"]}, "not a valid name"),
    ({"user": "ci bot"}, "not a valid name"),
    ({"scopes": ["admin"]}, "'read' or 'publish'"),
    ({"minutes": 600}, "less than or equal to 60"),
    ({"repository": "acme/adapters"}, "Extra inputs are not permitted"),  # a claim written beside claims
    ({"record": ["exp"]}, "record lists \\['exp'\\]"),
])
def test_a_malformed_publisher_is_refused_when_the_settings_are_read(entry: dict[str, Any], words: str) -> None:
    good = {"name": "gh", "issuer": "https://token.actions.githubusercontent.com", "claims": {"repository": "a/b"},
            "user": "ci", "owners": ["acme"]}
    with pytest.raises(ValidationError, match=words):
        Settings(trusted_publishers=[{**good, **entry}])
    with pytest.raises(ValidationError, match="more than once"):
        Settings(trusted_publishers=[good, good])


def test_the_publishers_reach_the_processes_vera_up_and_vera_serve_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """`vera serve --workers` and `vera up` pass the settings on as VERA_* variables (Settings.environment): the
    publishers go as the JSON they were read from (models, not text, before: json.dumps could not write them)."""
    given = [{"name": "gh", "issuer": "https://token.actions.githubusercontent.com", "claims": {"ref": ["a", "b"]},
              "user": "ci", "owners": ["acme"], "minutes": 5}]
    variables = Settings(trusted_publishers=given).environment()
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    again = Settings().trusted_publishers
    assert [p.model_dump() for p in again] == [p.model_dump() for p in Settings(trusted_publishers=given)
                                               .trusted_publishers] and again[0].minutes == 5


def test_a_publisher_may_keep_more_claims_in_what_its_tokens_publish() -> None:
    """``record`` names claims beyond the run's to keep (shown to every reader of the versions); others are not."""
    publisher = TrustedPublisher(name="gl", issuer="https://gitlab.com", claims={"project_path": "acme/x"},
                                 user="ci", owners=["acme"], record=["merge_request_iid"])
    kept = recorded_claims({"project_path": "acme/x", "pipeline_id": "7", "merge_request_iid": "12",
                            "user_email": "a@example.org", "iss": "https://gitlab.com", "exp": 1, "ref": 5},
                           publisher)
    assert kept == {"merge_request_iid": "12", "pipeline_id": "7", "project_path": "acme/x"}


def test_no_organisation_takes_the_name_a_publisher_publishes_as(served: dict[str, Any]) -> None:
    """An outsider's finding: an organisation named as a publisher's user (free until the first exchange made a token
    for it) would have every trusted CI run write in the organisation's namespace as its own."""
    with RegistryClient(served["url"], served["admin"]) as admin:
        with pytest.raises(Conflict, match="'ci-bot' is the user that the trusted publisher.s. acme-main, other-1 "
                                           "publish as"):
            admin.create_organization("ci-bot")
        admin.create_organization("lab")
        with pytest.raises(Conflict, match="is the user that the trusted publisher"):
            admin.rename_organization("lab", "ci-bot")
        assert "ci-bot" not in {o.name for o in admin.organizations()}
        admin.delete_organization("lab")


def test_the_server_warns_at_start_of_a_publisher_whose_user_is_an_organisation(
        registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    from registry.cli.run import _log_publishers

    registry.access.create_organization("ci", creator="ann")  # made before the operator configured the publisher
    settings = Settings(trusted_publishers=[TrustedPublisher(name="gl", issuer="https://gitlab.com", user="ci",
                                                             claims={"project_path": "acme/x"}, owners=["acme"])])
    with caplog.at_level("WARNING", logger="vera"):
        _log_publishers(settings, registry)
    assert "trusted publisher gl: its user 'ci' is an organisation's name" in caplog.text
