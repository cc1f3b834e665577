"""Digest authentication (RFC 2617, RFC 7616, RFC 3261 22): challenges, verification, replay."""

from __future__ import annotations

import base64
import itertools
import struct
from typing import Any

import pytest

from pbx.errors import RemoteProtocolError
from pbx.sip.digest import (
    Algorithm,
    AuthOutcome,
    DigestAuthenticator,
    DigestCredentials,
    authorization_values,
    compute_ha1,
    compute_response,
    parse_authorization,
)

SECRET = b"0123456789abcdef-test-secret"
REALM = "acme.example"
URI = "sip:acme.example"
USERS = {"1001": "s3cret", "1002": "other"}
T0 = 1_000_000.0

_counter = itertools.count()


def deterministic_bytes(n: int) -> bytes:
    return next(_counter).to_bytes(n, "big")


def make_auth(**kwargs: Any) -> DigestAuthenticator:
    return DigestAuthenticator(SECRET, random_bytes=deterministic_bytes, **kwargs)


def lookup(username: str, realm: str, algorithm: Algorithm) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(algorithm, username, realm, password)


def challenge_params(value: str) -> dict[str, str]:
    header = parse_authorization(value)
    assert header.is_digest
    return dict(header.params)


def answer(
    challenge: str,
    *,
    username: str = "1001",
    password: str | None = None,
    method: str = "REGISTER",
    uri: str = URI,
    qop: bool = True,
    nc: int = 1,
    cnonce: str = "0a4f113b",
    algorithm: Algorithm | None = None,
) -> str:
    """What a phone sends back: an Authorization value for ``challenge``."""
    p = challenge_params(challenge)
    alg: Algorithm = algorithm or ("SHA-256" if p["algorithm"] == "SHA-256" else "MD5")
    pw = USERS.get(username, "x") if password is None else password
    ha1 = compute_ha1(alg, username, p["realm"], pw)
    if qop:
        resp = compute_response(
            alg, ha1, method=method, uri=uri, nonce=p["nonce"], qop="auth",
            nc=f"{nc:08x}", cnonce=cnonce,
        )  # fmt: skip
        return (
            f'Digest username="{username}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
            f'uri="{uri}", response="{resp}", algorithm={alg}, qop=auth, nc={nc:08x}, '
            f'cnonce="{cnonce}", opaque="{p["opaque"]}"'
        )
    resp = compute_response(alg, ha1, method=method, uri=uri, nonce=p["nonce"])
    # pyVoIP's shape: no qop, no opaque.
    return (
        f'Digest username="{username}",realm="{p["realm"]}",nonce="{p["nonce"]}",'
        f'uri="{uri}",response="{resp}",algorithm={alg}'
    )


# --- RFC worked examples -------------------------------------------------------------------


def test_rfc2617_md5_worked_example() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        "MD5", ha1, method="GET", uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop="auth", nc="00000001", cnonce="0a4f113b",
    )  # fmt: skip
    assert response == "6629fae49393a05397450978507c4ef1"


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_worked_examples(algorithm: Algorithm, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(
        algorithm, ha1, method="GET", uri="/dir/index.html", nonce=RFC7616_NONCE,
        qop="auth", nc="00000001", cnonce=RFC7616_CNONCE,
    )  # fmt: skip
    assert response == expected


def test_rfc7616_authorization_parses_and_a_foreign_nonce_is_only_stale() -> None:
    value = (
        'Digest username="Mufasa",\r\n realm="http-auth@example.org",\r\n'
        ' uri="/dir/index.html",\r\n algorithm=SHA-256,\r\n'
        f' nonce="{RFC7616_NONCE}",\r\n nc=00000001,\r\n cnonce="{RFC7616_CNONCE}",\r\n qop=auth,'
        '\r\n response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
        '\r\n opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = DigestCredentials.from_header(parse_authorization(value))
    assert creds.username == "Mufasa"
    assert creds.algorithm == "SHA-256"
    assert creds.nc == "00000001"

    def rfc_lookup(user: str, realm: str, algorithm: Algorithm) -> str | None:
        return compute_ha1(algorithm, user, realm, "Circle of Life") if user == "Mufasa" else None

    auth = DigestAuthenticator(SECRET, algorithms=("MD5", "SHA-256"))
    result = auth.verify("GET", value, "http-auth@example.org", rfc_lookup, T0)
    # The password is right but the nonce is not one of ours: stale, not failed.
    assert result.outcome is AuthOutcome.STALE
    assert result.reason == "nonce_unknown"
    assert not result.failed


# --- Challenges ----------------------------------------------------------------------------


def test_challenge_offers_algorithms_in_configured_order_with_qop_auth() -> None:
    values = make_auth().challenge(REALM, T0)
    params = [challenge_params(v) for v in values]
    assert [p["algorithm"] for p in params] == ["MD5", "SHA-256"]
    assert all(p["realm"] == REALM and p["qop"] == "auth" and p["opaque"] for p in params)
    assert "stale" not in params[0]
    # One nonce for the whole 401, so a client mixing the headers still authenticates.
    assert params[0]["nonce"] == params[1]["nonce"]
    assert values[0].startswith('Digest realm="acme.example", nonce="')


def test_challenge_order_follows_config() -> None:
    values = make_auth(algorithms=("SHA-256",)).challenge(REALM, T0, stale=True)
    assert len(values) == 1
    assert challenge_params(values[0])["algorithm"] == "SHA-256"
    assert challenge_params(values[0])["stale"] == "true"


def test_each_challenge_has_a_new_nonce() -> None:
    auth = make_auth()
    first = challenge_params(auth.challenge(REALM, T0)[0])["nonce"]
    second = challenge_params(auth.challenge(REALM, T0)[0])["nonce"]
    assert first != second


# --- Verification ------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1], ids=["MD5", "SHA-256"])
def test_correct_response_is_accepted(index: int) -> None:
    auth = make_auth()
    challenge = auth.challenge(REALM, T0)[index]
    result = auth.verify("REGISTER", answer(challenge), REALM, lookup, T0 + 1)
    assert result.ok
    assert result.username == "1001"
    assert result.algorithm == ("MD5", "SHA-256")[index]


def test_ha1_credentials_verify_like_a_password() -> None:
    stored = {
        ("1001", "MD5"): compute_ha1("MD5", "1001", REALM, "s3cret"),
        ("1001", "SHA-256"): compute_ha1("SHA-256", "1001", REALM, "s3cret").upper(),
    }

    def ha1_lookup(user: str, realm: str, algorithm: Algorithm) -> str | None:
        return stored.get((user, algorithm))

    auth = make_auth()
    for index in (0, 1):
        challenge = auth.challenge(REALM, T0)[index]
        assert auth.verify("REGISTER", answer(challenge), REALM, ha1_lookup, T0).ok


def test_no_qop_response_is_accepted_once() -> None:
    auth = make_auth()
    challenge = auth.challenge(REALM, T0)[0]
    value = answer(challenge, qop=False)
    assert auth.verify("REGISTER", value, REALM, lookup, T0 + 1).ok
    again = auth.verify("REGISTER", value, REALM, lookup, T0 + 2)
    assert again.outcome is AuthOutcome.STALE
    assert again.reason == "nonce_reused"
    # The same nonce with a fresh computation (another method) is refused too: single use.
    other = answer(challenge, qop=False, method="INVITE")
    assert auth.verify("INVITE", other, REALM, lookup, T0 + 2).stale


def test_pyvoip_mixing_md5_with_the_last_challenges_nonce_is_accepted() -> None:
    auth = make_auth()
    last = auth.challenge(REALM, T0)[-1]  # the SHA-256 one; pyVoIP answers it with MD5
    value = answer(last, qop=False, algorithm="MD5")
    assert auth.verify("REGISTER", value, REALM, lookup, T0).ok


def test_nc_must_grow_per_nonce() -> None:
    auth = make_auth()
    challenge = auth.challenge(REALM, T0)[0]
    assert auth.verify("REGISTER", answer(challenge, nc=1), REALM, lookup, T0).ok
    assert auth.verify("REGISTER", answer(challenge, nc=2, cnonce="b"), REALM, lookup, T0).ok
    same = auth.verify("REGISTER", answer(challenge, nc=2, cnonce="c"), REALM, lookup, T0)
    assert same.stale
    assert same.reason == "nc_not_increasing"
    lower = auth.verify("REGISTER", answer(challenge, nc=1, cnonce="d"), REALM, lookup, T0)
    assert lower.stale
    assert auth.verify("REGISTER", answer(challenge, nc=7, cnonce="e"), REALM, lookup, T0).ok


def test_replayed_authorization_is_refused() -> None:
    auth = make_auth()
    value = answer(auth.challenge(REALM, T0)[1], nc=1)
    assert auth.verify("REGISTER", value, REALM, lookup, T0).ok
    replay = auth.verify("REGISTER", value, REALM, lookup, T0 + 5)
    assert not replay.ok
    assert replay.outcome is AuthOutcome.STALE


def test_expired_nonce_with_correct_response_is_stale() -> None:
    auth = make_auth(nonce_ttl=30)
    challenge = auth.challenge(REALM, T0)[0]
    assert auth.verify("REGISTER", answer(challenge), REALM, lookup, T0 + 30).ok
    # Accepted for nonce_ttl and at most a tenth more (the issue time is kept to a slot).
    late = auth.verify("REGISTER", answer(challenge, nc=2), REALM, lookup, T0 + 33.01)
    assert late.outcome is AuthOutcome.STALE
    assert late.reason == "nonce_expired"
    # An expired nonce with a wrong password is a plain failure, never stale.
    wrong = answer(challenge, nc=3, password="guess")
    assert auth.verify("REGISTER", wrong, REALM, lookup, T0 + 34).outcome is AuthOutcome.FAILED


def test_nonce_from_another_realm_or_secret_is_stale() -> None:
    auth = make_auth()
    foreign = make_auth().challenge("other.example", T0)[0]
    moved = challenge_params(foreign)["nonce"]
    # A correct response over a nonce made for another realm:
    ha1 = compute_ha1("MD5", "1001", REALM, "s3cret")
    resp = compute_response(
        "MD5", ha1, method="REGISTER", uri=URI, nonce=moved, qop="auth", nc="00000001",
        cnonce="x",
    )  # fmt: skip
    value = (
        f'Digest username="1001", realm="{REALM}", nonce="{moved}", uri="{URI}", '
        f'response="{resp}", qop=auth, nc=00000001, cnonce="x"'
    )
    assert auth.verify("REGISTER", value, REALM, lookup, T0).reason == "nonce_unknown"
    restarted = DigestAuthenticator(b"another-secret-after-restart!!")
    challenge = auth.challenge(REALM, T0)[0]
    assert restarted.verify("REGISTER", answer(challenge), REALM, lookup, T0).stale


def test_unknown_user_and_wrong_password_get_identical_answers() -> None:
    auth = make_auth()
    challenge = auth.challenge(REALM, T0)[0]
    unknown = auth.verify("REGISTER", answer(challenge, username="9999"), REALM, lookup, T0)
    wrong = auth.verify("REGISTER", answer(challenge, password="guess"), REALM, lookup, T0)
    assert unknown.outcome is wrong.outcome is AuthOutcome.FAILED
    assert unknown.failed
    assert wrong.failed
    # The reason is for the server's logs only; what goes on the wire is the same challenge.
    assert {unknown.reason, wrong.reason} == {"unknown_user", "wrong_password"}
    a = DigestAuthenticator(SECRET, random_bytes=lambda n: b"\x00" * n)
    assert a.challenge(REALM, T0) == a.challenge(REALM, T0)


def test_unknown_user_costs_a_hash_like_a_known_one() -> None:
    calls: list[str] = []

    def counting_lookup(user: str, realm: str, algorithm: Algorithm) -> str | None:
        calls.append(user)
        return lookup(user, realm, algorithm)

    auth = make_auth()
    challenge = auth.challenge(REALM, T0)[0]
    auth.verify("REGISTER", answer(challenge, username="9999"), REALM, counting_lookup, T0)
    auth.verify("REGISTER", answer(challenge, password="bad"), REALM, counting_lookup, T0)
    assert calls == ["9999", "1001"]


def test_unknown_scheme_is_no_credentials() -> None:
    # RFC 4475 regaut01: well formed, unknown scheme -> a fresh challenge, never 400.
    result = make_auth().verify(
        "REGISTER", "NoOneKnowsThisScheme opaque-data=here", REALM, lookup, T0
    )
    assert result.outcome is AuthOutcome.MISSING
    assert not result.failed


def test_no_authorization_is_missing() -> None:
    assert make_auth().verify("REGISTER", None, REALM, lookup, T0).outcome is AuthOutcome.MISSING
    assert make_auth().verify("REGISTER", [], REALM, lookup, T0).outcome is AuthOutcome.MISSING


def test_credentials_for_another_realm_are_skipped() -> None:
    auth = make_auth()
    ours = answer(auth.challenge(REALM, T0)[0])
    theirs = 'Digest username="x", realm="elsewhere", nonce="n", uri="sip:x", response="00"'
    assert auth.verify("REGISTER", [theirs, ours], REALM, lookup, T0).ok
    only_theirs = auth.verify("REGISTER", [theirs], REALM, lookup, T0)
    assert only_theirs.outcome is AuthOutcome.MISSING
    assert only_theirs.reason == "realm_mismatch"


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="1001", realm="acme.example"',  # no nonce/uri/response
        'Digest username="1001" realm="acme.example"',  # no comma
        'Digest username="1001, realm="acme.example"',  # unterminated quote
        'Digest username="1001", realm="acme.example", nonce="n", uri="u", response="r", '
        "qop=auth",  # qop without nc/cnonce
    ],
)
def test_malformed_digest_credentials_fail(value: str) -> None:
    result = make_auth().verify("REGISTER", value, REALM, lookup, T0)
    assert result.outcome is AuthOutcome.FAILED
    assert result.reason == "malformed"


def test_unsupported_algorithm_and_qop_fail() -> None:
    auth = make_auth(algorithms=("MD5",))
    sha_challenge = make_auth().challenge(REALM, T0)[1]
    assert auth.verify("REGISTER", answer(sha_challenge), REALM, lookup, T0).reason == (
        "unsupported_algorithm"
    )
    value = answer(auth.challenge(REALM, T0)[0]).replace("qop=auth", "qop=auth-int")
    assert auth.verify("REGISTER", value, REALM, lookup, T0).reason == "unsupported_qop"


def test_parse_authorization_handles_quoted_escapes_and_case() -> None:
    header = parse_authorization(
        'DIGEST Username="a\\"b", REALM="r,1", nonce=abc ,uri="sip:x", response="R"'
    )
    assert header.is_digest
    assert header.params["username"] == 'a"b'
    assert header.params["realm"] == "r,1"
    assert header.params["nonce"] == "abc"
    assert DigestCredentials.from_header(header).response == "r"


def test_parse_authorization_rejects_repeated_params() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_authorization('Digest nonce="a", nonce="b"')


def test_authorization_values_are_never_split_on_commas() -> None:
    headers = (
        ("Via", "SIP/2.0/UDP x"),
        ("Authorization", 'Digest username="a", realm="r"'),
        ("Proxy-Authorization", 'Digest username="p"'),
        ("authorization", 'Digest username="b", realm="s"'),
    )
    assert authorization_values(headers) == [
        'Digest username="a", realm="r"',
        'Digest username="b", realm="s"',
    ]
    assert authorization_values(headers, proxy=True) == ['Digest username="p"']


def test_used_nonce_table_is_bounded_and_eviction_never_reopens_a_replay() -> None:
    # Slots of 100 s: one nonce per slot, so that evicting one marks only its slot stale.
    auth = make_auth(max_tracked_nonces=4, nonce_ttl=1000)
    first_challenge = auth.challenge(REALM, T0)[0]
    first = answer(first_challenge, qop=False)
    assert auth.verify("REGISTER", first, REALM, lookup, T0).ok
    for i in range(1, 11):
        now = T0 + 100 * i
        c = auth.challenge(REALM, now)[0]
        assert auth.verify("REGISTER", answer(c, qop=False), REALM, lookup, now).ok
    assert auth.tracked_nonces <= 4
    # The first nonce was evicted, yet its replay is still refused (it has not expired).
    replay = auth.verify("REGISTER", first, REALM, lookup, T0 + 1050)
    assert (replay.stale, replay.reason) == (True, "nonce_evicted")
    # A nonce issued after the evictions but not yet used still works.
    fresh = auth.challenge(REALM, T0 + 1100)[0]
    assert auth.verify("REGISTER", answer(fresh), REALM, lookup, T0 + 1100).ok


def test_expired_entries_are_forgotten() -> None:
    auth = make_auth(nonce_ttl=10)
    for i in range(5):
        c = auth.challenge(REALM, T0 + i)[0]
        assert auth.verify("REGISTER", answer(c), REALM, lookup, T0 + i).ok
    c = auth.challenge(REALM, T0 + 100)[0]
    assert auth.verify("REGISTER", answer(c), REALM, lookup, T0 + 100).ok
    assert auth.tracked_nonces == 1


def test_a_nonce_never_issued_gets_the_same_answer_whatever_the_password() -> None:
    # Issue 17 item 7: a made-up nonce with the right password got stale=true and with a wrong
    # one a plain 401, so guesses could be checked without a challenge.
    auth = make_auth()
    made_up = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    issued = auth.challenge(REALM, T0)[0]
    template = issued.replace(challenge_params(issued)["nonce"], made_up)
    right = auth.verify("REGISTER", answer(template), REALM, lookup, T0)
    wrong = auth.verify("REGISTER", answer(template, password="guess"), REALM, lookup, T0)
    unknown = auth.verify("REGISTER", answer(template, username="9999"), REALM, lookup, T0)
    print("made-up nonce:", right.outcome, wrong.outcome, unknown.outcome)
    assert right.outcome is wrong.outcome is unknown.outcome is AuthOutcome.STALE
    assert right.reason == wrong.reason == "nonce_unknown"


def test_a_nonce_carries_nothing_readable() -> None:
    # Issue 17 item 7: nonces held the issue time to the millisecond. Now they are random bytes
    # and a MAC: two nonces made a second apart share no prefix beyond chance, and none of the
    # bytes changes with the time given when the random bytes are the same.
    fixed = DigestAuthenticator(SECRET, random_bytes=lambda n: bytes(n))
    a = challenge_params(fixed.challenge(REALM, T0)[0])["nonce"]
    b = challenge_params(fixed.challenge(REALM, T0 + 0.001)[0])["nonce"]
    c = challenge_params(fixed.challenge(REALM, T0 + 3600)[0])["nonce"]
    raw = [base64.urlsafe_b64decode(n) for n in (a, b, c)]
    assert raw[0] == raw[1]  # the same slot: identical, the milliseconds are not in it
    assert raw[0][:17] == raw[2][:17] == bytes(17)  # the readable part is only the random bytes
    millis = struct.pack(">q", round(T0 * 1000))
    assert millis[2:] not in raw[0]
    assert struct.pack(">q", int(T0))[4:] not in raw[0]


def test_secret_and_algorithms_are_checked() -> None:
    with pytest.raises(ValueError, match="secret"):
        DigestAuthenticator(b"short")
    with pytest.raises(ValueError, match="algorithms"):
        DigestAuthenticator(SECRET, algorithms=())


def test_nonce_mac_is_keyed_by_the_whole_secret_even_beyond_32_bytes() -> None:
    # The nonce MAC is keyed BLAKE2s (at most 32 key bytes): a longer secret is hashed into the
    # key, so two secrets differing only after byte 32 still make foreign nonces.
    long_secret = b"s" * 40
    auth = DigestAuthenticator(long_secret)
    challenge = auth.challenge(REALM, T0)[0]
    assert auth.verify("REGISTER", answer(challenge), REALM, lookup, T0).ok
    other = DigestAuthenticator(long_secret[:-1] + b"t")
    assert other.verify("REGISTER", answer(challenge), REALM, lookup, T0).reason == "nonce_unknown"


def test_nonce_with_one_mac_bit_changed_is_not_ours() -> None:
    auth = make_auth()
    challenge = auth.challenge(REALM, T0)[0]
    nonce = challenge_params(challenge)["nonce"]
    raw = bytearray(base64.urlsafe_b64decode(nonce))
    raw[-1] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).decode()
    # A correct response over the forged nonce: what a phone would send back for it.
    value = answer(challenge.replace(nonce, forged))
    assert auth.verify("REGISTER", value, REALM, lookup, T0).reason == "nonce_unknown"
