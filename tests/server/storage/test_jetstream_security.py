"""The JetStream store on a secured NATS server: TLS (a private CA, client certificates),
NKEY, ``.creds`` (decentralized JWT) and token sign-in, and a refusal to fall back to
plain text.

Each server is a ``nats-server`` of this module's own (``NatsProcess``), configured
with certificates made here by ``cryptography`` and NKEYs made by ``nkeys``; the
operator, account and user JWTs of the ``.creds`` server are signed here with those
NKEYs, as ``nsc`` would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bosbase_pubsub.server.storage import StoreError, open_store
from bosbase_pubsub.server.storage.jetstream import JetStreamStore
from bosbase_pubsub.server.storage.jetstream_common import parse_url

from ...conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, make_superuser
from ...nats import NatsProcess, find_nats_server
from ...servers import ServerProcess, WsClient, sign_in
from .conftest import message

TOKEN = "a-long-token-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Pki:
    """A private CA and the PEM files it signed: a server's, a client's, and a stranger CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _authority(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: str, usage: x509.ObjectIdentifier
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(folder: Path, name: str, cert: x509.Certificate, key: object = None) -> Path:
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        (folder / f"{name}-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = _authority("bosbase-pubsub test CA")
    server = _leaf(ca, "nats server", ExtendedKeyUsageOID.SERVER_AUTH)
    client = _leaf(ca, "bosbase-pubsub node", ExtendedKeyUsageOID.CLIENT_AUTH)
    other = _authority("some other CA")
    return Pki(
        ca=_write(folder, "ca", ca[0]),
        server_cert=_write(folder, "server", *server),
        server_key=folder / "server-key.pem",
        client_cert=_write(folder, "client", *client),
        client_key=folder / "client-key.pem",
        other_ca=_write(folder, "other-ca", other[0]),
    )


@dataclass(frozen=True)
class Nkey:
    seed_file: Path
    public_key: str


def _nkey(folder: Path, name: str) -> Nkey:
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    path = folder / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    return Nkey(path, nkeys.from_seed(seed).public_key.decode())


@pytest.fixture(scope="module")
def user_nkey(tmp_path_factory: pytest.TempPathFactory) -> Nkey:
    return _nkey(tmp_path_factory.mktemp("nkeys"), "user")


@pytest.fixture(scope="module")
def stranger_nkey(tmp_path_factory: pytest.TempPathFactory) -> Nkey:
    return _nkey(tmp_path_factory.mktemp("nkeys"), "stranger")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _key_pair(prefix: int) -> tuple[bytes, str, nkeys.KeyPair]:
    seed = nkeys.encode_seed(secrets.token_bytes(32), prefix)
    pair = nkeys.from_seed(seed)
    return seed, pair.public_key.decode(), pair


def _nats_jwt(claims: dict[str, object], signer: nkeys.KeyPair) -> str:
    """A NATS JWT (``alg: ed25519-nkey``) of ``claims``, signed by ``signer``."""
    claims = {**claims, "iat": int(time.time())}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signed = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signed += "." + _b64(json.dumps(claims).encode())
    return signed + "." + _b64(signer.sign(signed.encode()))


@dataclass(frozen=True)
class Decentralized:
    """An operator with a system account and an application account (JetStream on)."""

    config: str
    account: nkeys.KeyPair
    account_public: str
    other_account: nkeys.KeyPair
    other_account_public: str

    def creds(self, folder: Path, name: str, *, signer: nkeys.KeyPair, issuer: str) -> Path:
        seed, public, _pair = _key_pair(nkeys.PREFIX_BYTE_USER)
        nats = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user"}
        claims = {"iss": issuer, "sub": public, "name": name, "nats": {**nats, "version": 2}}
        user = _nats_jwt(claims, signer)
        path = folder / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
        )
        return path


@pytest.fixture(scope="module")
def decentralized(tmp_path_factory: pytest.TempPathFactory) -> Decentralized:
    folder = tmp_path_factory.mktemp("operator")
    _, operator_public, operator = _key_pair(nkeys.PREFIX_BYTE_OPERATOR)
    _, system_public, _system = _key_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, account_public, account = _key_pair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, other_public, other = _key_pair(nkeys.PREFIX_BYTE_ACCOUNT)  # known to nobody
    limits: dict[str, int | bool] = dict.fromkeys(
        ("subs", "data", "payload", "imports", "exports", "conn", "leaf"), -1
    )
    limits["wildcards"] = True
    jetstream: dict[str, int | bool] = dict.fromkeys(
        ("mem_storage", "disk_storage", "streams", "consumer"), -1
    )

    def account_jwt(public: str, name: str, extra: dict[str, int | bool]) -> str:
        nats = {"limits": {**limits, **extra}, "type": "account", "version": 2}
        return _nats_jwt(
            {"iss": operator_public, "sub": public, "name": name, "nats": nats}, operator
        )

    operator_claims = {
        "iss": operator_public,
        "sub": operator_public,
        "name": "test operator",
        "nats": {"type": "operator", "version": 2, "system_account": system_public},
    }
    (folder / "operator.jwt").write_text(_nats_jwt(operator_claims, operator))
    config = (
        f'operator: "{folder / "operator.jwt"}"\nsystem_account: {system_public}\n'
        "resolver: MEMORY\nresolver_preload: {\n"
        f'  {system_public}: "{account_jwt(system_public, "SYS", {})}"\n'
        f'  {account_public}: "{account_jwt(account_public, "app", jetstream)}"\n}}\n'
    )
    return Decentralized(config, account, account_public, other, other_public)


@pytest.fixture(scope="module")
def decentralized_server(decentralized: Decentralized) -> Iterator[NatsProcess]:
    yield from _own_server(decentralized.config)


def _own_server(config: str) -> Iterator[NatsProcess]:
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed")
    server = NatsProcess(binary, config).start()
    try:
        yield server
    finally:
        server.destroy()


def _tls_block(pki: Pki, *, verify: bool) -> str:
    return (
        f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}",'
        f' ca_file: "{pki.ca}", verify: {str(verify).lower()}, timeout: 5 }}\n'
    )


@pytest.fixture(scope="module")
def tls_nkey_server(pki: Pki, user_nkey: Nkey) -> Iterator[NatsProcess]:
    """TLS with the private CA's certificate, and sign-in by NKEY."""
    auth = f'authorization {{ users: [ {{ nkey: "{user_nkey.public_key}" }} ] }}\n'
    yield from _own_server(_tls_block(pki, verify=False) + auth)


@pytest.fixture(scope="module")
def mutual_tls_server(pki: Pki) -> Iterator[NatsProcess]:
    """TLS that also verifies the client's certificate."""
    yield from _own_server(_tls_block(pki, verify=True))


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsProcess]:
    """Plain text, sign-in by token."""
    yield from _own_server(f'authorization {{ token: "{TOKEN}" }}\n')


def _url(scheme: str, server: NatsProcess, userinfo: str = "", **options: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    stream = f"stream=t_bbps_{secrets.token_hex(5)}"
    return f"{scheme}://{userinfo}127.0.0.1:{server.port}?{stream}{'&' + query if query else ''}"


async def _stores_and_reads_back(url: str) -> None:
    store = JetStreamStore(url)
    await store.open()
    try:
        stored = await store.append([message("secure/t", b'{"n":%d}' % n) for n in range(3)])
        read = await store.read_topic("secure/t", 0, 10**9, 10)
        assert [m.id for m in read] == [m.id for m in stored]
        assert [m.data for m in read] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    finally:
        await store.close()


async def _refused(url: str) -> str:
    store = JetStreamStore(url)
    with pytest.raises(StoreError) as refused:
        await store.open()
    return str(refused.value)


def test_tls_and_nkey_options_are_read_from_the_url(pki: Pki, user_nkey: Nkey) -> None:
    plain = parse_url("nats://me:secret@nats.internal:4333")
    assert not plain.tls
    assert plain.where == "nats://nats.internal:4333"  # for messages: no credentials
    assert parse_url("tls://nats.internal").server == "tls://nats.internal:4222"
    secured = parse_url(
        f"nats://nats.internal?tls_ca={pki.ca}&tls_cert={pki.client_cert}"
        f"&tls_key={pki.client_key}&nkey={user_nkey.seed_file}"
    )
    assert secured.tls  # any tls_ option asks for TLS
    assert secured.server == "tls://nats.internal:4222"
    assert (secured.tls_ca, secured.tls_cert, secured.tls_key, secured.nkey) == (
        str(pki.ca),
        str(pki.client_cert),
        str(pki.client_key),
        str(user_nkey.seed_file),
    )


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("tls_ca=/nonexistent/ca.pem", "tls_ca: no such file '/nonexistent/ca.pem'"),
        ("nkey=/nonexistent/user.nk", "nkey: no such file"),
        ("tls_cert={cert}", "tls_cert and tls_key go together"),
        ("tls_key={cert}", "tls_cert and tls_key go together"),
    ],
)
def test_a_missing_file_or_half_a_key_pair_is_refused_before_connecting(
    pki: Pki, query: str, complaint: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=complaint):
        open_store(f"tls://h?{query.format(cert=pki.client_cert)}", tmp_path)


async def test_over_tls_with_a_private_ca_and_an_nkey_messages_are_stored_and_read(
    tls_nkey_server: NatsProcess, pki: Pki, user_nkey: Nkey
) -> None:
    await _stores_and_reads_back(
        _url("tls", tls_nkey_server, tls_ca=pki.ca, nkey=user_nkey.seed_file)
    )


async def test_a_server_certificate_of_an_untrusted_ca_is_refused(
    tls_nkey_server: NatsProcess, pki: Pki, user_nkey: Nkey
) -> None:
    problem = await _refused(
        _url("tls", tls_nkey_server, tls_ca=pki.other_ca, nkey=user_nkey.seed_file)
    )
    assert f"cannot connect to tls://127.0.0.1:{tls_nkey_server.port}" in problem
    assert "certificate verify failed" in problem.lower()


async def test_a_plain_nats_url_still_gets_tls_when_the_server_requires_it(
    tls_nkey_server: NatsProcess, user_nkey: Nkey
) -> None:
    # nats-py upgrades because the server requires TLS, and checks the certificate
    # against the system's CAs, which do not know the private one.
    problem = await _refused(_url("nats", tls_nkey_server, nkey=user_nkey.seed_file))
    assert "certificate verify failed" in problem.lower()


async def test_a_wrong_or_missing_nkey_is_refused(
    tls_nkey_server: NatsProcess, pki: Pki, stranger_nkey: Nkey
) -> None:
    wrong = await _refused(
        _url("tls", tls_nkey_server, tls_ca=pki.ca, nkey=stranger_nkey.seed_file)
    )
    missing = await _refused(_url("tls", tls_nkey_server, tls_ca=pki.ca))
    for problem in (wrong, missing):
        assert "authorization violation" in problem.lower()


async def test_a_server_that_verifies_clients_takes_the_nodes_certificate(
    mutual_tls_server: NatsProcess, pki: Pki
) -> None:
    await _stores_and_reads_back(
        _url(
            "tls",
            mutual_tls_server,
            tls_ca=pki.ca,
            tls_cert=pki.client_cert,
            tls_key=pki.client_key,
        )
    )
    # Without a client certificate the server ends the handshake.
    problem = await _refused(_url("tls", mutual_tls_server, tls_ca=pki.ca))
    assert f"cannot connect to tls://127.0.0.1:{mutual_tls_server.port}" in problem
    assert "bad certificate" in problem.lower()


async def test_tls_asked_of_a_plain_text_server_is_refused_before_the_token_is_sent(
    token_server: NatsProcess,
) -> None:
    problem = await _refused(_url("tls", token_server, userinfo=f"{TOKEN}@"))
    assert problem == (
        f"jetstream: cannot connect to tls://127.0.0.1:{token_server.port}: TLS was asked"
        " for (tls:// or a tls_ option) and the server does not offer it"
    )
    assert TOKEN not in problem


async def test_a_reconnect_to_a_server_without_tls_gives_the_connection_up(
    pki: Pki, user_nkey: Nkey
) -> None:
    auth = f'authorization {{ users: [ {{ nkey: "{user_nkey.public_key}" }} ] }}\n'
    for server in _own_server(_tls_block(pki, verify=False) + auth):
        store = JetStreamStore(_url("tls", server, tls_ca=pki.ca, nkey=user_nkey.seed_file))
        await store.open()
        try:
            await store.append([message("secure/t")])
            server.stop()
            server.config = auth  # the same server and sign-in, without TLS
            server.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the reconnect is refused
                try:
                    store.connection()
                except StoreError:
                    break
                await asyncio.sleep(0.1)
            with pytest.raises(StoreError, match="TLS was asked for"):
                await store.append([message("secure/t")])
            with pytest.raises(StoreError, match="TLS was asked for"):
                await store.positions()
        finally:
            await store.close()


async def test_a_creds_file_signs_in_and_one_of_an_unknown_account_is_refused(
    decentralized_server: NatsProcess, decentralized: Decentralized, tmp_path: Path
) -> None:
    good = decentralized.creds(
        tmp_path, "node", signer=decentralized.account, issuer=decentralized.account_public
    )
    await _stores_and_reads_back(_url("nats", decentralized_server, creds=good))
    stranger = decentralized.creds(
        tmp_path,
        "stranger",
        signer=decentralized.other_account,
        issuer=decentralized.other_account_public,
    )
    problem = await _refused(_url("nats", decentralized_server, creds=stranger))
    assert "authorization violation" in problem.lower()


def test_nkey_and_creds_do_not_go_together(user_nkey: Nkey, tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("")
    with pytest.raises(ValueError, match="nkey or creds, not both"):
        parse_url(f"nats://h?nkey={user_nkey.seed_file}&creds={creds}")


async def test_a_token_signs_in_and_a_wrong_one_is_refused(token_server: NatsProcess) -> None:
    await _stores_and_reads_back(_url("nats", token_server, userinfo=f"{TOKEN}@"))
    problem = await _refused(_url("nats", token_server, userinfo="not-the-token@"))
    assert "authorization violation" in problem.lower()
    assert "not-the-token" not in problem


async def test_a_node_serves_on_a_tls_and_nkey_store(
    tls_nkey_server: NatsProcess, pki: Pki, user_nkey: Nkey, tmp_path: Path
) -> None:
    url = _url("tls", tls_nkey_server, tls_ca=pki.ca, nkey=user_nkey.seed_file)
    make_superuser(tmp_path / "accounts", url)
    node = ServerProcess(tmp_path / "node", db_url=url).start()
    try:
        auth = await sign_in(node.url, "_superusers", SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
        subscriber = await WsClient.connect(node.ws_url)
        publisher = await WsClient.connect(node.ws_url, token=auth["token"])
        try:
            await subscriber.subscribe("secure/node")
            ack = await publisher.publish("secure/node", {"over": "tls"})
            received = await subscriber.next_message()
            assert received["data"] == {"over": "tls"}
            assert received["id"] == ack["id"]
        finally:
            await subscriber.close()
            await publisher.close()
    finally:
        node.stop()
