"""SasToken and sas_problems on real tokens signed by azure-storage-blob with a random key: the facts are read,
every problem gets its sentence, and the signature never shows up in str, repr, problems or errors."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
    generate_container_sas,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from acr_transfer.errors import SasTokenError
from acr_transfer.sas import SasToken, format_utc, sas_problems

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
WHERE = "secret 'acrexportsas' (vault sourcevault)"


def container_sas(key: str, permission: str = "rawl", **kw: Any) -> str:
    kw.setdefault("expiry", NOW + timedelta(days=30))
    kw.setdefault("protocol", "https")
    return generate_container_sas("sourcestorage", "transfer", account_key=key, permission=permission, **kw)


def account_sas(key: str, resource_types: ResourceTypes, **kw: Any) -> str:
    return generate_account_sas(
        "targetstorage",
        account_key=key,
        resource_types=resource_types,
        permission=AccountSasPermissions(read=True, add=True, create=True, write=True, list=True),
        expiry=NOW + timedelta(days=30),
        protocol="https",
        **kw,
    )


def signature(query: str) -> str:
    return parse_qs(query)["sig"][0]


def check(token: SasToken, required: str = "rawl", hours: float = 2, https_only: bool = True) -> list[str]:
    return sas_problems(
        token, required=required, valid_until=NOW + timedelta(hours=hours), https_only=https_only, where=WHERE, now=NOW
    )


# --- parsing ------------------------------------------------------------------------------------------------------


def test_parse_a_container_sas_with_and_without_question_mark(account_key: str) -> None:
    query = container_sas(account_key, expiry=datetime(2026, 12, 24, 10, 0, tzinfo=UTC))
    for value in (query, "?" + query, f"  ?{query}\n"):
        token = SasToken.parse(value)
        assert token.permissions == "rawl"
        assert token.expiry == datetime(2026, 12, 24, 10, 0, tzinfo=UTC)
        assert token.start is None
        assert token.protocol == "https"
        assert token.resource == "c"
        assert token.version
        assert not token.is_account_sas
        assert token.query == query
        assert signature(token.query) == signature(query)


def test_parse_an_account_sas(account_key: str) -> None:
    start = datetime(2026, 11, 1, 8, 30, 15, tzinfo=UTC)
    token = SasToken.parse(account_sas(account_key, ResourceTypes(container=True, object=True), start=start))
    assert token.is_account_sas
    assert (token.resource_types, token.services, token.resource) == ("co", "b", None)
    assert token.permissions == "rwlac"  # as given: AccountSasPermissions orders its letters its own way
    assert token.start == start


def test_times_are_aware_utc_whatever_form_se_takes() -> None:
    for se, expected in [
        ("2026-12-24", datetime(2026, 12, 24, tzinfo=UTC)),
        ("2026-12-24T10:00Z", datetime(2026, 12, 24, 10, tzinfo=UTC)),
        ("2026-12-24T10:00:00.0000000Z", datetime(2026, 12, 24, 10, tzinfo=UTC)),
        ("2026-12-24T11:00:00%2B01:00", datetime(2026, 12, 24, 10, tzinfo=UTC)),
    ]:
        token = SasToken.parse(f"sp=r&se={se}&sig=abc")
        assert token.expiry == expected
        assert token.expiry is not None and token.expiry.tzinfo is not None


def test_str_and_repr_show_facts_never_the_signature(account_key: str) -> None:
    query = container_sas(account_key, expiry=datetime(2026, 12, 24, 10, 0, tzinfo=UTC))
    token = SasToken.parse(query)
    assert str(token) == "SAS(sp=rawl, se=2026-12-24T10:00Z, spr=https, sr=c)"
    assert repr(token) == str(token)
    for text in (str(token), repr(token), f"{token}", f"{token!r}", repr([token]), repr({"t": token})):
        assert "sig" not in text
        assert signature(query) not in text
        assert query not in text


def test_missing_letters_in_required_order(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key, permission="rl"))
    assert token.missing("rawl") == "aw"
    assert token.missing("wwa") == "wa"
    assert token.missing("rl") == ""


NOT_A_SAS = [
    ("", "no signature"),
    ("garbage", "no signature"),
    ("?sv=2026-10-06&sp=r&se=2026-12-24", "no signature"),
    ("sv=2026-10-06&se=2026-12-24&sig=SeCrEtSiGnAtUrE", "permissions (sp)"),
    ("sp=RAWL&se=2026-12-24&sig=SeCrEtSiGnAtUrE", "permissions (sp)"),
    ("sp=rawl&sig=SeCrEtSiGnAtUrE", "no expiry (se)"),
    ("sp=rawl&se=tomorrow&sig=SeCrEtSiGnAtUrE", "expiry (se) is not an ISO 8601"),
    ("sp=rawl&se=2026-12-24&st=later&sig=SeCrEtSiGnAtUrE", "start (st) is not an ISO 8601"),
    ("sp=r&sp=w&se=2026-12-24&sig=SeCrEtSiGnAtUrE", "'sp' appears twice"),
    ("si=policy1&sr=c&sig=SeCrEtSiGnAtUrE", "stored access policy"),
    ("https://acct.blob.core.windows.net/c?sp=r&se=2026-12-24&sig=SeCrEtSiGnAtUrE", "it is a URL"),
]


@pytest.mark.parametrize(("value", "reason"), NOT_A_SAS)
def test_not_a_sas_says_why_and_never_echoes_the_value(value: str, reason: str) -> None:
    with pytest.raises(SasTokenError) as info:
        SasToken.parse(value, where=WHERE)
    message = str(info.value)
    assert message.startswith(f"{WHERE} is not a usable SAS token")
    assert reason in message
    assert "SeCrEtSiGnAtUrE" not in message
    assert "SeCrEtSiGnAtUrE" not in repr(info.value)
    assert info.value.__cause__ is None  # no chained exception carries the value either


def test_not_text_is_refused() -> None:
    with pytest.raises(SasTokenError, match="expected text"):
        SasToken.parse(None)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", min_size=12, max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
)
def test_parse_failures_never_contain_the_signature(before: str, sig: str, after: str) -> None:
    try:
        token = SasToken.parse(f"{before}sig={sig}{after}")
    except SasTokenError as e:
        assert sig not in str(e) and sig not in repr(e)
    else:
        assert sig not in str(token) and sig not in repr(token)


def test_tokens_pickle_and_compare(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key))
    assert pickle.loads(pickle.dumps(token)) == token
    assert SasToken.parse("?" + token.query) == token


# --- problems -----------------------------------------------------------------------------------------------------


def test_a_good_token_has_no_problems(account_key: str) -> None:
    assert check(SasToken.parse(container_sas(account_key))) == []
    bridge = SasToken.parse(account_sas(account_key, ResourceTypes(container=True, object=True)))
    assert check(bridge, required="cw") == []


def test_expired(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key, expiry=datetime(2026, 11, 20, 8, 0, tzinfo=UTC)))
    assert check(token) == [f"SAS token in {WHERE} expired 2026-11-20T08:00Z; renew it before transferring"]


def test_expires_before_the_deadline(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key, expiry=NOW + timedelta(minutes=30)))
    assert check(token, hours=2) == [
        f"SAS token in {WHERE} expires 2026-11-20T09:30Z, before the transfer's deadline 2026-11-20T11:00Z; "
        "extend it or lower timeout_minutes"
    ]
    assert check(token, hours=0.25) == []


def test_not_yet_valid(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key, start=NOW + timedelta(hours=1)))
    assert check(token) == [
        f"SAS token in {WHERE} is not valid until 2026-11-20T10:00Z (st); wait until then or generate it with an "
        "earlier start time"
    ]


def test_missing_permissions(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key, permission="ral"))
    assert check(token) == [
        f"SAS token in {WHERE} lacks permission(s) 'w' (has 'ral', needs 'rawl'); generate it with at least sp=rawl"
    ]
    assert check(token, required="rl") == []
    assert "lacks permission(s) 'd' (has 'ral', needs 'rdl')" in check(token, required="rdl")[0]


@pytest.mark.parametrize(("protocol", "shown"), [(None, "no spr, so https and http"), ("https,http", "spr=https,http")])
def test_plain_http_allowed(account_key: str, protocol: str | None, shown: str) -> None:
    token = SasToken.parse(container_sas(account_key, protocol=protocol))
    assert check(token) == [
        f"SAS token in {WHERE} allows plain http ({shown}); generate it https-only (spr=https, --https-only)"
    ]
    assert check(token, https_only=False) == []


def test_account_sas_without_containers_and_objects(account_key: str) -> None:
    token = SasToken.parse(account_sas(account_key, ResourceTypes(service=True, object=True)))
    assert check(token, required="cw") == [
        f"SAS token in {WHERE} is an account SAS whose resource types (srt=so) lack 'c'; ACR transfer needs "
        "containers and objects: generate it with srt=co"
    ]


def test_account_sas_for_another_service_and_blob_scoped_sas(account_key: str) -> None:
    token = SasToken.parse("ss=q&srt=co&sp=rawl&se=2026-12-24&spr=https&sig=abc")
    assert check(token) == [
        f"SAS token in {WHERE} is an account SAS for services ss=q, not blob storage; generate it with ss=b"
    ]
    blob = generate_blob_sas(
        "sourcestorage", "transfer", "one.tar", account_key=account_key, permission="rawl", expiry=NOW + timedelta(1)
    )
    sentences = check(SasToken.parse(blob), https_only=False)
    assert sentences == [
        f"SAS token in {WHERE} is scoped to a single blob or other resource (sr=b); ACR transfer needs a container "
        "SAS (sr=c) or an account SAS"
    ]


def test_every_problem_at_once_each_naming_where_and_none_leaking(account_key: str) -> None:
    query = container_sas(
        account_key,
        permission="rl",
        start=NOW + timedelta(hours=1),
        expiry=NOW - timedelta(hours=1),
        protocol="https,http",
    )
    sentences = check(SasToken.parse(query))
    assert len(sentences) == 4
    assert all(s.startswith(f"SAS token in {WHERE} ") for s in sentences)
    assert not any(signature(query) in s or "sig=" in s for s in sentences)


def test_naive_times_are_taken_as_utc(account_key: str) -> None:
    token = SasToken.parse(container_sas(account_key, expiry=NOW + timedelta(minutes=30)))
    naive_now = NOW.replace(tzinfo=None)
    sentences = sas_problems(
        token, required="r", valid_until=naive_now + timedelta(hours=1), https_only=True, where=WHERE, now=naive_now
    )
    assert sentences and "before the transfer's deadline 2026-11-20T10:00Z" in sentences[0]


def test_format_utc() -> None:
    assert format_utc(datetime(2026, 12, 24, 10, 0, tzinfo=UTC)) == "2026-12-24T10:00Z"
    assert format_utc(datetime(2026, 12, 24, 10, 0, 5, tzinfo=UTC)) == "2026-12-24T10:00:05Z"
    assert format_utc(datetime(2026, 12, 24, 10, 0)) == "2026-12-24T10:00Z"
